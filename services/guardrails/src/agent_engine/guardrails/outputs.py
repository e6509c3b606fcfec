"""Output checks, pure: a node's output and the policy in; the output as it may go on (personal data
redacted), or why it is held for a person or refused, with the rules that matched (never the text).

The policy is the workflow's `policy.output` with the tenant's `output` section over it, the stricter of the
two winning: the graver PII action, the union of kinds and of topic rules.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

from agent_engine.contracts.events import LlmCallNote, RuleHit
from agent_engine.contracts.policy import JudgeRule, OutputPolicy, TopicRule
from agent_engine.guardrails.checks import PATTERNS, redact
from agent_engine.guardrails.pii import DEFAULT_REDACT

GRAVITY = {"off": 0, "redact": 1, "pause": 2, "fail": 3}


@dataclass(frozen=True)
class OutputVerdict:
    outcome: Literal["allowed", "redacted", "paused", "refused"]
    output: dict[str, Any] | None
    """What goes on: the output, redacted where the policy says (None when refused)."""
    rules: list[RuleHit] = field(default_factory=list)
    reason: str = ""
    calls: list[LlmCallNote] = field(default_factory=list)
    """The grounding judge's call: the answer lists it with the node's own, so the router settles what both cost
    against the node's reservation."""


def combined(workflow: OutputPolicy, tenant: OutputPolicy | None,
             default_kinds: tuple[str, ...] = DEFAULT_REDACT) -> OutputPolicy:
    """The workflow's policy with the tenant's over it: the stricter wins. Kinds a side leaves out are the
    default kinds (a side with `pii: off` asks for none), so a workflow naming fewer cannot narrow the tenant's;
    every topic rule of both is kept (a workflow's rule named like the tenant's adds to it, never replaces it)."""
    if tenant is None:
        return workflow
    pii = max(workflow.pii, tenant.pii, key=GRAVITY.__getitem__)
    kinds = sorted({kind for side in (workflow, tenant) if side.pii != "off"  # off asks for no kinds
                    for kind in (side.kinds if side.kinds is not None else default_kinds)})
    return OutputPolicy(pii=pii, kinds=kinds, topics=[*tenant.topics, *workflow.topics],
                        judge=stricter_judge(workflow.judge, tenant.judge))


GRAVER = {"allow": 0, "pause": 1, "fail": 2}


def stricter_judge(workflow: JudgeRule | None, tenant: JudgeRule | None) -> JudgeRule | None:
    """Both sides' grounding judge as one: the tenant's model (it pays for it), the higher `below`, the graver
    `action` and `on_error`. A side without one adds nothing."""
    if workflow is None or tenant is None:
        return tenant or workflow
    return tenant.model_copy(update={
        "below": max(workflow.below, tenant.below),
        "action": max(workflow.action, tenant.action, key=GRAVER.__getitem__),
        "on_error": max(workflow.on_error, tenant.on_error, key=GRAVER.__getitem__)})


def unknown_kinds(policy: OutputPolicy) -> list[str]:
    return sorted(set(policy.kinds or []) - set(PATTERNS))


def check_output(output: dict[str, Any], policy: OutputPolicy, default_kinds: tuple[str, ...]) -> OutputVerdict:
    unknown = unknown_kinds(policy)
    if unknown:
        return OutputVerdict("refused", None, [RuleHit(rule="policy.kinds")],
                             f"the output policy names unknown kinds of personal data {unknown}; known: "
                             f"{sorted(PATTERNS)}")
    counts: dict[str, int] = {}
    kinds = tuple(policy.kinds) if policy.kinds is not None else default_kinds
    redacted = redact(output, kinds, counts) if policy.pii != "off" else output
    pii_hits = [RuleHit(rule=f"pii.{kind}", count=n) for kind, n in sorted(counts.items())]
    topic_hits = [(rule, n) for rule in policy.topics if (n := topic_matches(output, rule))]
    hits = pii_hits + [RuleHit(rule=f"topic.{rule.id}", count=n) for rule, n in topic_hits]
    found = ", ".join(f"{h.rule} x{h.count}" for h in hits)
    if (pii_hits and policy.pii == "fail") or any(rule.action == "fail" for rule, _ in topic_hits):
        return OutputVerdict("refused", None, hits, f"output refused by guardrails' output checks: {found}")
    if (pii_hits and policy.pii == "pause") or topic_hits:
        return OutputVerdict("paused", redacted, hits, f"output held for a person by guardrails' output checks: "
                                                       f"{found}")
    if pii_hits:
        return OutputVerdict("redacted", redacted, hits, f"personal data redacted from the output: {found}")
    return OutputVerdict("allowed", output)


def topic_matches(output: Any, rule: TopicRule) -> int:
    pattern = re.compile(rule.pattern, re.IGNORECASE)
    return sum(len(pattern.findall(text)) for text in _texts(output))


def _texts(value: Any) -> list[str]:
    """Every string in the output (keys too), normalised so look-alike characters match (NFKC, case-folded)."""
    found: list[str] = []
    todo = [value]
    while todo:
        current = todo.pop()
        if isinstance(current, str):
            found.append(unicodedata.normalize("NFKC", current).casefold())
        elif isinstance(current, dict):
            todo.extend(current.keys())
            todo.extend(current.values())
        elif isinstance(current, list):
            todo.extend(current)
    return found
