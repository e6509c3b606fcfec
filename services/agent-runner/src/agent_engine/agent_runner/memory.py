"""The memory section of an agent's prompt: the notes of the layers its node `sees`, newest first.

Bounded, because every note of a project or tenant could otherwise end up in every prompt: at most
MAX_NOTES notes and MAX_BYTES of text, saying how many were left out.
"""

from __future__ import annotations

import asyncio

from agent_engine.agent_runner.service import Recall
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import NodeDispatched
from agent_engine.memory import MemoryItem, MemoryScope, MemoryStore

HEADING = "Memory (saved notes, newest first):"
MAX_NOTES = 50
MAX_BYTES = 16 * 1024
"""Of the section as a whole (UTF-8); one note is at most 8 KiB, so the newest always fits."""
TRAILER_BYTES = 128
"""Kept free for the line saying how many notes were left out."""


def recall_from(store: MemoryStore, timeout_s: float = 10.0) -> Recall:
    """A Recall reading `store`: the task layer is the dispatch's task, the tenant the envelope's, the
    project the one the router put in the node's MemoryView. Raises MemoryUnavailable when PostgreSQL
    is down (no connection within `timeout_s`): a prompt silently missing its memory would be a different
    prompt, so the runner answers with a retryable error instead."""

    async def recall(cause: Envelope, dispatch: NodeDispatched) -> str:
        view = dispatch.context.memory
        if view is None or not view.layers:
            return ""
        scopes = [MemoryScope.of(layer, task_id=cause.task_id, project=view.project) for layer in view.layers]
        items = await asyncio.to_thread(store.recall, cause.tenant, scopes, None, MAX_NOTES, timeout_s)
        total = len(items)
        if total == MAX_NOTES:
            total = await asyncio.to_thread(store.count, cause.tenant, scopes, None, timeout_s)
        return section(items, total)

    return recall


def section(items: list[MemoryItem], total: int) -> str:
    """The heading and one line per note, `[layer] key: text` (a note's further lines indented), newest
    first, until MAX_NOTES or MAX_BYTES; then how many of `total` were left out."""
    if not items:
        return ""
    lines = [HEADING]
    size = len(HEADING.encode())
    for item in items[:MAX_NOTES]:
        line = f"[{item.layer}] {item.key}: " + item.text.replace("\n", "\n  ")
        if size + 1 + len(line.encode()) > MAX_BYTES - TRAILER_BYTES:
            break  # newest first: an older note never takes the place of a newer one that did not fit
        lines.append(line)
        size += 1 + len(line.encode())
    left_out = max(total, len(items)) - (len(lines) - 1)
    if left_out:
        lines.append(f"({left_out} older saved note{'s' if left_out != 1 else ''} left out: a prompt shows at most "
                     f"{MAX_NOTES} notes and {MAX_BYTES // 1024} KiB of memory)")
    return "\n".join(lines)
