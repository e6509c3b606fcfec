"""Hostile bus traffic for tests/test_fuzz.py: the corpus of malformed and forged messages (fuzz_accounts.py
says what became of each).

The corpus: every (subject, strategy) pair the engine could meet is a `Case`; a seed shuffles them, and
message n is case n (cycling) filled in from random.Random(f"{seed}:{n}"). So message n is the same
bytes for a given seed whatever N is, and a failing one can be rebuilt alone (AE_FUZZ_ONLY=n).
"""

from __future__ import annotations

import json
import random
import re
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from agent_engine.contracts.builtins import BUILTINS
from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import NodeDispatched, SubtaskRequested, data_model_for
from agent_engine.contracts.upcasting import upcast
from agent_engine.router.core import BUS_INPUTS
from agent_engine.router.store import aggregate_uuid

FUZZ_HEADER = "Ae-Fuzz"
TASK_ID_HEADER = "Ae-Task-Id"
GUARDRAILS = "agent-engine/guardrails"
ROUTER_TYPES = BUS_INPUTS
"""What the router takes from the stream (node.retry_due and node.deadline_expired only its own timers make)."""
RUNNER_RESULTS = ("node.completed", "node.errored", "node.tools_requested", "node.output_checked")
"""What answers a dispatch, for the router: a runner's result, or guardrails' for an output it checked."""
WORKFLOW = "research-review"
WORKFLOW_NODES = ("gather_context", "interpretation", "decomposition", "planning", "execution", "review")
EPOCH = datetime(2031, 3, 1, tzinfo=UTC)
"""Forged times lie ahead of any run, so a forged dispatch's deadline never passes while the suite waits."""
NESTING = 50_000
HUGE_SIZES = (70_000, 300_000, 1_200_000)
"""The largest is over guardrails' 1 MiB request limit and under the test server's 8 MiB max_payload."""
SAFE_BUILTIN = "text_stats"
UNSAFE_BUILTINS = frozenset(BUILTINS) - {SAFE_BUILTIN}
AFTER_DELIVERIES = re.compile(r"after (\d+) deliveries")
CROSS_TENANT_QUERIES = ("victim_task_intruder_tenant", "admission_log_intruder")
LEAKY_REPLY_KEYS = ("nodes", "status", "stored", "replayed", "identical", "differences")

# --- the world a corpus is built for ------------------------------------------------------------


def admission_log_alias(tenant: str) -> str:
    """The UUID the router's store keys a tenant's admission log by, spelled as a task id."""
    return str(aggregate_uuid(f"tenant:{tenant}"))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class World:
    """Tenants and the victim's task ids, all derived from the seed so the corpus can name them."""

    seed: int
    victim: str
    intruder: str
    victim_tasks: tuple[str, ...]

    @classmethod
    def for_seed(cls, seed: int, tasks: int = 8) -> World:
        rng = random.Random(f"{seed}:world")
        tag = f"{rng.getrandbits(40):010x}"
        return cls(seed, f"fv{tag}", f"fi{tag}", tuple(_uuid(rng) for _ in range(tasks)))

    def limits(self) -> str:
        """AE_TENANT_LIMITS for the stack: the victim gets a limit it never reaches, so that it has an
        admission log (a record of its own another tenant could try to reach); `limited` stays as the e2e
        stack has it."""
        return f"limited=2:3,{self.victim}=100:100"

    def known(self, n: int, count: int) -> tuple[str, ...]:
        """Victim tasks that exist when message n goes out: half are submitted before the fuzzing, half
        midway. A forgery may only name a task that exists: naming one first would squat its id."""
        half = len(self.victim_tasks) // 2
        return self.victim_tasks[:half] if n < count // 2 else self.victim_tasks

    def victim_request(self, i: int) -> tuple[bytes, dict[str, str]]:
        """A real task.requested of the victim, as agentctl sends it (body, headers)."""
        task = self.victim_tasks[i]
        env = Envelope(id=str(uuid.uuid4()), source="fuzz-victim", type="task.requested", time=datetime.now(UTC),
                       tenant=self.victim, task_id=task, correlation_id=task,
                       data={"workflow": WORKFLOW, "requested_by": "fuzz-victim",
                             "input": {"brief": f"Compare event-sourced workflow engines, variant {i}."}})
        return env.to_bytes(), {"Nats-Msg-Id": env.id, TASK_ID_HEADER: task}


@dataclass(frozen=True)
class Fuzz:
    n: int
    kind: str
    """request, router, agent, tool, telemetry, query or heartbeat: who must account for it."""
    subject: str
    strategy: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return f"#{self.n} {self.subject} [{self.strategy}] {self.body[:120]!r}"


@dataclass(frozen=True)
class Case:
    kind: str
    target: str
    """An event type (the subject's tail), a query subject, `heartbeat` or `fuzz.noise`."""
    strategy: str


# --- the cases ----------------------------------------------------------------------------------

BODY_STRATEGIES = ("random_bytes", "non_utf8", "empty", "not_object", "deep_nesting", "deep_nesting_in_data",
                   "huge_string", "truncated_json", "json_lexical", "lone_surrogate")
