"""Shared service kit (a library, never a service): settings, NATS bus, embedded dev servers."""
