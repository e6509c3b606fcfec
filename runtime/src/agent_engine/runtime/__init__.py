"""Shared service kit (a library, never a service): settings, NATS bus, workflow registry and manifest loader,
memory store; embedded dev servers with the `dev` extra."""
