"""Dagster definitions: monitoring."""
