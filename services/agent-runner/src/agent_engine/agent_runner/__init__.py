"""Agent runner: stateless; turns a node dispatch into one validated LLM output."""
