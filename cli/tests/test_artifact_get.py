"""`agentctl artifact get -o FILE` writes the bytes as they are read and puts the file in place only once all
of them are read and checked: a read that fails leaves no partial file, and an existing FILE as it was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent_engine.cli.commands.artifacts import to_file
from agent_engine.runtime.artifacts import ArtifactError


async def chunks(*parts: bytes, fail: bool = False) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    if fail:
        raise ArtifactError("artifact sha256:… of tenant 'acme' is damaged: its bytes hash to sha256:…")


def test_the_file_holds_every_chunk_once_all_are_read(tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    assert asyncio.run(to_file(chunks(b"one ", b"two ", b"three"), target)) == 13
    assert target.read_bytes() == b"one two three"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]  # no part file left over


def test_a_failed_read_leaves_no_partial_file_and_an_existing_one_as_it_was(tmp_path: Path) -> None:
    fresh, kept = tmp_path / "fresh.txt", tmp_path / "kept.txt"
    kept.write_bytes(b"what was there")
    for target in (fresh, kept):
        with pytest.raises(ArtifactError, match="is damaged"):
            asyncio.run(to_file(chunks(b"half of it", fail=True), target))
    assert not fresh.exists() and kept.read_bytes() == b"what was there"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]
