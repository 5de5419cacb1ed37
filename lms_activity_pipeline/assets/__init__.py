"""Thin Dagster assets composing the domain logic and the resources."""
