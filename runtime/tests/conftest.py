from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "examples" / "research-review"


@pytest.fixture
def workflow_dir(tmp_path: Path) -> Path:
    """A private copy of examples/research-review that a test may break."""
    target = tmp_path / "research-review"
    shutil.copytree(EXAMPLE, target)
    return target
