"""The bookkeeping of tests/test_fuzz.py: an `Observer` folds what the streams show (answers, runner results,
dead letters) and the `verdict_*` functions say, per message, what is missing; `None` means the message is
accounted for."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fuzz_corpus import (
    AFTER_DELIVERIES,
    CROSS_TENANT_QUERIES,
    FUZZ_HEADER,
    GUARDRAILS,
    LEAKY_REPLY_KEYS,
    RUNNER_RESULTS,
    TASK_ID_HEADER,
    Fuzz,
    World,
    parse_dispatch,
    parse_envelope,
    subject_tenant,
)

from agent_engine.contracts.envelope import Envelope, derive_id
from agent_engine.contracts.events import NodeDispatched
from agent_engine.contracts.subjects import consume_subjects, subject_for
from agent_engine.contracts.upcasting import V1_RENAMES

# --- what the streams show ----------------------------------------------------------------------


def json_object(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > 16 * 1024 * 1024:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class Seen:
    """One engine event as the accounts need it."""

    type: str
    id: str
    source: str
    tenant: str
    task_id: str
    causation_id: str


@dataclass(frozen=True)
class DeadLetter:
    service: str
    fuzz: int | None
    error: str
    body_id: str
    body_causation: str


@dataclass
class Observer:
    """Folds the messages of the streams as they arrive (ordered consumers from the first message)."""

    victim: str
    dead_by_fuzz: dict[int, list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))
    dead_by_body: dict[str, list[DeadLetter]] = field(default_factory=lambda: defaultdict(list))
    answers_by_task: dict[tuple[str, str], list[Seen]] = field(default_factory=lambda: defaultdict(list))
    by_cause: dict[str, list[Seen]] = field(default_factory=lambda: defaultdict(list))
    victim_llm_calls: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    llm_called_messages: int = 0
    messages: int = 0

    def on_dead_letter(self, subject: str, headers: dict[str, str], data: bytes) -> None:
        self.messages += 1
        body = json_object(data) or {}
        number = headers.get(FUZZ_HEADER, "")
        entry = DeadLetter(subject.split(".")[1], int(number) if number.isdigit() else None,
                           headers.get("Ae-Error", ""), str(body.get("id", "")), str(attribute(body, "causation_id")))
        if entry.fuzz is not None:
            self.dead_by_fuzz[entry.fuzz].append(entry)
        for key in {entry.body_id, entry.body_causation} - {""}:
            self.dead_by_body[key].append(entry)

    def on_event(self, subject: str, headers: dict[str, str], data: bytes) -> None:
        """An engine event (answers, runner results, llm.called); fuzz messages on these subjects are skipped."""
        self.messages += 1
        if subject.endswith(".llm.called"):
            self.llm_called_messages += 1
        body = json_object(data) if FUZZ_HEADER not in headers else None
        if body is None:
            return
        seen = Seen(*(str(attribute(body, k) or "") for k in ("type", "id", "source", "tenant", "task_id", "causation_id")))
        if seen.type == "llm.called" and seen.tenant == self.victim:
            self.victim_llm_calls[seen.task_id].add(seen.id)
        if seen.type in ("task.accepted", "task.rejected"):
            self.answers_by_task[(seen.tenant, seen.task_id)].append(seen)
        self.by_cause[seen.causation_id].append(seen)


OBSERVED_SUBJECTS = tuple(s for t in ("task.accepted", "task.rejected", "node.completed", "node.errored",
                                       "node.tools_requested", "llm.called", "node.output_checked")
                          for s in consume_subjects(t))
"""Each type's subjects (a router input's bare and in every partition)."""


# --- histories ----------------------------------------------------------------------------------


def attribute(body: dict[str, Any], name: str) -> Any:
    """An envelope attribute by its Python name, whichever contract version spelled the body (the engine
    writes v2, `taskid`; a fuzz message or a dead letter may be v1, `task_id`)."""
    return body.get(V1_RENAMES.get(name, name), body.get(name))


def applied(events: list[dict[str, Any]], input_id: str) -> bool:
    """Whether the router stored the input (its `router.input` record) in this history."""
    for record in events:
        data = record.get("data")
        if record.get("type") == "router.input" and isinstance(data, dict):
            inp = data.get("input")
            if isinstance(inp, dict) and inp.get("id") == input_id:
                return True
    return False


def envelopes_in(value: Any) -> Iterable[dict[str, Any]]:
    """Every envelope-shaped object in a record, itself included (inputs, copied histories, fork sources)."""
    if isinstance(value, dict):
        if {"id", "type", "tenant"} <= value.keys() and ({"taskid", "task_id"} & value.keys()):
            yield value
        for child in value.values():
            yield from envelopes_in(child)
    elif isinstance(value, list):
        for child in value:
            yield from envelopes_in(child)


def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for child in value.values():
            yield from strings_in(child)
    elif isinstance(value, list):
        for child in value:
            yield from strings_in(child)


def foreign_records(events: list[dict[str, Any]], tenant: str, banned_tasks: set[str],
                    banned_ids: set[str]) -> list[str]:
    """What a history of `tenant` holds that belongs to another tenant's tasks, one line per record."""
    found = []
    for number, record in enumerate(events, 1):
        foreign = [e for e in envelopes_in(record)
                   if e.get("tenant") != tenant or attribute(e, "task_id") in banned_tasks]
        if foreign:
            owners = sorted({f"{e.get('tenant')}/{attribute(e, 'task_id')}" for e in foreign})
            types = sorted({str(e.get("type")) for e in foreign})
            found.append(f"record {number} ({record.get('type')}) holds {len(foreign)} event(s) of another tenant or "
                         f"naming its task (tenant/task {owners[:2]}): {types[:6]}")
        leaked = banned_ids.intersection(strings_in(record))
        if leaked:
            found.append(f"record {number} ({record.get('type')}) holds {len(leaked)} id(s) of the other tenant's "
                         f"records: {sorted(leaked)[:2]}")
    return found


