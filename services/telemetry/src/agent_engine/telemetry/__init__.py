"""Telemetry: read-only projections of the event stream (the token and cost ledger)."""
