"""Dagster definitions: notify."""
