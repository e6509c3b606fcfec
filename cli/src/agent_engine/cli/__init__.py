"""agentctl: run, inspect and operate Agent Engine."""
