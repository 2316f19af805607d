"""twinfleet."""
