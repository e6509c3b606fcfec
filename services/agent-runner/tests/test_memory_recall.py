"""The memory section of an agent's prompt, read from a real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from agent_engine.agent_runner.memory import HEADING, MAX_BYTES, MAX_NOTES, recall_from
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import MemoryView, NodeDispatched
from agent_engine.contracts.manifest import MemoryLayer
from agent_engine.memory import MemoryScope, MemoryStore, MemoryUnavailable
from agent_engine.runtime.embedded import free_port

pytestmark = pytest.mark.integration

Dispatch = Callable[..., tuple[Envelope, NodeDispatched]]
TASK = MemoryScope("task", "task-1")  # the agent_dispatch fixture's task
PROJECT = MemoryScope("project", "research")
GLOBAL = MemoryScope("global", "")


@pytest.fixture
def store(postgres_url: str) -> Iterator[MemoryStore]:
    opened = MemoryStore(postgres_url)
    yield opened
    opened.close()


@pytest.fixture
def tenant(postgres_url: str) -> Iterator[str]:
    name = f"ar-{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ae_memory WHERE tenant = %s", (name,))


def seeing(agent_dispatch: Dispatch, tenant: str, layers: list[MemoryLayer] | None,
           project: str = "research") -> tuple[Envelope, NodeDispatched]:
    cause, dispatch = agent_dispatch()
    if layers is not None:
        dispatch.context.memory = MemoryView(layers=layers, project=project)
    return cause.model_copy(update={"tenant": tenant}), dispatch


async def test_the_section_lists_the_layers_the_node_sees_newest_first(
        store: MemoryStore, tenant: str, agent_dispatch: Dispatch) -> None:
    store.save(tenant, PROJECT, "style", "Use British spelling.")
    store.save(tenant, GLOBAL, "owner", "The platform team.")
    store.save(tenant, TASK, "plan", "Compare throughput first.\nThen latency.")
    store.save(tenant, MemoryScope("task", "task-2"), "elsewhere", "another task's note")
    store.save(tenant, MemoryScope("project", "marketing"), "elsewhere", "another project's note")
    store.save(tenant + "-x", PROJECT, "elsewhere", "another tenant's note")
    section = await recall_from(store)(*seeing(agent_dispatch, tenant, ["task", "project"]))
    assert section == (f"{HEADING}\n"
                       "[task] plan: Compare throughput first.\n  Then latency.\n"
                       "[project] style: Use British spelling.")


async def test_no_memory_view_or_nothing_saved_is_an_empty_section(
        store: MemoryStore, tenant: str, agent_dispatch: Dispatch) -> None:
    store.save(tenant, GLOBAL, "owner", "The platform team.")
    recall = recall_from(store)
    assert await recall(*seeing(agent_dispatch, tenant, None)) == ""
    assert await recall(*seeing(agent_dispatch, tenant, [])) == ""
    assert await recall(*seeing(agent_dispatch, tenant, ["task", "project"])) == ""
    assert await recall(*seeing(agent_dispatch, tenant, ["global"])) == f"{HEADING}\n[global] owner: The platform team."


async def test_the_project_comes_from_the_memory_view(store: MemoryStore, tenant: str,
                                                      agent_dispatch: Dispatch) -> None:
    store.save(tenant, MemoryScope("project", "marketing"), "tone", "playful")
    recall = recall_from(store)
    assert await recall(*seeing(agent_dispatch, tenant, ["project"])) == ""
    assert "[project] tone: playful" in await recall(*seeing(agent_dispatch, tenant, ["project"], "marketing"))


async def test_at_most_50_notes_and_the_rest_counted(store: MemoryStore, tenant: str,
                                                     agent_dispatch: Dispatch) -> None:
    for n in range(MAX_NOTES + 10):
        store.save(tenant, PROJECT, f"n{n:02d}", f"note {n}")
    lines = (await recall_from(store)(*seeing(agent_dispatch, tenant, ["project"]))).splitlines()
    assert lines[1] == "[project] n59: note 59"
    assert len(lines) == 1 + MAX_NOTES + 1
    assert lines[-2] == "[project] n10: note 10"
    assert lines[-1] == "(10 older saved notes left out: a prompt shows at most 50 notes and 16 KiB of memory)"


async def test_at_most_16_kib_newest_first(store: MemoryStore, tenant: str, agent_dispatch: Dispatch) -> None:
    for n in range(3):
        store.save(tenant, TASK, f"big{n}", str(n) * 8000)
    store.save(tenant, TASK, "small", "tiny")
    section = await recall_from(store)(*seeing(agent_dispatch, tenant, ["task"]))
    assert len(section.encode()) <= MAX_BYTES
    keys = [line.split(":")[0] for line in section.splitlines()[1:-1]]
    assert keys == ["[task] small", "[task] big2", "[task] big1"]  # big0 would overflow; nothing older replaces it
    assert section.endswith("(1 older saved note left out: a prompt shows at most 50 notes and 16 KiB of memory)")


async def test_postgres_down_is_an_error_not_a_prompt_without_memory(tenant: str, agent_dispatch: Dispatch) -> None:
    store = MemoryStore(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    try:
        recall = recall_from(store, timeout_s=0.5)
        with pytest.raises(MemoryUnavailable, match="no PostgreSQL connection within 0.5s"):
            await recall(*seeing(agent_dispatch, tenant, ["global"]))
    finally:
        store.close()
