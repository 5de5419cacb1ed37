"""Dagster ops (the notification job's ``send_mentor_notifications``)."""
