"""The output gate and artifacts: a large output reaches the gate as references (runtime/artifacts.py), but
the checks must see its content. So the gate fetches the content, checks it, and when a check changed it
(redaction) stores the changed fields as new artifacts and deletes the unredacted ones, so personal data is
kept nowhere unredacted, as for an output carried inline (docs/observability.md, "Artifacts").

It deletes only what the runner stored as this dispatch's own copy (contracts.artifacts.dispatch_object), never
content-addressed objects: equal content of the tenant is stored once and other records (another task, a tool's
call log) may name it. A reference to shared content (from a runner older than per-dispatch copies) is left."""

from __future__ import annotations

from dataclasses import replace

from agent_engine.contracts.artifacts import as_ref, dispatch_object, locator, references
from agent_engine.contracts.events import NodeOutputProduced
from agent_engine.guardrails.outputs import OutputVerdict
from agent_engine.runtime.artifacts import ArtifactStore


async def with_content(store: ArtifactStore, tenant: str, produced: NodeOutputProduced) -> NodeOutputProduced:
    """The produced output (and the inputs a grounding judge reads) with each reference replaced by its content."""
    if not references([produced.output, produced.inputs]):
        return produced
    return produced.model_copy(update={"output": await store.resolve(tenant, produced.output),
                                       "inputs": await store.resolve(tenant, produced.inputs)})


async def stored_again(store: ArtifactStore, tenant: str, produced: NodeOutputProduced, checked: NodeOutputProduced,
                       verdict: OutputVerdict) -> tuple[OutputVerdict, list[str]]:
    """The verdict with the output as it goes on: the runner's references where the checks left a field as it was,
    new artifacts (or inline values, if now small) where they changed it; and the locators of the changed
    originals that are this dispatch's own copies, which the gate deletes (`drop`) once its answer is acked: a
    redelivery before that must still read them."""
    if verdict.output is None or checked is produced:
        return verdict, []
    output = dict(verdict.output)
    superseded = []
    for key, value in produced.output.items():
        ref = as_ref(value)
        if ref is None:
            continue
        if output.get(key) == checked.output.get(key):
            output[key] = value  # unchanged: the runner's artifact goes on
        elif ref.object == dispatch_object(ref.artifact, produced.dispatch_id):
            superseded.append(locator(ref))  # only this dispatch's own copy: nothing else names it
    return replace(verdict, output=await store.offload(tenant, output, produced.node)), superseded


async def drop(store: ArtifactStore, tenant: str, artifacts: list[str]) -> None:
    """Delete the unredacted originals (this dispatch's own copies) an answered output superseded."""
    for artifact in artifacts:
        await store.delete(tenant, artifact)
