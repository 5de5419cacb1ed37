"""The event store: table definitions (single source of truth), migrations and bulk loads."""
