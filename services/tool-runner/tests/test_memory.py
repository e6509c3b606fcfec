"""memory_save and memory_search against a real PostgreSQL: layers, tenants, retention, bad calls."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import psycopg
import pytest

from agent_engine.contracts.builtins import MEMORY_LAYERS
from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import DispatchedTool, NodeDispatched
from agent_engine.contracts.manifest import MemoryLayer
from agent_engine.memory import MemoryLimits, MemoryStore
from agent_engine.runtime.embedded import free_port
from agent_engine.tool_runner.config import ToolConfig
from agent_engine.tool_runner.service import ToolRunner
from agent_engine.tool_runner.tools import REGISTRY, Context, Scope, ToolError

pytestmark = pytest.mark.integration

Stores = Callable[..., MemoryStore]


@pytest.fixture
def tenant(postgres_url: str) -> Iterator[str]:
    """A fresh tenant per test (the database may be shared); its notes are deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ae_memory WHERE tenant LIKE %s", (f"{name}%",))


@pytest.fixture
def stores(postgres_url: str) -> Iterator[Stores]:
    """MemoryStore(postgres_url, MemoryLimits(**limits)), each closed after the test."""
    opened: list[MemoryStore] = []

    def open_store(url: str = postgres_url, **limits: Any) -> MemoryStore:
        opened.append(MemoryStore(url, MemoryLimits(**limits)))
        return opened[-1]

    yield open_store
    for store in opened:
        store.close()


def ctx(store: MemoryStore | None, tenant: str, task: str = "task-1", project: str | None = "research",
        node: str = "notes", time_limit_s: float = 30.0) -> Context:
    return Context(ToolConfig(workspace=Path(".").resolve(), memory=store), time_limit_s,
                   scope=Scope(tenant, task, node, project))


def call(name: str, args: dict[str, Any], context: Context) -> dict[str, Any]:
    """As the tool-runner does: arguments checked, run, result checked."""
    tool = REGISTRY[name]
    tool.check(args)
    output = tool.run(args, context)
    tool.check_result(output)
    return output


def save(context: Context, layer: str, key: str, text: str) -> dict[str, Any]:
    return call("memory_save", {"layer": layer, "key": key, "text": text}, context)


def keys(context: Context, **args: Any) -> list[tuple[str, str]]:
    return [(item["layer"], item["key"]) for item in call("memory_search", args, context)["items"]]


