"""The integration service (``lms-activity serve``): REST API, signed LMS webhooks, notification dashboard.

A FastAPI app over the same warehouse code as the CLI and Dagster (no Dagster imported here):
:func:`~lms_activity_pipeline.service.app.create_app`.
"""
