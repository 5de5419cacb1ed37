"""The Dagster definitions, at module level, by concern; loaded by ``definitions.py``.

Thin: each asset, op and sensor calls a service of the library packages (``ingest``, ``notify``,
``polling``) and turns its report into logs and UI metadata.
"""
