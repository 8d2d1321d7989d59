"""Reading, validating and atomically writing volumes, label tables and run files."""
