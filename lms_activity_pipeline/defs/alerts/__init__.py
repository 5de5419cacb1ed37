"""Dagster definitions: operational alerts."""
