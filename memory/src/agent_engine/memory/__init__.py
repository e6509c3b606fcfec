"""Memory layers (task, project, global) in PostgreSQL: a library the two runners share, not a service."""

from agent_engine.memory.store import (
    MemoryItem,
    MemoryLimits,
    MemoryRefused,
    MemoryScope,
    MemoryStore,
    MemoryUnavailable,
)

__all__ = ["MemoryItem", "MemoryLimits", "MemoryRefused", "MemoryScope", "MemoryStore", "MemoryUnavailable"]
