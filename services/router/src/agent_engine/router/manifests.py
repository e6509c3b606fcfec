"""One parsed manifest for every task that pinned the same one.

A task's state holds the manifest its `task.started` (or `task.queued`) record pinned. Parsed per task, every task
in flight or in the router's cache held its own copy: about 22 KiB for the bench's five-node workflow, the largest
part of a task's state. Tasks that pinned equal manifests now share one object. A manifest is never changed in
place (a change is a `model_copy`), so sharing it changes nothing a fold or `decide` sees.

A state read from a snapshot brings its own copy, unpickled; `adopt` swaps it for the kept one when they are equal.

Kept per workflow and revision, and compared by content: a revision's tasks can pin different manifests (a field
the router sets for new tasks only, a fork's). A different one replaces the kept one. At most LIMIT are kept.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

from agent_engine.contracts.manifest import WorkflowManifest

LIMIT = 256
"""Workflow revisions whose manifest is kept; past it the longest kept goes."""

_kept: dict[tuple[str, str], tuple[dict[str, Any], WorkflowManifest]] = {}
_keeping = threading.Lock()
"""Folds run on the event loop and in the store's threads (a load); only a miss changes what is kept."""


def shared(raw: Mapping[str, Any], workflow: str, revision: str) -> WorkflowManifest:
    """The manifest `raw` (a record's `workflow_manifest`, as JSON) parses to, the same object for equal ones."""
    key = (workflow, revision)
    kept = _kept.get(key)
    if kept is not None and kept[0] == raw:
        return kept[1]
    manifest = WorkflowManifest.model_validate(raw)
    _keep(key, copy.deepcopy(dict(raw)), manifest)  # a copy: the record's own dict is not ours to keep
    return manifest


def adopt(manifest: WorkflowManifest, workflow: str, revision: str) -> WorkflowManifest:
    """The kept manifest when it equals `manifest` (parsed elsewhere: a snapshot's), else `manifest`, kept from now
    on for the tasks that pin what it is."""
    key = (workflow, revision)
    kept = _kept.get(key)
    if kept is not None and kept[1] == manifest:
        return kept[1]
    _keep(key, manifest.model_dump(mode="json", by_alias=True, exclude_none=True), manifest)  # as records write it
    return manifest


def _keep(key: tuple[str, str], raw: dict[str, Any], manifest: WorkflowManifest) -> None:
    with _keeping:
        if key not in _kept and len(_kept) >= LIMIT:
            del _kept[next(iter(_kept))]
        _kept[key] = (raw, manifest)
