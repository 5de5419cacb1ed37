"""The LMS side: reference schema, source profiles, extraction queries and the demo LMS."""