# --- verdicts: None when the message is accounted for -------------------------------------------


@dataclass
class Sent:
    fuzz: Fuzz
    seq: int | None = None
    error: str | None = None
    reply: bytes | None = None


Histories = dict[tuple[str, str], list[dict[str, Any]]]
"""(task id, tenant) -> the task's stored records as `aerpc.router.task.history` answered."""


def dead_verdict(entries: list[DeadLetter]) -> str | None:
    """A dead letter accounts for a message only with a reason, and only if given at once: a fuzz message
    fails the same way on every delivery, so retrying it first is a handler that raised."""
    for entry in entries:
        if not entry.error:
            return f"dead-lettered on {entry.service} without an Ae-Error reason"
        retried = AFTER_DELIVERIES.search(entry.error)
        if retried and int(retried.group(1)) > 1:
            return f"dead-lettered on {entry.service} only after {retried.group(1)} deliveries: {entry.error[:200]}"
    return None


def expected_request_task_id(sent: Sent, env: Envelope | None) -> str:
    if env is not None:
        return env.task_id
    header = sent.fuzz.headers.get(TASK_ID_HEADER, "")
    return header if 1 <= len(header) <= 128 else derive_id("request", sent.seq)


def verdict_request(sent: Sent, seen: Observer) -> str | None:
    fuzz = sent.fuzz
    dead = seen.dead_by_fuzz.get(fuzz.n)
    if dead:
        return f"dead-lettered on {dead[0].service} instead of answered with task.rejected: {dead[0].error[:200]}"
    env = parse_envelope(fuzz.body)
    expected = expected_request_task_id(sent, env)
    # an answer names its request by id: the envelope's, or (for a body guardrails does not read as one,
    # e.g. schema_version 3) the documented uuid5 of subject and sequence. Several forgeries may name one task.
    causes = {derive_id("raw-request", fuzz.subject, sent.seq)} | ({env.id} if env else set())
    answers = [a for a in seen.answers_by_task.get((subject_tenant(fuzz.subject), expected), [])
               if a.source == GUARDRAILS and (env is None or a.causation_id in causes)]
    if not answers:
        stray = [a for cause in causes for a in seen.by_cause.get(cause, []) if a.source == GUARDRAILS]
        if stray:
            return f"answered with task_id {stray[0].task_id[:60]!r}, expected {expected[:60]!r}"
        return f"no task.rejected (or task.accepted) for task_id {expected[:60]!r}"
    if len(answers) > 1:
        return f"answered {len(answers)} times: {[a.type for a in answers]}"
    if answers[0].type == "task.rejected":
        return None
    return _router_answer_to_accepted(answers[0], seen)


