"""Pure domain logic (no Dagster, no database): event types, classification, messages."""
