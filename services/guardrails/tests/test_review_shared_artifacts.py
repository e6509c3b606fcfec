"""The output gate deletes only what no other record names (review of issue #16).

Artifacts are content-addressed per tenant (`ae_artifacts_<tenant>/<sha256>`): equal content is stored once and
named by every record that holds it. So an output bound for the output gate, which deletes the unredacted
original once it stored a redacted version, is stored by its runner as that dispatch's own copy
(`<sha256>.<dispatch>`), and the gate deletes only such copies of the dispatch it answers: another task's equal
output, a tool result the tool-runner's call log replays, and this very message delivered again before the
gate's answer is acked all keep reading their content."""

from __future__ import annotations

import uuid

import pytest

from agent_engine.contracts.artifacts import TEXT, as_ref, locator
from agent_engine.contracts.events import NodeOutputProduced
from agent_engine.guardrails import outputartifacts
from agent_engine.guardrails.outputs import OutputVerdict
from agent_engine.runtime.artifacts import ArtifactError, ArtifactStore
from agent_engine.runtime.keyring import Keyring
from agent_engine.testkit.buckets import router_made_buckets
from agent_engine.testkit.connections import connected

pytestmark = pytest.mark.integration
REPORT = "Contact the author at jane.doe@example.com.\n" + "body line\n" * 10_000



def produced(ref: dict[str, object], node: str) -> NodeOutputProduced:
    return NodeOutputProduced(dispatch_id=f"d-{node}", node=node, attempt=1, output={"report": ref})


def where(message: NodeOutputProduced) -> str:
    """The locator of the message's stored report."""
    ref = as_ref(message.output["report"])
    assert ref is not None
    return locator(ref)


async def redact(store: ArtifactStore, tenant: str, message: NodeOutputProduced, acked: bool = True) -> list[str]:
    """What the output gate does with one large output a check redacts (outputgate.check), and, once its answer
    is acked, with the unredacted original (gate.serve_gate); what it deleted (or will, once acked)."""
    content = await outputartifacts.with_content(store, tenant, message)
    verdict = OutputVerdict("redacted", {"report": content.output["report"].replace("jane.doe@example.com", "[email]")})
    _, superseded = await outputartifacts.stored_again(store, tenant, message, content, verdict)
    if acked:
        await outputartifacts.drop(store, tenant, superseded)
    return superseded


async def test_redacting_one_output_leaves_another_tasks_equal_artifact_readable(nats_url: str,
                                                                                  keyring: Keyring) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    await router_made_buckets(nats_url, keyring, tenant)
    async with connected(nats_url, keyring.service("guardrails")) as nc:
        store = ArtifactStore(nc.jetstream())
        # task A (a workflow without output checks) finished with this report stored as an artifact
        kept = (await store.put(tenant, REPORT.encode(), TEXT, "fetch.report")).model_dump()
        # task B's node produced the same report (its runner stored it as the dispatch's own copy, as for every
        # output bound for the gate), and its workflow's output check redacts the e-mail address
        mine = produced((await store.put(tenant, REPORT.encode(), TEXT, "b.report", dispatch="d-b")).model_dump(), "b")
        assert await redact(store, tenant, mine) == [where(mine)]
        try:
            await store.get(tenant, str(kept["artifact"]))
        except ArtifactError as exc:
            pytest.fail(f"task A's recorded output no longer reads: {exc}")
        with pytest.raises(ArtifactError, match="has no artifact"):  # B's unredacted original is kept nowhere
            await store.get(tenant, where(mine))


async def test_a_reference_to_shared_content_is_checked_but_never_deleted(nats_url: str, keyring: Keyring) -> None:
    """An output stored content-addressed (by a runner older than per-dispatch copies, or naming a file another
    record holds) is checked and redacted as ever, but its original stays: other records may name it."""
    tenant = f"t{uuid.uuid4().hex[:10]}"
    await router_made_buckets(nats_url, keyring, tenant)
    async with connected(nats_url, keyring.service("guardrails")) as nc:
        store = ArtifactStore(nc.jetstream())
        kept = (await store.put(tenant, REPORT.encode(), TEXT, "fetch.report")).model_dump()
        assert await redact(store, tenant, produced(kept, "b")) == []
        assert await store.get(tenant, str(kept["artifact"])) == REPORT.encode()
        # nor does naming another dispatch's copy make the gate delete it
        other = produced((await store.put(tenant, REPORT.encode(), TEXT, "c.report", dispatch="d-c")).model_dump(), "b")
        assert await redact(store, tenant, other) == []
        assert await store.get(tenant, where(other)) == REPORT.encode()


async def test_a_redelivered_output_is_checked_again_rather_than_refused(nats_url: str, keyring: Keyring) -> None:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    await router_made_buckets(nats_url, keyring, tenant)
    async with connected(nats_url, keyring.service("guardrails")) as nc:
        store = ArtifactStore(nc.jetstream())
        message = produced((await store.put(tenant, REPORT.encode(), TEXT, "n.report", dispatch="d-n")).model_dump(),
                           "n")
        # the first delivery; its answer was not acked (a crash, a lost ack), so the original is not deleted yet
        assert await redact(store, tenant, message, acked=False) == [where(message)]
        try:
            await redact(store, tenant, message)  # the same message, delivered again, answered and acked
        except ArtifactError as exc:
            pytest.fail(f"the redelivered output cannot be checked (the gate refuses the node): {exc}")
        with pytest.raises(ArtifactError, match="has no artifact"):  # once acked, kept nowhere unredacted
            await store.get(tenant, where(message))
