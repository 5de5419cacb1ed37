"""Students at risk: asset ``student_risk``, its check, job and schedule, and the digest's tables."""
