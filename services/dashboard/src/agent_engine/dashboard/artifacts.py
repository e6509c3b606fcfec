"""What the dashboard shows of a task's artifacts, and how it hands one out. Pure: no I/O, no HTML.

A task's artifacts are the references its events carry (contracts.artifacts.references), found in the
history the task page reads anyway. Only those ids may be opened through the task's page: the dashboard's
credential could read any tenant's bucket, so the page, not the credential, keeps a viewer to the artifacts
of the task they look at (docs/observability.md, "Artifacts in the dashboard").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from agent_engine.contracts.artifacts import JSON, locator, references

PREVIEW_BYTES = 64 * 1024
"""A text artifact's page shows this much of it (artifacts run to 64 MiB); the download has it all."""
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ArtifactRow:
    artifact: str
    """Its locator (contracts.artifacts.locator): the content id, or, for an output the output gate checked, its
    dispatch's own copy's longer id; what the page's links carry and the store reads."""
    node: str
    name: str
    size: int
    media_type: str


def listed(history: list[dict[str, Any]]) -> list[ArtifactRow]:
    """Each artifact a task's events refer to, once, with the node of the first event that carries it."""
    rows: dict[str, ArtifactRow] = {}
    for event in history:
        data = event.get("data") or {}
        for ref in references(data):
            if locator(ref) not in rows:
                rows[locator(ref)] = ArtifactRow(locator(ref), _node_of(data), ref.name, ref.size, ref.media_type)
    return list(rows.values())


def _node_of(data: dict[str, Any]) -> str:
    """The node an event is about: its own `node`, or for the router's record of an input, the input's."""
    node = data.get("node")
    inner = data.get("input")
    if node is None and isinstance(inner, dict):
        node = (inner.get("data") or {}).get("node")
    return node if isinstance(node, str) else ""


def find(rows: list[ArtifactRow], artifact: str) -> ArtifactRow | None:
    return next((row for row in rows if row.artifact == artifact), None)


def is_text(media_type: str) -> bool:
    """Shown on the page (escaped) rather than only downloaded: text, and JSON (what a structured output is)."""
    kind = media_type.split(";", 1)[0].strip().lower()
    return kind.startswith("text/") or kind == JSON


def preview(content: bytes, limit: int = PREVIEW_BYTES) -> tuple[str, bool]:
    """The start of a text artifact as text (bytes that are no UTF-8 replaced), and whether it was cut."""
    return content[:limit].decode(errors="replace"), len(content) > limit


def filename(name: str) -> str:
    """A file name for the download: the artifact's label with anything but letters, digits, '.', '_' and '-'
    replaced (a label may be a tool's path, with '/' or quotes in it), never empty, never hidden."""
    safe = _SAFE_NAME.sub("_", name.rsplit("/", 1)[-1]).strip("._")[:100]
    return safe or "artifact"


def disposition(name: str) -> str:
    """A Content-Disposition that always downloads (never renders in our origin) under a harmless name."""
    return f"attachment; filename=\"{filename(name)}\"; filename*=UTF-8''{quote(filename(name))}"
