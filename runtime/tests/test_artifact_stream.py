"""Reading an artifact chunk by chunk (`checked`, pure): the bytes are passed on as they come, and damaged
content never arrives whole, as its last chunk is held back until every byte is checked against the id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agent_engine.contracts.artifacts import artifact_id
from agent_engine.runtime.artifacts import ArtifactError, checked

CHUNKS = [b"a" * 10, b"b" * 10, b"c" * 3]
CONTENT = b"".join(CHUNKS)


async def given(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def passed_on(chunks: list[bytes], content_id: str, size: int) -> tuple[list[bytes], str | None]:
    """What a reader received, and the error that ended it (None when none)."""
    got: list[bytes] = []

    async def read() -> None:
        async for chunk in checked(given(chunks), content_id, size, "artifact x"):
            got.append(chunk)

    try:
        asyncio.run(read())
    except ArtifactError as exc:
        return got, str(exc)
    return got, None


def test_sound_content_is_passed_on_chunk_by_chunk() -> None:
    assert passed_on(CHUNKS, artifact_id(CONTENT), len(CONTENT)) == (CHUNKS, None)
    assert passed_on([], artifact_id(b""), 0) == ([], None)


def test_damaged_content_never_arrives_whole() -> None:
    damaged = [CHUNKS[0], b"B" * 10, CHUNKS[2]]
    got, error = passed_on(damaged, artifact_id(CONTENT), len(CONTENT))
    assert got == damaged[:2] and error == f"artifact x is damaged: its bytes hash to {artifact_id(b''.join(damaged))}"


def test_content_shorter_than_stored_says_how_much_is_missing() -> None:
    got, error = passed_on(CHUNKS[:2], artifact_id(CONTENT), len(CONTENT))
    assert got == CHUNKS[:1] and error is not None and "(20 bytes where 23 were stored)" in error


def test_content_of_one_chunk_arrives_only_once_checked() -> None:
    got, error = passed_on([b"bad"], artifact_id(b"good"), 3)
    assert got == [] and error is not None and "is damaged" in error