def _router_answer_to_accepted(accepted: Seen, seen: Observer) -> str | None:
    if any(a.type == "task.rejected" for a in seen.by_cause.get(accepted.id, [])):
        return None
    dead = [d for d in seen.dead_by_body.get(accepted.id, []) if d.service == "router" and d.body_id == accepted.id]
    if dead:
        return dead_verdict(dead)
    started = [a.type for a in seen.by_cause.get(accepted.id, [])]
    return f"accepted; the router neither rejected nor dead-lettered its task.accepted (caused: {started})"


def verdict_router(sent: Sent, seen: Observer, histories: Histories) -> str | None:
    dead = seen.dead_by_fuzz.get(sent.fuzz.n)
    if dead:
        return dead_verdict(dead)
    env = parse_envelope(sent.fuzz.body)
    if env is None:
        return "not an envelope, yet not dead-lettered"
    history = histories.get((env.task_id, env.tenant), [])
    if applied(history, env.id) or _absorbed_alias(sent, history, env.tenant):
        return None
    return "neither dead-lettered nor applied (no router.input record of it in its task's history)"


def _absorbed_alias(sent: Sent, history: list[dict[str, Any]], tenant: str) -> bool:
    """The alias of an admission log names no log (the store hashes it apart): it is an ordinary task id of
    the sender, which an earlier message of the corpus may have started; a stale input for one's own task
    is absorbed without a record, as a redelivery is."""
    return (sent.fuzz.strategy == "forged_admission_log_alias" and bool(history)
            and all(e.get("tenant") == tenant for e in history))


def history_wanted(sent: Sent, seen: Observer) -> list[tuple[str, str]]:
    """The histories (task, tenant) that may account for a message not dead-lettered yet."""
    if sent.fuzz.n in seen.dead_by_fuzz:
        return []
    env = parse_envelope(sent.fuzz.body)
    if env is None:
        return []
    if sent.fuzz.kind == "router":
        return [(env.task_id, env.tenant)]
    return [(r.task_id, r.tenant) for r in answers(seen, env.id)]


def answers(seen: Observer, dispatch_id: str) -> list[Envelope]:
    """A runner's answers to a dispatch, as the router gets them. An output for a workflow that checks outputs
    reaches it as guardrails' answer to the runner's node.output_produced (which guardrails deletes from the
    stream, so it is found by the id the runner gives it, not observed)."""
    produced = derive_id(dispatch_id, "completed")
    return [r for r in (*seen.by_cause.get(dispatch_id, []), *seen.by_cause.get(produced, []))
            if r.type in RUNNER_RESULTS]


def verdict_runner(sent: Sent, seen: Observer, histories: Histories) -> str | None:
    parsed = parse_dispatch(sent.fuzz.body)
    dead = seen.dead_by_fuzz.get(sent.fuzz.n)
    if dead and parsed is not None and _addressed(sent.fuzz, *parsed):
        # the router waits for an answer to a dispatch it could have sent: only node.errored tells it
        return f"dead-lettered a well-formed dispatch instead of answering it: {dead[0].error[:200]}"
    if dead:
        return dead_verdict(dead)
    if parsed is None:
        return "not a valid dispatch, yet not dead-lettered"
    env = parsed[0]
    results = answers(seen, env.id)
    if not results:
        return "a well-formed dispatch neither answered nor dead-lettered"
    for result in results:
        dead = [d for d in seen.dead_by_body.get(result.id, []) if d.service == "router" and d.body_id == result.id]
        if dead:
            return dead_verdict(dead)
        history = histories.get((result.task_id, result.tenant), [])
        if applied(history, result.id) or _absorbed_alias(sent, history, result.tenant):
            return None
    return f"answered with {results[0].type}, which the router neither dead-lettered nor applied"