ENVELOPE_FIELDS = tuple(Envelope.model_fields)
ENVELOPE_STRATEGIES = (*(f"wrong_type:{f}" for f in ENVELOPE_FIELDS), *(f"missing:{f}" for f in ENVELOPE_FIELDS),
                       "naive_time", *(f"over_128:{f}" for f in ("id", "task_id", "correlation_id", "type")),
                       "tenant_mismatch", "unknown_type", "reserved_task_id", "schema_version", "extra_attributes")
NESTED_FIELDS = {
    "node.dispatched.tool": ("tool.name", "tool.builtin", "tool.args", "tool.side_effects", "tool.project",
                             "context.input", "context.upstream", "context.revision", "context.conversation"),
    "node.dispatched.agent": ("agent.name", "agent.provider", "agent.model", "agent.system", "agent.prompt",
                              "agent.output_schema_json", "agent.mock_responses", "agent.max_repairs",
                              "agent.max_tokens", "agent.tools", "agent.tool_defs", "agent.max_tool_turns",
                              "context.input", "context.conversation", "context.summary", "context.summarise",
                              "context.token_budget", "context.memory", "context.merged", "context.feedback"),
    "subtask.requested": ("lineage.kind", "lineage.parent_id", "lineage.root_id", "lineage.cause",
                          "lineage.parent_node", "lineage.index", "workflow_manifest.name",
                          "workflow_manifest.nodes", "workflow_manifest.edges", "workflow_manifest.tools"),
}
ROUTER_FORGERIES = ("forged_fake_task", "forged_victim_task", "forged_victim_task_spelling", "forged_extra_fields",
                    "forged_admission_log_alias")
FORGERIES: dict[str, tuple[str, ...]] = {
    "task.requested": ("forged_unpushed_workflow", "forged_unknown_workflow", "forged_victim_task",
                       "header_missing", "header_over_128", "header_over_128_valid_body", "header_differs"),
    "task.accepted": ("forged_unpushed_workflow", "forged_unknown_workflow"),
    "task.cancel_requested": ("forged_cancel_as_parent",),
    "task.fork_requested": ("forged_fork_of_victim", "forged_fork_of_nothing", "forged_fork_at_huge"),
    "subtask.requested": ("forged_subtask_unknown_parent_node", "forged_subtask_parent_node_exit",
                          "forged_subtask_parent_node_none", "forged_subtask_unknown_merge",
                          "forged_subtask_victim_parent"),
    "node.dispatched.tool": ("forged_unknown_builtin", "forged_bad_args", "forged_past_deadline",
                             "forged_wrong_kind", "forged_tenant_mismatch"),
    "node.dispatched.agent": ("forged_mock_script", "forged_schema_nonobject_properties",
                              "forged_schema_bad_keywords", "forged_schema_invalid", "forged_bad_mock_script",
                              "forged_token_budget", "forged_wrong_kind", "forged_tenant_mismatch"),
    "llm.called": ("forged_victim_task", "forged_bad_cost"),
}
QUERY_BODIES = ("random_bytes", "non_utf8", "empty", "not_object", "deep_nesting", "huge_string", "truncated_json")
ROUTER_QUERY_FORGERIES = ("task_id_wrong_type", "task_id_container", "unknown_task", "no_tenant", "tenant_wrong_type",
                          "victim_task_own_tenant", "victim_task_intruder_tenant", "admission_log_intruder")
QUERIES: dict[str, tuple[str, ...]] = {
    "aerpc.router.task.show": ROUTER_QUERY_FORGERIES,
    "aerpc.router.task.history": ROUTER_QUERY_FORGERIES,
    "aerpc.router.task.replay": ROUTER_QUERY_FORGERIES,
    "aerpc.router.task.nope": ("unknown_task", "victim_task_intruder_tenant"),
    "aerpc.router.<random>": ("unknown_task",),
    "aerpc.telemetry.ledger": ("task_id_wrong_type", "task_id_container", "tenant_wrong_type", "victim_task",
                               "tenant_query", "everything"),
    "aerpc.agent-runner.providers": ("everything", "unknown_task"),
}
HEARTBEAT_STRATEGIES = (*QUERY_BODIES, "forged_victim_heartbeat", "wrong_types")
NOISE_STRATEGIES = ("random_bytes", "empty", "not_object", "deep_nesting", "forged_fake_task")


def _event_targets() -> list[tuple[str, str]]:
    return [("request", "task.requested"), *(("router", t) for t in ROUTER_TYPES),
            ("agent", "node.dispatched.agent"), ("tool", "node.dispatched.tool"), ("telemetry", "llm.called")]


def _model_of(target: str) -> type[BaseModel]:
    return NodeDispatched if target.startswith("node.dispatched") else data_model_for(target)


def payload_strategies(target: str) -> list[str]:
    paths = [*_model_of(target).model_fields, *NESTED_FIELDS.get(target, ())]
    return [f"{how}:{path}" for path in paths for how in ("payload_wrong_type", "payload_missing")]


