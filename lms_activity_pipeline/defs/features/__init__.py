"""Dagster definitions: features."""
