"""Files a tool wrote to the workspace, stored as artifacts after the run (docs/observability.md, "Artifacts").

The file as it is once the tool is done (an append stores the whole file), by path as the reference's name.
Storing is a record of what the tool did, never a condition of it: the tool's effect has happened, so a file
that cannot be stored (too large, gone, the store unreachable) is logged and left out, and the run's result
stands.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from pathlib import Path

from agent_engine.contracts.artifacts import BINARY, TEXT, ArtifactRef
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.tool_runner.tools.files import confined

log = logging.getLogger("tool-runner")


def media_type(path: str, content: bytes) -> str:
    guessed, _ = mimetypes.guess_type(path)
    if guessed and not guessed.startswith("text/"):
        return guessed
    try:
        content.decode()
    except UnicodeDecodeError:
        return guessed or BINARY
    return TEXT


async def stored(store: ArtifactStore, tenant: str, workspace: Path, written: list[str]) -> list[ArtifactRef]:
    refs: list[ArtifactRef] = []
    for path in dict.fromkeys(written):  # once each, in the order first written
        try:
            content = await asyncio.to_thread(confined(workspace, path).read_bytes)
            refs.append(await store.put(tenant, content, media_type(path, content), path))
        except Exception as exc:  # noqa: BLE001  the tool's effect stands whatever happens here
            log.warning("workspace file %s written by a tool was not stored as an artifact: %s: %s", path,
                        type(exc).__name__, exc)
    return refs