def all_cases() -> list[Case]:
    cases = []
    for kind, target in _event_targets():
        forged = (*ROUTER_FORGERIES, *FORGERIES.get(target, ())) if kind in ("router", "agent", "tool") \
            else FORGERIES.get(target, ())
        strategies = (*BODY_STRATEGIES, *ENVELOPE_STRATEGIES, *payload_strategies(target), *forged)
        cases += [Case(kind, target, s) for s in strategies]
    cases += [Case("telemetry", "fuzz.noise", s) for s in NOISE_STRATEGIES]
    for subject, forged in QUERIES.items():
        cases += [Case("query", subject, s) for s in (*QUERY_BODIES, *forged)]
    cases += [Case("heartbeat", "heartbeat", s) for s in HEARTBEAT_STRATEGIES]
    return cases


WEIGHTS = {"request": 3, "heartbeat": 2}
"""task.requested is the engine's front door: it gets more of the corpus than its one subject would."""


def corpus(world: World, count: int, only: Iterable[int] | None = None) -> list[Fuzz]:
    cases = [case for case in all_cases() for _ in range(WEIGHTS.get(case.kind, 1))]
    random.Random(f"{world.seed}:schedule").shuffle(cases)
    numbers = range(count) if only is None else sorted(n for n in set(only) if 0 <= n < count)
    return [Builder(world, n, count, cases[n % len(cases)]).build() for n in numbers]


# --- building one message -----------------------------------------------------------------------


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _set_path(data: dict[str, Any], path: str, value: Any, *, delete: bool = False) -> None:
    *parents, last = path.split(".")
    for part in parents:
        child = data.get(part)
        if not isinstance(child, dict):
            child = data[part] = {}
        data = child
    if delete:
        data.pop(last, None)
    else:
        data[last] = value


SPLIT_MANIFEST: dict[str, Any] = {
    "name": "fuzz-split",
    "nodes": [{"id": "first", "role": "START", "kind": "tool", "tool": "stats", "args": {"text": "$input.text"}},
              {"id": "fan", "role": "SPLIT", "kind": "tool", "tool": "stats", "args": {"text": "$input.text"},
               "split": {"items": "top_words", "merge": "collect"}},
              {"id": "each", "role": "LINEAR", "kind": "tool", "tool": "stats", "args": {"text": "$input.item.word"}},
              {"id": "collect", "role": "MERGE"},
              {"id": "done", "role": "EXIT", "status": "succeeded"}],
    "edges": [{"from": "first", "to": "fan"}, {"from": "fan", "to": "each"}, {"from": "each", "to": "collect"},
              {"from": "collect", "to": "done"}],
    "tools": {"stats": {"builtin": SAFE_BUILTIN}},
}
"""A forged subtask's workflow: text_stats only, so whatever the router starts from it is harmless."""
REVIEW_SCHEMA = {"type": "object", "required": ["verdict"],
                 "properties": {"verdict": {"type": "string", "enum": ["approve", "reject"]}}}


