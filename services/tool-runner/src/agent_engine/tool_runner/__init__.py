"""Tool runner: stateless; runs tool nodes from a registry of built-in tools."""
