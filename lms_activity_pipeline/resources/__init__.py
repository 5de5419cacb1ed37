"""Dagster resources for the outside world: the LMS, the warehouse and Zulip."""
