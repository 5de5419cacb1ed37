"""Live monitoring: change detection shared by the sensor and the CLI."""