def age(postgres_url: str, tenant: str, key: str, days: float) -> None:
    """Make a note look as if it was last saved `days` ago."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE ae_memory SET updated_at = now() - %s, created_at = now() - %s "
                     "WHERE tenant = %s AND key = %s", (timedelta(days=days), timedelta(days=days), tenant, key))


def stored_keys(postgres_url: str, tenant: str) -> set[str]:
    with psycopg.connect(postgres_url) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM ae_memory WHERE tenant = %s", (tenant,))}


def test_a_saved_note_comes_back_from_search(stores: Stores, tenant: str) -> None:
    c = ctx(stores(), tenant)
    assert save(c, "project", "style", "Use British spelling.") == {
        "layer": "project", "key": "style", "saved": True, "bytes": 21, "replaced": False, "evicted": 0}
    found = call("memory_search", {}, c)
    assert found["total"] == 1
    [item] = found["items"]
    assert (item["layer"], item["key"], item["text"]) == ("project", "style", "Use British spelling.")
    assert abs(datetime.fromisoformat(item["updated_at"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_saving_the_same_note_twice_is_saving_it_once(stores: Stores, tenant: str) -> None:
    c = ctx(stores(), tenant)
    first = save(c, "task", "plan", "Outline, then draft.")
    again = save(c, "task", "plan", "Outline, then draft.")
    assert first == again  # same answer on a retry: nothing replaced, nothing evicted
    assert call("memory_search", {}, c)["total"] == 1
    changed = save(c, "task", "plan", "Draft directly.")
    assert changed["replaced"] is True
    assert [i["text"] for i in call("memory_search", {}, c)["items"]] == ["Draft directly."]


def test_each_layer_is_seen_by_the_calls_it_is_scoped_to(stores: Stores, tenant: str) -> None:
    store = stores()
    here = ctx(store, tenant, task="task-1", project="research")
    save(here, "task", "t", "this task only")
    save(here, "project", "p", "every task of project research")
    save(here, "global", "g", "every task of the tenant")
    same_project = ctx(store, tenant, task="task-2", project="research")
    other_project = ctx(store, tenant, task="task-3", project="marketing")
    assert sorted(keys(here)) == [("global", "g"), ("project", "p"), ("task", "t")]
    assert sorted(keys(same_project)) == [("global", "g"), ("project", "p")]
    assert keys(other_project) == [("global", "g")]
    assert keys(here, layers=["task"]) == [("task", "t")]
    assert sorted(keys(here, layers=["project", "global"])) == [("global", "g"), ("project", "p")]


def test_one_tenant_never_sees_or_changes_another_tenants_notes(stores: Stores, tenant: str) -> None:
    store = stores()
    mine, theirs = ctx(store, tenant), ctx(store, tenant + "-other")  # same task id and project
    for layer in MEMORY_LAYERS:
        save(mine, layer, "secret", f"{layer} note of {tenant}")
    assert keys(theirs) == []
    save(theirs, "global", "secret", "the other tenant's own")
    assert {i["text"] for i in call("memory_search", {}, mine)["items"]} == {
        f"{layer} note of {tenant}" for layer in MEMORY_LAYERS}
    assert [i["text"] for i in call("memory_search", {}, theirs)["items"]] == ["the other tenant's own"]


def test_search_is_newest_first_and_filters_case_insensitively(stores: Stores, tenant: str) -> None:
    c = ctx(stores(), tenant)
    save(c, "project", "db", "PostgreSQL 16 in production")
    save(c, "task", "Postgres-tuning", "raise work_mem")
    save(c, "global", "percent", "100% of 5_000 rows")
    save(c, "task", "other", "unrelated")
    assert keys(c) == [("task", "other"), ("global", "percent"), ("task", "Postgres-tuning"), ("project", "db")]
    assert keys(c, query="postgres") == [("task", "Postgres-tuning"), ("project", "db")]  # key or text
    assert keys(c, query="0% of 5_") == [("global", "percent")]  # % and _ are plain characters
    assert keys(c, query="POSTGRES", layers=["project"]) == [("project", "db")]
    limited = call("memory_search", {"limit": 2}, c)
    assert [i["key"] for i in limited["items"]] == ["other", "percent"]
    assert limited["total"] == 4


def test_beyond_max_items_the_oldest_notes_of_that_scope_go(stores: Stores, tenant: str) -> None:
    c = ctx(stores(max_items=3), tenant)
    save(c, "task", "kept-apart", "another scope")
    for n in range(1, 4):
        assert save(c, "project", f"n{n}", f"note {n}")["evicted"] == 0
    assert save(c, "project", "n4", "note 4")["evicted"] == 1
    assert keys(c, layers=["project"]) == [("project", "n4"), ("project", "n3"), ("project", "n2")]
    save(c, "project", "n2", "note 2, saved again")  # saving a note again makes it the newest
    save(c, "project", "n5", "note 5")
    assert keys(c, layers=["project"]) == [("project", "n5"), ("project", "n2"), ("project", "n4")]
    assert keys(c, layers=["task"]) == [("task", "kept-apart")]  # the limit is per scope


def test_expired_notes_are_never_returned_and_are_deleted_on_save(stores: Stores, tenant: str,
                                                                   postgres_url: str) -> None:
    c = ctx(stores(max_age_days=7), tenant)
    save(c, "global", "old", "from last month")
    save(c, "global", "recent", "from yesterday")
    age(postgres_url, tenant, "old", days=8)
    age(postgres_url, tenant, "recent", days=1)
    assert keys(c) == [("global", "recent")]
    assert call("memory_search", {"query": "last month"}, c) == {"items": [], "total": 0}
    assert stored_keys(postgres_url, tenant) == {"old", "recent"}  # hidden, not yet deleted
    save(c, "task", "new", "today")
    assert stored_keys(postgres_url, tenant) == {"recent", "new"}


def test_saving_over_an_expired_note_starts_it_afresh(stores: Stores, tenant: str, postgres_url: str) -> None:
    c = ctx(stores(max_age_days=7), tenant)
    save(c, "project", "fact", "old text")
    age(postgres_url, tenant, "fact", days=30)
    assert save(c, "project", "fact", "new text")["replaced"] is False  # nobody could see the old one
    assert [i["text"] for i in call("memory_search", {}, c)["items"]] == ["new text"]


@pytest.mark.parametrize(("args", "message"), [
    ({"layer": "session", "key": "k", "text": "t"}, "layer: 'session' is not one of"),
    ({"layer": "task", "key": "", "text": "t"}, "key: '' should be non-empty"),
    ({"layer": "task", "key": "k", "text": "x" * 8193}, "text: 'xxx"),
    ({"layer": "task", "key": "k"}, "'text' is a required property"),
    ({"layer": "task", "key": "k", "text": "t", "tenant": "other"}, "Additional properties are not allowed"),
])
def test_save_arguments_outside_the_schema_are_refused(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError, match=message):
        REGISTRY["memory_save"].check(args)


@pytest.mark.parametrize("args", [{"layers": []}, {"layers": ["task", "task"]}, {"limit": 0}, {"limit": 101},
                                  {"layers": ["tasks"]}, {"query": 3}])
def test_search_arguments_outside_the_schema_are_refused(args: dict[str, Any]) -> None:
    with pytest.raises(ToolError, match="invalid arguments for tool 'memory_search'"):
        REGISTRY["memory_search"].check(args)


def test_a_note_over_8_kib_is_refused_naming_the_limit(stores: Stores, tenant: str) -> None:
    c = ctx(stores(), tenant)
    with pytest.raises(ToolError, match="9000 bytes .UTF-8., over the 8192-byte limit per note") as raised:
        save(c, "task", "euros", "€" * 3000)  # 3000 characters pass the schema; 9000 bytes do not
    assert not raised.value.retryable
    with pytest.raises(ToolError, match="NUL character"):
        save(c, "task", "nul", "a\x00b")
    assert keys(c) == []


def test_the_project_layer_without_a_project_is_refused_naming_it(stores: Stores, tenant: str) -> None:
    c = ctx(stores(), tenant, project=None)
    with pytest.raises(ToolError, match="memory layer 'project' needs the workflow's project"):
        save(c, "project", "k", "t")
    with pytest.raises(ToolError, match="memory layer 'project' needs the workflow's project"):
        call("memory_search", {}, c)  # all layers by default
    save(c, "task", "k", "t")
    assert keys(c, layers=["task", "global"]) == [("task", "k")]


def test_without_postgres_the_memory_tools_refuse_clearly(tenant: str) -> None:
    for name, args in (("memory_save", {"layer": "task", "key": "k", "text": "t"}), ("memory_search", {})):
        with pytest.raises(ToolError, match="memory needs AE_POSTGRES_URL") as raised:
            call(name, args, ctx(None, tenant))
        assert not raised.value.retryable


def test_an_unreachable_postgres_is_a_retryable_error(stores: Stores, tenant: str) -> None:
    store = stores(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    with pytest.raises(ToolError, match="no PostgreSQL connection within 1s") as raised:
        save(ctx(store, tenant, time_limit_s=1.0), "task", "k", "t")
    assert raised.value.retryable


def test_the_catalogue_layers_are_the_manifests() -> None:
    assert MEMORY_LAYERS == list(get_args(MemoryLayer))


def dispatch(tenant: str, task: str, builtin: str, args: dict[str, Any],
             project: str | None) -> tuple[Envelope, NodeDispatched]:
    now = datetime.now(UTC)
    node = f"{builtin}_node"
    d = NodeDispatched(dispatch_id=f"disp-{task}-{node}", node=node, kind="tool", attempt=1,
                       deadline=now + timedelta(seconds=30),
                       tool=DispatchedTool(name=builtin, builtin=builtin, args=args, project=project))
    cause = Envelope(id=f"evt-{task}-{node}", source="agent-engine/router", type=NodeDispatched.TYPE, time=now,
                     tenant=tenant, task_id=task, correlation_id="corr-1",
                     data=d.model_dump(mode="json", exclude_none=True))
    return cause, d


async def test_the_tool_runner_scopes_memory_to_the_dispatchs_tenant_task_and_project(
        stores: Stores, tenant: str, tmp_path: Path) -> None:
    runner = ToolRunner(ToolConfig(workspace=tmp_path, memory=stores()))
    [saved] = await runner.handle(*dispatch(tenant, "task-a", "memory_save",
                                            {"layer": "project", "key": "tone", "text": "formal"}, "research"))
    assert saved.type == "node.completed", saved.data
    assert saved.data["output"]["saved"] is True
    [found] = await runner.handle(*dispatch(tenant, "task-b", "memory_search", {}, "research"))
    assert [(i["key"], i["text"]) for i in found.data["output"]["items"]] == [("tone", "formal")]
    [elsewhere] = await runner.handle(*dispatch(tenant + "-b", "task-b", "memory_search", {}, "research"))
    assert elsewhere.data["output"]["items"] == []
    [refused] = await runner.handle(*dispatch(tenant, "task-c", "memory_save",
                                              {"layer": "project", "key": "k", "text": "t"}, None))
    assert refused.type == "node.errored"
    assert "needs the workflow's project" in refused.data["error"]
    assert refused.data["retryable"] is False
