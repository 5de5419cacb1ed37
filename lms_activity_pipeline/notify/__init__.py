"""Mentor notifications: the outbox worker behind ``notify_mentors_job`` (no Dagster imports)."""
