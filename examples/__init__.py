"""Programs that use catbird_db as an application would: `python -m examples.demo`."""
