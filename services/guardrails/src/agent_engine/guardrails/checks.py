"""Pure ingress checks: raw request bytes in, an accepted (redacted) request or a readable reason out."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope
from agent_engine.contracts.errors import validation_summary
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.events.guardrails import RuleHit
from agent_engine.contracts.subjects import subject_problem
from agent_engine.contracts.upcasting import SUPPORTED_VERSIONS, version_of
from agent_engine.guardrails import injection, pii
from agent_engine.guardrails.inputpolicy import InputRules

PATTERNS = pii.KINDS
"""Every PII kind guardrails knows, by name (the output gate checks its policy's `kinds` against it)."""


def redact(value: Any, kinds: tuple[str, ...] | list[str], counts: dict[str, int]) -> Any:
    """Redact the built-in `kinds` in every string leaf, counting per kind (the output gate's entry point)."""
    return pii.redact(value, pii.detectors(kinds), counts)


@dataclass(frozen=True)
class Policy:
    max_bytes: int = 1024 * 1024
    redact: tuple[str, ...] = pii.DEFAULT_REDACT
    """The PII kinds redacted where the policy file's `input.redact` does not say (AE_GUARDRAILS_REDACT)."""
    max_depth: int = 64
    """Levels of JSON nesting a request may have (the envelope counts two): deeper input is refused
    before anything walks it recursively."""
    input: InputRules = field(default_factory=InputRules)
    """The policy file's `defaults.input`: every tenant without a section of its own."""
    tenants: Mapping[str, InputRules] = field(default_factory=dict)

    def rules(self, tenant: str) -> InputRules:
        return self.tenants.get(tenant, self.input)

    def detectors(self, rules: InputRules) -> tuple[pii.Detector, ...]:
        return rules.redact if rules.redact is not None else pii.detectors(self.redact)


@dataclass
class Verdict:
    envelope: Envelope | None = None
    request: TaskRequested | None = None
    reason: str | None = None
    redacted_input: dict[str, Any] = field(default_factory=dict)
    redactions: dict[str, int] = field(default_factory=dict)
    rules: list[RuleHit] = field(default_factory=list)
    """The rules that matched (injection rules with their scores, PII kinds as `pii.<kind>`)."""
    score: float | None = None
    """The total injection score, when any injection rule matched."""
    retry_after_s: float | None = None
    """Set when a rate limit refused the request."""

    @property
    def accepted(self) -> bool:
        return self.reason is None


def check(raw: bytes, subject: str, policy: Policy) -> Verdict:
    if len(raw) > policy.max_bytes:
        return Verdict(reason=f"request is {_size(len(raw))}, over the {_size(policy.max_bytes)} limit; "
                              "send large documents as workspace files and pass their paths")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return Verdict(reason=f"request body is not JSON ({exc}); send a CloudEvents envelope as a JSON object")
    except RecursionError:
        return Verdict(reason=f"request body nests JSON too deeply to read; at most {policy.max_depth} levels "
                              "are accepted")
    if not isinstance(body, dict):
        return Verdict(reason=f"request body is JSON {type(body).__name__}, not an object (an event envelope)")
    version = version_of(body)
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        readable = " and ".join(str(v) for v in SUPPORTED_VERSIONS)
        return Verdict(_head(body), reason=f"schemaversion {repr(version)[:40]} is not supported: this engine reads "
                                           f"versions {readable}; send version {CONTRACT_VERSION} or upgrade the "
                                           "engine")
    depth = nesting(body)
    if depth > policy.max_depth:
        return Verdict(_head(body), reason=f"request body nests JSON {depth} levels deep, over the limit of "
                                    f"{policy.max_depth}")
    if LONE_SURROGATE.search(raw) and _unencodable(body):  # JSON may escape what no UTF-8 text can hold
        return Verdict(None if _unencodable({**body, "data": None}) else _head(body), reason=(
            "request body holds a string that is not valid Unicode (a lone surrogate escape such as \\ud800); "
            "send well-formed text"))
    try:
        envelope = Envelope.model_validate(body)
    except ValidationError as exc:
        return Verdict(_head(body), reason="not a valid event envelope: " + validation_summary(exc, 5))
    if envelope.type != TaskRequested.TYPE:
        return Verdict(envelope, reason=f"event type '{envelope.type}' cannot be sent to task.requested")
    wrong_subject = subject_problem(subject, envelope)
    if wrong_subject:
        return Verdict(envelope, reason=wrong_subject)
    try:
        request = TaskRequested.model_validate(envelope.data)
    except ValidationError as exc:
        return Verdict(envelope, reason="not a valid task.requested payload: " + validation_summary(exc, 5))
    rules = policy.rules(envelope.tenant)
    found = injection.scan(request.input, rules.injection)
    hits = [RuleHit(rule=r, count=n, score=found.scores[r]) for r, n in sorted(found.counts.items())]
    score = found.score if found.counts else None
    if found.counts and found.score >= rules.threshold:
        return Verdict(envelope, request, reason=(
            f"the input looks like a prompt injection (score {found.score:g}, at or over the {rules.threshold:g} "
            f"threshold): {', '.join(sorted(found.counts))}; the request was not run"), rules=hits, score=score)
    counts: dict[str, int] = {}
    redacted = pii.redact(request.input, policy.detectors(rules), counts)
    hits += [RuleHit(rule=f"pii.{kind}", count=n) for kind, n in sorted(counts.items())]
    return Verdict(envelope, request, None, redacted, counts, hits, score)


def _head(body: dict[str, Any]) -> Envelope | None:
    """The envelope's attributes without its data, when they are valid: who sent a refused request and for
    which task, so even the refusal of a body that is no whole envelope reaches its sender."""
    try:
        return Envelope.model_validate({**body, "data": {}})
    except ValidationError:
        return None


LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A surrogate escape in the raw body: only then can a decoded string hold a lone surrogate."""


def _unencodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def nesting(value: Any) -> int:
    """How many levels of arrays and objects a JSON value has (0 for a scalar), without recursion."""
    deepest = 0
    todo = [(value, 1)]
    while todo:
        current, depth = todo.pop()
        children = current.values() if isinstance(current, dict) else current if isinstance(current, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in children)
    return deepest


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KiB"
