"""The deployment tests share one rendering of each overlay per session (manifests.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from manifests import KUBERNETES, OVERLAYS, Obj, render  # deploy/tests is not a package: found through the path above


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    """Every overlay's objects, by overlay name."""
    return {name: render(KUBERNETES / "overlays" / name) for name in OVERLAYS}