def _addressed(fuzz: Fuzz, env: Envelope, dispatch: NodeDispatched) -> bool:
    """A dispatch the router itself could have published on this subject: it is a node.dispatched of the
    subject's tenant and kind (contracts' subject_for names the subject)."""
    return env.type == NodeDispatched.TYPE and subject_for(env) == fuzz.subject


def verdict_query(sent: Sent) -> str | None:
    if sent.error is not None:
        return sent.error
    try:
        reply = json.loads(sent.reply or b"")
    except (ValueError, RecursionError):
        return f"reply is not JSON: {(sent.reply or b'')[:120]!r}"
    leaky = isinstance(reply, dict) and (reply.get("events") or any(k in reply for k in LEAKY_REPLY_KEYS))
    if sent.fuzz.strategy in CROSS_TENANT_QUERIES and leaky:
        return f"answered another tenant's task to the intruder: keys {sorted(reply)[:8]}"
    return None


def verdict(sent: Sent, seen: Observer, histories: Histories) -> str | None:
    kind = sent.fuzz.kind
    if sent.error is not None and kind != "query":
        return f"publish failed: {sent.error}"
    if kind == "request":
        return verdict_request(sent, seen)
    if kind == "router":
        return verdict_router(sent, seen, histories)
    if kind in ("agent", "tool"):
        return verdict_runner(sent, seen, histories)
    if kind == "query":
        return verdict_query(sent)
    return None  # heartbeats and telemetry-only subjects: accounted for by the liveness and ledger checks


def runner_tenant_leak(sent: Sent, seen: Observer) -> str | None:
    """A dispatch whose envelope names another tenant than its subject must not make a runner publish into
    that tenant's subjects: it would let one tenant complete another's nodes."""
    parsed = parse_dispatch(sent.fuzz.body) if sent.fuzz.kind in ("agent", "tool") else None
    if parsed is None or parsed[0].tenant == subject_tenant(sent.fuzz.subject):
        return None
    foreign = [r for r in seen.by_cause.get(parsed[0].id, []) if r.tenant != subject_tenant(sent.fuzz.subject)]
    if foreign:
        return f"runner answered it into tenant {foreign[0].tenant!r}'s subjects ({foreign[0].type})"
    return None


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    section: str
    """unaccounted, service, victim, isolation or telemetry."""
    observed: str
    fuzz: Fuzz | None = None

    def line(self) -> str:
        where = f"{self.fuzz.line()}\n      -> " if self.fuzz else ""
        return f"  [{self.section}] {where}{self.observed}"

    def group(self) -> str:
        category = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", self.observed.split(":")[0])[:110]
        if self.fuzz is None:
            return f"{self.section}: {category}"
        target = self.fuzz.subject.split(".", 2)[-1] if self.fuzz.subject.startswith("ae.") else self.fuzz.subject
        return f"{self.section}: {target} [{self.fuzz.strategy.split(':')[0]}] {category}"


def report(problems: list[Problem], world: World, count: int, limit: int = 1500) -> str:
    groups: dict[str, int] = defaultdict(int)
    for problem in problems:
        groups[problem.group()] += 1
    lines = [f"{len(problems)} problem(s); seed {world.seed}, {count} messages, victim {world.victim}, "
             f"intruder {world.intruder}. Rebuild one with AE_FUZZ_SEED={world.seed} AE_FUZZ_MESSAGES={count} "
             f"AE_FUZZ_ONLY=<n>[,<n>...]; print one whole with: python tests/fuzz_corpus.py {world.seed} {count} <n>",
             "", "By kind (count):"]
    lines += [f"  {n:5d}  {g}" for g, n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "Each (#number subject [strategy] first bytes -> what was observed):"]
    lines += [p.line() for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)

