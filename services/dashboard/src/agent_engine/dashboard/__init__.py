"""Agent Engine dashboard: a web view of the engine, read over the bus (docs/observability.md)."""
