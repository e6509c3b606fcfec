"""The output gate: consume node.output_produced (a runner's answer for a workflow that checks outputs), answer
the router with node.output_checked (the output as it may go on) or node.errored (refused), record the verdict,
then delete the runner's message from the stream, so an output with personal data in it is kept nowhere
unredacted (the same rule as for requests at ingress)."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.msg import Msg

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.events import GuardrailVerdict, NodeErrored, NodeOutputChecked, NodeOutputProduced
from agent_engine.contracts.policy import OutputPolicy
from agent_engine.contracts.subjects import consume_subjects
from agent_engine.guardrails import grounding, outputartifacts
from agent_engine.guardrails.classifier import still_working
from agent_engine.guardrails.gate import Answer, serve_gate
from agent_engine.guardrails.outputs import OutputVerdict, check_output, combined, unknown_kinds
from agent_engine.guardrails.policy import PolicyError, PolicyFile
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.bus import Bus
from agent_engine.runtime.settings import Settings

SOURCE = "agent-engine/guardrails"
DURABLE = "guardrails-output"
log = logging.getLogger("guardrails.output")


def tenant_policies(policy: PolicyFile) -> dict[str | None, OutputPolicy | None]:
    """Each tenant's `output` section (None: it has none), validated now so a mistake stops the start."""
    found: dict[str | None, OutputPolicy | None] = {}
    for tenant in [None, *policy.tenants]:
        if not policy.section("output", tenant):
            found[tenant] = None
            continue
        parsed = policy.read("output", tenant, OutputPolicy)
        if unknown_kinds(parsed):
            raise PolicyError(f"guardrails policy {policy.where('output', tenant)}: unknown kinds "
                              f"{unknown_kinds(parsed)}")
        found[tenant] = parsed
    return found


def answer(cause: Envelope, produced: NodeOutputProduced, verdict: OutputVerdict) -> list[Envelope]:
    """The events answering one output: the router's answer, and the verdict when it was more than a pass.
    Ids derive from the runner's event, so a redelivery publishes duplicates JetStream drops."""
    events = []
    calls = [*(produced.llm_calls or []), *verdict.calls]  # the judge's with the node's: settled together
    if verdict.outcome == "refused":
        events.append(caused_by(cause, NodeErrored(
            dispatch_id=produced.dispatch_id, node=produced.node, attempt=produced.attempt, error=verdict.reason,
            retryable=False, llm_calls=calls or None), id=derive_id(cause.id, "refused"), source=SOURCE))
    else:
        assert verdict.output is not None
        fields = produced.model_dump(exclude={"policy", "output", "inputs", "budget_usd", "llm_calls"})
        events.append(caused_by(cause, NodeOutputChecked(
            **fields, llm_calls=calls or None, output=verdict.output, outcome=verdict.outcome, rules=verdict.rules,
            reason=verdict.reason),
            id=derive_id(cause.id, "checked"), source=SOURCE))
    if verdict.outcome != "allowed":
        outcome = "refused" if verdict.outcome == "refused" else verdict.outcome
        events.append(caused_by(cause, GuardrailVerdict(
            gate="output", outcome=outcome, rules=verdict.rules, reason=verdict.reason, node=produced.node,
            dispatch_id=produced.dispatch_id), id=derive_id(cause.id, "verdict"), source=SOURCE))
    return events


async def serve_outputs(bus: Bus, policies: dict[str | None, OutputPolicy | None], default_kinds: tuple[str, ...],
                        settings: Settings, stop: asyncio.Event) -> None:
    store = ArtifactStore(bus.js)

    async def check(msg: Msg, envelope: Envelope, produced: NodeOutputProduced) -> Answer:
        policy = combined(produced.policy, policies.get(envelope.tenant, policies.get(None)), default_kinds)
        try:  # a large output arrives as references: check its content, never the references
            content = await outputartifacts.with_content(store, envelope.tenant, produced)
        except ArtifactError as exc:
            return answer(envelope, produced, OutputVerdict("refused", None, reason=f"output not checked: {exc}")), \
                f"output of node {produced.node} of task {envelope.task_id} not checked: {exc}"
        verdict = check_output(content.output, policy, default_kinds)
        if policy.judge is not None and verdict.outcome != "refused":
            await still_working(msg)
        verdict = await grounding.judged(bus.nc, policy.judge, envelope, content, verdict)  # last: it costs a call
        verdict, superseded = await outputartifacts.stored_again(store, envelope.tenant, produced, content, verdict)
        said = "" if verdict.outcome == "allowed" else (
            f"output of node {produced.node} of task {envelope.task_id} {verdict.outcome}: "
            + ", ".join(f"{h.rule} x{h.count}" for h in verdict.rules))
        if not superseded:
            return answer(envelope, produced, verdict), said
        return answer(envelope, produced, verdict), said, lambda: outputartifacts.drop(store, envelope.tenant,
                                                                                        superseded)

    await serve_gate(bus, DURABLE, consume_subjects(NodeOutputProduced.TYPE), NodeOutputProduced, check, settings,
                     stop, delete=True, logger=log)