class Builder:
    """Builds message n of a corpus from its case and its own random generator."""

    def __init__(self, world: World, n: int, count: int, case: Case) -> None:
        self.world = world
        self.n = n
        self.case = case
        self.rng = random.Random(f"{world.seed}:{n}")
        self.known = world.known(n, count)
        self.headers: dict[str, str] = {}

    def build(self) -> Fuzz:
        if self.case.kind == "query":
            subject, body = self.query()
        elif self.case.kind == "heartbeat":
            subject, body = self.heartbeat()
        else:
            subject, body = self.event()
        strategy = self.case.strategy
        if not _harmless(self.world, self.case.kind, subject, body):
            body, strategy = _dumps({"defused": strategy}), strategy + "+defused"
        return Fuzz(self.n, self.case.kind, subject, strategy, body, self.headers)

    # --- small pieces ---

    def fresh(self) -> str:
        return _uuid(self.rng)

    def time(self) -> str:
        return (EPOCH + timedelta(seconds=self.rng.randrange(86_400))).isoformat().replace("+00:00", "Z")

    def tenant(self) -> str:
        return self.rng.choice((self.world.victim, self.world.intruder))

    def other(self, tenant: str) -> str:
        return self.world.intruder if tenant == self.world.victim else self.world.victim

    def long_text(self, low: int = 129, high: int = 400) -> str:
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(low, high)))

    def wrong(self) -> Any:
        """A value of the wrong type (or shape) for almost any field. The short strings it may give are valid
        ids, so they carry a random tail: two messages naming one task would make the second a no-op."""
        tail = f"{self.rng.getrandbits(32):08x}"
        pool: list[Callable[[], Any]] = [
            lambda: None, lambda: True, lambda: 0, lambda: -1, lambda: 2**64, lambda: -(2**63) - 1, lambda: 1.5,
            lambda: "", lambda: "\u0000" + tail, lambda: "\U0001f4a5" * 3 + tail, self.long_text, lambda: [], lambda: [None],
            lambda: [1, "two", {"three": 3}], lambda: {}, lambda: {"nested": {"deeper": [1]}}, lambda: {"": ""},
        ]
        return self.rng.choice(pool)()

    def envelope(self, tenant: str, type_: str, task_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"specversion": "1.0", "id": self.fresh(), "source": "fuzz", "type": type_, "time": self.time(),
                "tenant": tenant, "task_id": task_id, "correlation_id": task_id, "causation_id": None,
                "schema_version": 1, "data": data}

    def node_and_dispatch(self, task_id: str) -> tuple[str, str]:
        """For a victim task, one of its real nodes and that node's real first dispatch id."""
        if task_id in self.world.victim_tasks:
            node = self.rng.choice(WORKFLOW_NODES)
            return node, derive_id(task_id, node, 1)
        return self.rng.choice(("review", "gather_context", "fan")), self.fresh()

    # --- events ---

    def event(self) -> tuple[str, bytes]:
        strategy = self.case.strategy
        family, _, arg = strategy.partition(":")
        forge = getattr(self, family, None) if family.startswith(("forged_", "header_")) else None
        tenant, env = forge() if forge is not None else self.plain()
        if self.case.kind == "request" and TASK_ID_HEADER not in self.headers and not family.startswith("header_"):
            self.headers[TASK_ID_HEADER] = str(env["task_id"])  # as agentctl sends it
        subject = f"ae.{tenant}.{self.case.target}"
        if family in BODY_MUTATIONS:
            return subject, BODY_MUTATIONS[family](self, self.spelled(env))
        if family in ENVELOPE_MUTATIONS:
            ENVELOPE_MUTATIONS[family](self, env, arg)
        elif family in ("payload_wrong_type", "payload_missing") and isinstance(env.get("data"), dict):
            _set_path(env["data"], arg, self.wrong(), delete=family == "payload_missing")
        return subject, _dumps(self.spelled(env))

    def spelled(self, env: dict[str, Any]) -> dict[str, Any]:
        """Every other message as a contract v2 client writes it (`taskid`, ..., no null attributes), the
        others as a v1 client did: the engine reads both, so both must be refused alike. Mutations are made
        on the v1 names first; one that breaks the version (say, `schema_version` 3) leaves the body as is."""
        return upcast(env) if self.n % 2 == 0 else env

    def plain(self, tenant: str | None = None, task_id: str | None = None) -> tuple[str, dict[str, Any]]:
        """A well-formed event of the case's type for a task that does not exist (or `task_id`)."""
        tenant = tenant or self.tenant()
        target = self.case.target
        type_ = "node.dispatched" if target.startswith("node.dispatched") else target
        task = task_id or self.fresh()
        return tenant, self.envelope(tenant, type_, task, self.payload(type_, tenant, task))

    def payload(self, type_: str, tenant: str, task: str) -> dict[str, Any]:
        node, dispatch = self.node_and_dispatch(task)
        common = {"dispatch_id": dispatch, "node": node, "attempt": 1}
        builders: dict[str, Callable[[], dict[str, Any]]] = {
            "task.requested": lambda: {"workflow": self.unpushed(tenant), "input": {"brief": "fuzz"},
                                       "requested_by": "fuzz"},
            "task.accepted": lambda: {"workflow": self.unpushed(tenant), "input": {"brief": "fuzz"}, "priority": 0},
            "task.cancel_requested": lambda: {"reason": "fuzz", "requested_by": "fuzz"},
            "node.approval_decided": lambda: {"node": node, "decision": "approve", "decided_by": "fuzz"},
            "node.completed": lambda: {**common, "output": {"verdict": "approve"}, "provider": "mock"},
            "node.output_checked": lambda: {**common, "output": {"verdict": "approve"}, "provider": "mock",
                                            "outcome": "allowed"},
            "node.errored": lambda: {**common, "error": "fuzz", "retryable": self.rng.random() < 0.5},
            "node.retry_due": lambda: {"node": node, "attempt": 2, "at": self.time()},
            "subtask.requested": lambda: self.subtask(self.fresh()),
            "subtask.finished": lambda: {"subtask_id": self.fresh(), "parent_node": "fan", "index": 0,
                                         "status": "succeeded", "output": {"words": 1}},
            "task.fork_requested": lambda: {"source_task_id": self.fresh(), "at": 1, "requested_by": "fuzz"},
            "task.admitted": lambda: {"reason": "fuzz"},
            "node.tools_requested": lambda: {**common, "calls": [{"id": "c1", "name": "word_count",
                                                                   "args": {"text": "fuzz"}}]},
            "node.dispatched": lambda: self.dispatch(node, dispatch),
            "llm.called": lambda: {"dispatch_id": dispatch, "node": node, "provider": "mock", "model": "mock-1",
                                   "usage": {"input_tokens": 10, "output_tokens": 5}, "cost_usd": "0.001"},
            "fuzz.noise": lambda: {"noise": self.rng.random()},
        }
        return builders[type_]()

    def unpushed(self, tenant: str) -> str:
        """A workflow the tenant never pushed: the intruder never pushed research-review at all."""
        return WORKFLOW if tenant == self.world.intruder else f"nope-{self.rng.getrandbits(32):08x}"

    def subtask(self, parent: str, parent_node: str | None = "fan", merge: str = "collect") -> dict[str, Any]:
        item = {"word": "alpha", "count": 1}
        return {"lineage": {"kind": "subtask", "parent_id": parent, "root_id": parent, "parent_node": parent_node,
                            "index": 0, "cause": "item 0 of 1 of SPLIT node 'fan'"},
                "merge": merge, "item": item, "count": 1, "workflow": "fuzz-split", "revision": "f" * 64,
                "workflow_manifest": json.loads(json.dumps(SPLIT_MANIFEST)),
                "input": {"text": "alpha beta", "item": item, "item_index": 0, "item_count": 1}, "upstream": {}}

    def dispatch(self, node: str, dispatch_id: str) -> dict[str, Any]:
        base = {"dispatch_id": dispatch_id, "node": node, "attempt": 1,
                "deadline": (EPOCH + timedelta(days=2)).isoformat(), "reason": "next",
                "context": {"input": {"brief": "fuzz"}, "upstream": {}}}
        if self.case.target.endswith(".agent"):
            return {**base, "kind": "agent", "agent": {"name": "reviewer", "provider": "mock", "model": "mock-1",
                                                        "prompt": "Review it.", "output_schema_json": REVIEW_SCHEMA,
                                                        "mock_responses": []}}
        return {**base, "kind": "tool", "tool": {"name": "brief_stats", "builtin": SAFE_BUILTIN,
                                                 "args": {"text": "Some words for the fuzz, counted."}}}

    # --- well-formed forgeries (return the subject's tenant and the envelope) ---

    def forged_fake_task(self) -> tuple[str, dict[str, Any]]:
        return self.plain()

    def forged_victim_task(self) -> tuple[str, dict[str, Any]]:
        """The intruder, on its own subjects and in its own envelope, names a real task of the victim."""
        return self.plain(self.world.intruder, self.rng.choice(self.known))

    def forged_victim_task_spelling(self) -> tuple[str, dict[str, Any]]:
        """Another spelling of a victim task's UUID: a different task id, which must not reach the victim's.
        The case of each letter is drawn, so no two messages name one task (a second would be a no-op)."""
        task = self.rng.choice(self.known)
        cased = "".join(c.upper() if self.rng.random() < 0.5 else c for c in task)
        spelled = self.rng.choice(("{%s}", "urn:uuid:%s", "%s")) % cased
        return self.plain(self.world.intruder, spelled if spelled != task else task.upper())

    def forged_admission_log_alias(self) -> tuple[str, dict[str, Any]]:
        """As a task id, the canonical UUID the store keys the victim's admission log by (the victim has a
        tenant limit, so the log exists): another name for a record the intruder must not write to."""
        return self.plain(self.world.intruder, admission_log_alias(self.world.victim))

    def forged_extra_fields(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain()
        env["unknown_attribute"] = {"x": [1, 2]}
        env["data"]["unknown_field"] = self.wrong()
        return tenant, env

    def forged_unpushed_workflow(self) -> tuple[str, dict[str, Any]]:
        return self.plain(self.world.intruder)

    def forged_unknown_workflow(self) -> tuple[str, dict[str, Any]]:
        return self.plain(self.world.victim)

    def forged_cancel_as_parent(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain(self.world.intruder)
        env["data"]["parent_id"] = self.rng.choice(self.known)
        return tenant, env

    def forged_fork_of_victim(self) -> tuple[str, dict[str, Any]]:
        """A cross-tenant read attempt: fork a victim task into a task the intruder can query."""
        tenant, env = self.plain(self.world.intruder)
        env["data"].update(source_task_id=self.rng.choice(self.known), at=self.rng.randint(1, 6),
                           live=self.rng.random() < 0.5)
        return tenant, env

    def forged_fork_of_nothing(self) -> tuple[str, dict[str, Any]]:
        return self.plain(self.world.intruder)

    def forged_fork_at_huge(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.forged_fork_of_victim()
        env["data"]["at"] = 10**9
        return tenant, env

    def _subtask(self, **changes: Any) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain(self.world.intruder)
        env["data"] = self.subtask(self.fresh(), **changes)
        return tenant, env

    def forged_subtask_unknown_parent_node(self) -> tuple[str, dict[str, Any]]:
        return self._subtask(parent_node="no_such_node")

    def forged_subtask_parent_node_exit(self) -> tuple[str, dict[str, Any]]:
        return self._subtask(parent_node="done")

    def forged_subtask_parent_node_none(self) -> tuple[str, dict[str, Any]]:
        return self._subtask(parent_node=None)

    def forged_subtask_unknown_merge(self) -> tuple[str, dict[str, Any]]:
        return self._subtask(merge="no_such_merge")

    def forged_subtask_victim_parent(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain(self.world.intruder)
        env["data"] = self.subtask(self.rng.choice(self.known))
        return tenant, env

    def _data_change(self, path: str, value: Any) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain()
        _set_path(env["data"], path, value)
        return tenant, env

    def forged_unknown_builtin(self) -> tuple[str, dict[str, Any]]:
        return self._data_change("tool.builtin", "no_such_builtin")

    def forged_bad_args(self) -> tuple[str, dict[str, Any]]:
        return self._data_change("tool.args", self.rng.choice(({"text": 5}, {}, {"text": "x", "top": 10**9})))

    def forged_past_deadline(self) -> tuple[str, dict[str, Any]]:
        return self._data_change("deadline", "2001-01-01T00:00:00Z")

    def forged_wrong_kind(self) -> tuple[str, dict[str, Any]]:
        """A tool dispatch on the agent subject, or an agent dispatch on the tool subject."""
        tenant, env = self.plain()
        data = env["data"]
        data["kind"] = "tool" if data["kind"] == "agent" else "agent"
        data.pop("agent" if data["kind"] == "tool" else "tool", None)
        return tenant, env

    def forged_tenant_mismatch(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain()
        env["tenant"] = self.other(tenant)
        return tenant, env

    def forged_mock_script(self) -> tuple[str, dict[str, Any]]:
        script = self.rng.choice(([{"verdict": "approve"}], [{"$mock_invalid": "not json at all"}],
                                  [{"verdict": "maybe"}], [{"$mock_delay_s": 0.01, "verdict": "reject"}]))
        return self._data_change("agent.mock_responses", script)

    def forged_schema_nonobject_properties(self) -> tuple[str, dict[str, Any]]:
        properties = self.rng.choice(({"a": 5}, {"a": "string"}, [1, 2], {"a": None}))
        return self._data_change("agent.output_schema_json",
                                     {"type": "object", "required": ["a"], "properties": properties})

    def forged_schema_bad_keywords(self) -> tuple[str, dict[str, Any]]:
        schema = self.rng.choice((
            {"type": "object", "required": "a"},
            {"type": "object", "required": ["a"], "properties": {"a": {"type": "array", "minItems": "3"}}},
            {"type": "object", "required": ["a"], "properties": {"a": {"type": "string", "minLength": "9"}}},
            {"type": ["object", "null"], "required": [5]},
            {"type": "object", "required": ["a"], "properties": {"a": {"enum": "abc"}}},
        ))
        return self._data_change("agent.output_schema_json", schema)

    def forged_schema_invalid(self) -> tuple[str, dict[str, Any]]:
        schema: dict[str, Any] = self.rng.choice(({"type": "weird"}, {"type": 5}, {"$ref": "#/nowhere"}, {"const": 1},
                                  {"enum": []}, {"type": "object", "pattern": "("}))
        return self._data_change("agent.output_schema_json", schema)

    def forged_bad_mock_script(self) -> tuple[str, dict[str, Any]]:
        script = self.rng.choice(([{"$mock_delay_s": "soon"}], [{"$mock_tool_calls": "not a list"}],
                                  [{"$mock_tool_calls": [5]}], [{"$mock_invalid": 12}]))
        return self._data_change("agent.mock_responses", script)

    def forged_token_budget(self) -> tuple[str, dict[str, Any]]:
        return self._data_change("context.token_budget", self.rng.choice((1, 0, -5)))

    def forged_bad_cost(self) -> tuple[str, dict[str, Any]]:
        return self._data_change("cost_usd", self.rng.choice(("abc", "NaN", "-Infinity", "1e999999", "")))

    def header_missing(self) -> tuple[str, dict[str, Any]]:
        return self._garbage_request()

    def header_over_128(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self._garbage_request()
        self.headers[TASK_ID_HEADER] = self.long_text()
        return tenant, env

    def header_over_128_valid_body(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain()
        self.headers[TASK_ID_HEADER] = self.long_text()
        return tenant, env

    def header_differs(self) -> tuple[str, dict[str, Any]]:
        tenant, env = self.plain()
        self.headers[TASK_ID_HEADER] = self.fresh()
        return tenant, env

    def _garbage_request(self) -> tuple[str, dict[str, Any]]:
        """A request that is not an envelope: its answer can only be named by the header or the sequence."""
        tenant, env = self.plain()
        env.pop(self.rng.choice(("id", "task_id", "time", "type")))
        return tenant, env

    # --- queries and heartbeats ---

    def query(self) -> tuple[str, bytes]:
        subject = self.case.target
        if subject.endswith("<random>"):
            subject = f"aerpc.router.{self.long_text(1, 20)}"
        strategy = self.case.strategy
        probe: dict[str, Any] = {"task_id": self.fresh()}
        if strategy in BODY_MUTATIONS:
            return subject, BODY_MUTATIONS[strategy](self, probe)
        victim, intruder = self.world.victim, self.world.intruder
        task = self.rng.choice(self.known)
        bodies: dict[str, Callable[[], Any]] = {
            "task_id_wrong_type": lambda: {"task_id": self.wrong()},
            "task_id_container": lambda: {"task_id": self.rng.choice(([task], {"id": task}, [[]]))},
            "unknown_task": lambda: {"task_id": self.fresh(), "tenant": self.tenant()},
            "no_tenant": lambda: {"task_id": self.fresh()},
            "tenant_wrong_type": lambda: {"task_id": task, "tenant": self.wrong()},
            "victim_task_own_tenant": lambda: {"task_id": task, "tenant": victim},
            "victim_task_intruder_tenant": lambda: {"task_id": task, "tenant": intruder},
            "admission_log_intruder": lambda: {"task_id": f"tenant:{victim}", "tenant": intruder},
            "victim_task": lambda: {"task_id": task},
            "tenant_query": lambda: {"tenant": self.tenant()},
            "everything": lambda: {},
        }
        return subject, _dumps(bodies[strategy]())

    def heartbeat(self) -> tuple[str, bytes]:
        strategy = self.case.strategy
        tenant = self.tenant()
        beat: dict[str, Any] = {"task_id": self.fresh(), "node": "review", "dispatch_id": self.fresh()}
        if strategy == "forged_victim_heartbeat":
            tenant, task = self.world.intruder, self.rng.choice(self.known)
            node, dispatch = self.node_and_dispatch(task)
            beat = {"task_id": task, "node": node, "dispatch_id": dispatch}
        elif strategy == "wrong_types":
            beat = {key: self.wrong() for key in beat}
        elif strategy in BODY_MUTATIONS:
            return f"aehb.{tenant}", BODY_MUTATIONS[strategy](self, beat)
        return f"aehb.{tenant}", _dumps(beat)


# --- body mutations: (builder, the well-formed value) -> bytes ---


def _random_bytes(b: Builder, _: dict[str, Any]) -> bytes:
    return b.rng.randbytes(b.rng.randint(1, 512))


def _non_utf8(b: Builder, value: dict[str, Any]) -> bytes:
    raw = _dumps(value)
    cut = b.rng.randint(1, max(1, len(raw) - 1))
    return raw[:cut] + b.rng.choice((b"\xff\xfe", b"\xc3(", b"\xed\xa0\x80", b"\x80")) + raw[cut:]


def _empty(_: Builder, __: dict[str, Any]) -> bytes:
    return b""


def _not_object(b: Builder, value: dict[str, Any]) -> bytes:
    return _dumps(b.rng.choice(([value], 42, "an envelope", None, True, [], 1.5, [[[]]])))


def _deep_nesting(b: Builder, _: dict[str, Any]) -> bytes:
    if b.rng.random() < 0.7:
        return b"[" * NESTING + b"]" * NESTING
    return b'{"a":' * NESTING + b"1" + b"}" * NESTING


def _deep_nesting_in_data(b: Builder, value: dict[str, Any]) -> bytes:
    marked = _dumps({**value, "data": "__nest__"})
    return marked.replace(b'"__nest__"', b'{"x": ' + b"[" * NESTING + b"]" * NESTING + b"}")


def _huge_string(b: Builder, value: dict[str, Any]) -> bytes:
    huge = "x" * b.rng.choice(HUGE_SIZES)
    where = b.rng.choice([k for k in ("source", "subject", "task_id", "data") if k in value] or ["padding"])
    if where == "data" and isinstance(value["data"], dict):
        return _dumps({**value, "data": {**value["data"], "padding": huge}})
    return _dumps({**value, where: huge})


def _truncated_json(b: Builder, value: dict[str, Any]) -> bytes:
    raw = _dumps(value)
    return raw[: b.rng.randint(1, len(raw) - 1)]


def _json_lexical(b: Builder, value: dict[str, Any]) -> bytes:
    """Bodies both JSON parsers in play (json and pydantic's) read alike, with values at their edges."""
    raw = _dumps({**value, "edge": "__edge__"})
    edge = b.rng.choice((b"NaN", b"-Infinity", b"1e400", b"1" + b"0" * 400, b'"\\u0000"', b"-0.0"))
    raw = raw.replace(b'"__edge__"', edge)
    if b.rng.random() < 0.5:
        raw = raw.replace(b'"source": "fuzz"', b'"source": "first", "source": "fuzz"')
    return raw


def _lone_surrogate(b: Builder, value: dict[str, Any]) -> bytes:
    """Python's json reads a lone surrogate; pydantic's parser and every encoder refuse it. Inside a task's
    input it survives guardrails' parse and breaks the first re-serialisation."""
    note = "\ud800 and \udfff"
    data = value.get("data")
    if isinstance(data, dict) and isinstance(data.get("input"), dict):
        return _dumps({**value, "data": {**data, "input": {**data["input"], "note": note}}})
    return _dumps({**value, "note": note})


BODY_MUTATIONS: dict[str, Callable[[Builder, dict[str, Any]], bytes]] = {
    "random_bytes": _random_bytes, "non_utf8": _non_utf8, "empty": _empty, "not_object": _not_object,
    "deep_nesting": _deep_nesting, "deep_nesting_in_data": _deep_nesting_in_data, "huge_string": _huge_string,
    "truncated_json": _truncated_json, "json_lexical": _json_lexical, "lone_surrogate": _lone_surrogate,
}


# --- envelope mutations: change the envelope in place ---


def _wrong_type(b: Builder, env: dict[str, Any], name: str) -> None:
    env[name] = b.wrong()


def _missing(_: Builder, env: dict[str, Any], name: str) -> None:
    env.pop(name, None)


def _naive_time(_: Builder, env: dict[str, Any], __: str) -> None:
    env["time"] = "2031-03-01T10:00:00"


def _over_128(b: Builder, env: dict[str, Any], name: str) -> None:
    env[name] = b.long_text()


def _tenant_mismatch(b: Builder, env: dict[str, Any], _: str) -> None:
    env["tenant"] = b.rng.choice((b.other(str(env["tenant"])), "someone-else"))


def _unknown_type(b: Builder, env: dict[str, Any], _: str) -> None:
    env["type"] = b.rng.choice(("bogus.event", "task.started", "node.succeeded", "tenant.admitted",
                                "task.finished", "x" * 128))


def _reserved_task_id(_: Builder, env: dict[str, Any], __: str) -> None:
    env["task_id"] = f"tenant:{env['tenant']}"


def _schema_version(b: Builder, env: dict[str, Any], _: str) -> None:
    env["schema_version"] = b.rng.choice((3, 0, -1, "1", 1.5, None))


def _extra_attributes(b: Builder, env: dict[str, Any], _: str) -> None:
    env.update({"Nats-Msg-Id": b.fresh(), "extension": b.wrong(), "dataschema": "http://example.invalid"})


ENVELOPE_MUTATIONS: dict[str, Callable[[Builder, dict[str, Any], str], None]] = {
    "wrong_type": _wrong_type, "missing": _missing, "naive_time": _naive_time, "over_128": _over_128,
    "tenant_mismatch": _tenant_mismatch, "unknown_type": _unknown_type, "reserved_task_id": _reserved_task_id,
    "schema_version": _schema_version, "extra_attributes": _extra_attributes,
}


def subject_tenant(subject: str) -> str:
    """The second token of any subject (`ae.<tenant>...`, `aehb.<tenant>`)."""
    parts = subject.split(".")
    return parts[1] if len(parts) > 1 else ""


# --- never forge what could do harm ------------------------------------------------------------


def parse_envelope(body: bytes) -> Envelope | None:
    """The body as the contract's own parser reads it (Envelope.from_bytes), or None."""
    try:
        return Envelope.from_bytes(body)
    except (ValidationError, ValueError, RecursionError):
        return None


def parse_dispatch(body: bytes) -> tuple[Envelope, NodeDispatched] | None:
    env = parse_envelope(body)
    if env is None:
        return None
    try:
        return env, NodeDispatched.model_validate(env.data)
    except (ValidationError, ValueError, RecursionError):
        return None


def _harmless(world: World, kind: str, subject: str, body: bytes) -> bool:
    """Whether a body may go out: no dispatch a runner would run but text_stats and the mock provider, no
    subtask that would, and nothing the victim's tenant could take for one of its own tasks or workflows."""
    if kind in ("agent", "tool"):
        parsed = parse_dispatch(body)
        return parsed is None or _safe_dispatch(parsed[1])
    env = parse_envelope(body)
    if env is None or kind not in ("request", "router"):
        return True
    if env.type == "subtask.requested" and not _safe_subtask(env.data):
        return False
    if world.victim not in (env.tenant, subject_tenant(subject)):
        return True
    return (env.task_id not in world.victim_tasks and env.data.get("workflow") != WORKFLOW
            and env.data.get("source_task_id") not in world.victim_tasks)


def _safe_dispatch(dispatch: NodeDispatched) -> bool:
    if dispatch.tool is not None and dispatch.tool.builtin in UNSAFE_BUILTINS:
        return False
    agent = dispatch.agent
    return agent is None or (agent.provider == "mock" and not agent.fallbacks and not agent.tiers)


def _safe_subtask(data: dict[str, Any]) -> bool:
    try:
        manifest = SubtaskRequested.model_validate(data).workflow_manifest
    except (ValidationError, ValueError, RecursionError):
        return True
    return (all(t.builtin == SAFE_BUILTIN for t in manifest.tools.values())
            and all(a.provider == "mock" and not a.fallbacks and not a.tiers for a in manifest.agents.values()))


def main(argv: list[str]) -> None:
    """`python tests/fuzz_corpus.py SEED COUNT N...`: print messages N of a corpus whole, to replay one by hand."""
    seed, count, *numbers = (int(a) for a in argv)
    for fuzz in corpus(World.for_seed(seed), count, numbers):
        print(f"#{fuzz.n} {fuzz.kind} {fuzz.subject} [{fuzz.strategy}] headers {fuzz.headers}")
        print(fuzz.body.decode("utf-8", "backslashreplace")[:20_000])


if __name__ == "__main__":
    main(sys.argv[1:])
