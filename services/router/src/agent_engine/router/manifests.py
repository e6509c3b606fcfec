"""One parsed manifest for every task that pinned the same one.

A task's state holds the manifest its `task.started` (or `task.queued`) record pinned. Parsed per task, every task
in flight or in the router's cache held its own copy: about 22 KiB for the bench's five-node workflow, the largest
part of a task's state. Tasks that pinned equal manifests now share one object. A manifest is never changed in
place (a change is a `model_copy`), so sharing it changes nothing a fold or `decide` sees.

A state read from a snapshot brings its own copy, unpickled; `adopt` swaps it for the kept one when they are equal.

Kept per workflow and revision, and compared by content, as JSON text: a revision's tasks can pin different
manifests (a field the router sets for new tasks only, an MCP tool's interface as the tool-runner described it then).
Text, not the parsed dicts, because `1 == 1.0 == True` in Python where JSON tells them apart, and a task must fold to
the manifest its own record holds. A different one replaces the kept one. At most LIMIT are kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any

from agent_engine.contracts.manifest import WorkflowManifest

LIMIT = 256
"""Workflow revisions whose manifest is kept; past it the longest kept goes."""

_kept: dict[tuple[str, str], tuple[str, WorkflowManifest]] = {}
_keeping = threading.Lock()
"""Folds run on the event loop and in the store's threads (a load); only a miss changes what is kept."""


def shared(raw: Mapping[str, Any], workflow: str, revision: str) -> WorkflowManifest:
    """The manifest `raw` (a record's `workflow_manifest`, as JSON) parses to, the same object for equal ones."""
    return _share((workflow, revision), json.dumps(raw), lambda: WorkflowManifest.model_validate(raw))


def adopt(manifest: WorkflowManifest, workflow: str, revision: str) -> WorkflowManifest:
    """The kept manifest when it equals `manifest` (parsed elsewhere: a snapshot's), else `manifest`, kept from now
    on for the tasks that pin what it is."""
    text = json.dumps(manifest.model_dump(mode="json", by_alias=True, exclude_none=True))  # as records write it
    return _share((workflow, revision), text, lambda: manifest)


def _share(key: tuple[str, str], text: str, parse: Callable[[], WorkflowManifest]) -> WorkflowManifest:
    kept = _kept.get(key)
    if kept is not None and kept[0] == text:
        return kept[1]
    manifest = parse()
    _keep(key, text, manifest)
    return manifest


def _keep(key: tuple[str, str], text: str, manifest: WorkflowManifest) -> None:
    with _keeping:
        if key not in _kept and len(_kept) >= LIMIT:
            del _kept[next(iter(_kept))]
        _kept[key] = (text, manifest)
