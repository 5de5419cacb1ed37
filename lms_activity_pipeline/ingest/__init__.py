"""The ingest flow as plain services (no Dagster): stage LMS attempts, classify them into events, compute
features. Each returns a report; the assets in ``defs/`` turn reports into logs and UI metadata."""
