"""memory_save, memory_search: notes kept in PostgreSQL per tenant, in the task, project or global layer.

Whose notes they are comes from the run's scope (the dispatch's tenant, task and project), never from
the arguments, so a model cannot reach another task's, project's or tenant's memory by asking.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent_engine.memory import MemoryRefused, MemoryScope, MemoryStore, MemoryUnavailable
from agent_engine.tool_runner.tools.base import Context, Scope, ToolError, builtin

ALL_LAYERS = ("task", "project", "global")
SEARCH_LIMIT = 20
DB_TIMEOUT_S = 10.0
"""Longest wait for a PostgreSQL connection; the run's own time limit can only shorten it."""


def memory_save(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    store, scope = _store(ctx), _scope(ctx)
    with _errors():
        where = MemoryScope.of(args["layer"], task_id=scope.task_id, project=scope.project)
        saved = store.save(scope.tenant, where, args["key"], args["text"], task_id=scope.task_id, node=scope.node,
                           timeout=_timeout(ctx))
    return {"layer": args["layer"], "key": args["key"], "saved": True, "bytes": saved.bytes,
            "replaced": saved.replaced, "evicted": saved.evicted}


def memory_search(args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    store, scope = _store(ctx), _scope(ctx)
    limit = args.get("limit", SEARCH_LIMIT)
    query = args.get("query") or None
    with _errors():
        scopes = [MemoryScope.of(layer, task_id=scope.task_id, project=scope.project)
                  for layer in args.get("layers", ALL_LAYERS)]
        items = store.recall(scope.tenant, scopes, query, limit, timeout=_timeout(ctx))
        total = len(items) if len(items) < limit else store.count(scope.tenant, scopes, query, timeout=_timeout(ctx))
    return {"items": [{"layer": i.layer, "key": i.key, "text": i.text, "updated_at": i.updated_at.isoformat()}
                      for i in items],
            "total": total}


def _store(ctx: Context) -> MemoryStore:
    if ctx.config.memory is None:
        raise ToolError("memory needs AE_POSTGRES_URL: this tool-runner has no PostgreSQL configured, so "
                        "memory_save and memory_search cannot run")
    return ctx.config.memory


def _scope(ctx: Context) -> Scope:
    if ctx.scope is None:
        raise ToolError("memory tools need to know whose call this is (tenant, task), and this run has no scope")
    return ctx.scope


def _timeout(ctx: Context) -> float:
    return min(DB_TIMEOUT_S, ctx.remaining_s())


@contextmanager
def _errors() -> Iterator[None]:
    """The store's refusals and outages as tool errors: a refusal is final, an outage worth another attempt."""
    try:
        yield
    except MemoryRefused as exc:
        raise ToolError(str(exc)) from None
    except MemoryUnavailable as exc:
        raise ToolError(str(exc), retryable=True) from None


LAYER = {"enum": list(ALL_LAYERS)}
COUNT = {"type": "integer", "minimum": 0}
MEMORY_SAVE = builtin(
    "memory_save", memory_save,
    result_schema={"type": "object", "required": ["layer", "key", "saved", "bytes", "replaced", "evicted"],
                   "properties": {"layer": LAYER, "key": {"type": "string"}, "saved": {"const": True},
                                  "bytes": COUNT, "replaced": {"type": "boolean"}, "evicted": COUNT}},
)
MEMORY_SEARCH = builtin(
    "memory_search", memory_search,
    result_schema={"type": "object", "required": ["items", "total"],
                   "properties": {"total": COUNT, "items": {"type": "array", "items": {
                       "type": "object", "required": ["layer", "key", "text", "updated_at"],
                       "properties": {"layer": LAYER, "key": {"type": "string"}, "text": {"type": "string"},
                                      "updated_at": {"type": "string", "format": "date-time"}}}}}},
)
