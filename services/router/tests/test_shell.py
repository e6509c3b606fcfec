"""The router's shell and its store against a real PostgreSQL and NATS (no other service): a batch is one
transaction, a stale cache is decided again, a write conflict goes one by one, a refused input leaves
nothing behind, a tenant's admission log commits with its tasks, and an idempotency key names one task
across a restart."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from router_testkit import chain, exit_, linear_workflow, manifest, tool

from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import NodeCompleted, TaskAccepted, TaskAdmitted
from agent_engine.contracts.subjects import subject_for
from agent_engine.router.admission import TENANT_KEY, Limits
from agent_engine.router.idempotency import key_aggregate
from agent_engine.router.refusals import refusal
from agent_engine.router.service import Router
from agent_engine.router.store import TaskStore
from agent_engine.runtime import workflows
from agent_engine.runtime.bus import MSG_ID, Bus
from agent_engine.runtime.settings import Settings

pytestmark = pytest.mark.integration
NO_LIMITS = {"": Limits()}


@pytest.fixture
def tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def router(bus: Bus, store: TaskStore, limits: dict[str, Limits] | None = None) -> Router:
    return Router(bus, store, await workflows.bucket(bus.js), Settings(), limits or NO_LIMITS)


async def pushed(bus: Bus, tenant: str) -> str:
    wf = linear_workflow()
    await workflows.push(await workflows.bucket(bus.js), tenant, "rev-1", wf)
    return wf.name


def accepted(tenant: str, workflow: str, task_id: str | None = None, **data: Any) -> Envelope:
    return command(TaskAccepted(workflow=workflow, **data), tenant=tenant, task_id=task_id or str(uuid.uuid4()),
                   source="test")


def completed(dispatch: Envelope, output: dict[str, Any] | None = None) -> Envelope:
    data = dispatch.data
    return command(NodeCompleted(dispatch_id=data["dispatch_id"], node=data["node"], attempt=data["attempt"],
                                 output=output or {"ok": True}),
                   tenant=dispatch.tenant, task_id=dispatch.task_id, source="test")


def open_dispatch(store: TaskStore, task_id: str) -> Envelope:
    state = store.load(task_id)
    [(node, _)] = state.open_dispatches()
    return next(r for r in reversed(store.records(task_id)) if r.type == "node.dispatched" and r.data["node"] == node)


def counting_saves(store: TaskStore) -> list[list[str]]:
    """Wrap store.save so a test sees each transaction's aggregate keys."""
    saves: list[list[str]] = []
    save = store.save

    def spy(pending: Any, states: Any = None, encoded: Any = None) -> Any:
        saves.append(list(pending))
        return save(pending, states, encoded)

    store.save = spy  # type: ignore[method-assign]
    return saves


# --- the store ---------------------------------------------------------------------------------

def test_the_store_keeps_records_in_order_and_refuses_a_second_writer_of_the_same_version(store: TaskStore) -> None:
    task_id = str(uuid.uuid4())
    records = [command(TaskAccepted(workflow="w"), tenant="acme", task_id=task_id, source="t") for _ in range(3)]
    committed = store.save({task_id: (0, records[:2])})
    assert [r for _, r in committed] == records[:2] and committed[1][0] == committed[0][0] + 1
    assert store.records(task_id) == records[:2]
    with pytest.raises(IntegrityError):  # another writer built on version 1 too
        store.save({task_id: (1, records[2:])})
    assert store.records(task_id) == records[:2]
    assert store.load(str(uuid.uuid4())).status == "new"


def test_a_relay_resumes_from_the_furthest_position_any_relay_saved(store: TaskStore, postgres_url: str) -> None:
    """A router with a new name (in Kubernetes each pod's) must not republish the whole log: it committed nothing
    before the furthest position any relay saved (a dead router's tail is the follower's to publish). A router
    with a position of its own resumes there."""
    name, elsewhere = f"relay:{uuid.uuid4().hex[:6]}", f"relay:{uuid.uuid4().hex[:6]}"
    furthest = store.relay_position(name)
    store.set_relay_position(elsewhere, furthest + 42)
    other = TaskStore(postgres_url)
    try:
        assert other.relay_position(name) == furthest + 42
        store.set_relay_position(name, 7)
        assert other.relay_position(name) == 7  # its own, behind the others': its tail after a crash
    finally:
        other.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # no position past the log for other tests
            conn.execute("DELETE FROM router_relay_position WHERE name = ANY(%s)", ([elsewhere, name],))


# --- the shell ---------------------------------------------------------------------------------

async def test_a_batch_of_inputs_for_several_tasks_is_one_transaction(bus: Bus, store: TaskStore,
                                                                      tenant: str) -> None:
    shell = await router(bus, store)
    workflow = await pushed(bus, tenant)
    saves = counting_saves(store)
    inputs = [accepted(tenant, workflow) for _ in range(3)]
    assert await shell.apply(inputs) == {}
    assert saves == [[e.task_id for e in inputs]]
    for event in inputs:
        assert [r.type for r in store.records(event.task_id)][:3] == ["router.input", "task.started",
                                                                       "node.dispatched"]


async def test_tasks_pin_the_revision_current_when_they_start(bus: Bus, store: TaskStore, tenant: str) -> None:
    """The router parses each registry entry once; a revision pushed later is what the tasks after it run."""
    shell = await router(bus, store)
    workflow = await pushed(bus, tenant)
    first = [accepted(tenant, workflow) for _ in range(2)]
    assert await shell.apply(first) == {}
    changed = linear_workflow().model_copy(update={"description": "second revision"})
    await workflows.push(await workflows.bucket(bus.js), tenant, "rev-2", changed)
    later = accepted(tenant, workflow)
    assert await shell.apply([later]) == {}
    assert [store.load(e.task_id).revision for e in first] == ["rev-1", "rev-1"]
    state = store.load(later.task_id)
    assert state.revision == "rev-2" and state.manifest is not None and state.manifest.description == "second revision"


async def test_a_refused_input_leaves_nothing_while_the_rest_of_its_batch_commits(bus: Bus, store: TaskStore,
                                                                                  tenant: str) -> None:
    shell = await router(bus, store)
    workflow = await pushed(bus, tenant)
    good = accepted(tenant, workflow)
    bad = command(TaskAccepted(workflow=workflow), tenant=tenant, task_id=str(uuid.uuid4()), source="t")
    bad = bad.model_copy(update={"data": {"workflow": workflow, "input": "not an object"}})
    refused = await shell.apply([bad, good])
    assert list(refused) == [bad.id] and refused[bad.id].startswith("not a valid task.accepted payload: input")
    assert store.records(bad.task_id) == [] and store.load(good.task_id).status == "running"


async def test_a_stale_cache_is_decided_again_on_what_the_store_holds(bus: Bus, store: TaskStore,
                                                                      tenant: str) -> None:
    first, second = await router(bus, store), await router(bus, store)
    workflow = await pushed(bus, tenant)
    start = accepted(tenant, workflow)
    await first.apply([start])
    await second.tasks.get(start.task_id)  # the second router caches the task as it is now
    await first.apply([completed(open_dispatch(store, start.task_id))])  # the first moves it on
    middle = open_dispatch(store, start.task_id)
    assert middle.data["node"] == "middle"
    # to the second router's stale cache this result names no open dispatch: it reloads and applies it
    assert await second.apply([completed(middle)]) == {}
    assert open_dispatch(store, start.task_id).data["node"] == "finish"


async def test_a_write_conflict_fails_the_batch_and_the_retry_succeeds_on_fresh_state(
        bus: Bus, store: TaskStore, tenant: str) -> None:
    first, second = await router(bus, store), await router(bus, store)
    workflow = await pushed(bus, tenant)
    start = accepted(tenant, workflow)
    await first.apply([start])
    dispatch = open_dispatch(store, start.task_id)
    await second.tasks.get(start.task_id)
    result = completed(dispatch)
    await first.apply([result])
    # the same result again with a new id: on its stale cache the second router thinks it is new
    again = result.model_copy(update={"id": str(uuid.uuid4())})
    with pytest.raises(IntegrityError):
        await second.apply([again])
    assert await second.apply([again]) == {}  # the cache was dropped: decided on fresh state, a no-op
    assert [r.type for r in store.records(start.task_id)].count("node.succeeded") == 1


async def test_the_one_by_one_path_settles_each_message_of_a_failed_batch(bus: Bus, store: TaskStore,
                                                                         tenant: str) -> None:
    first, second = await router(bus, store), await router(bus, store)
    workflow = await pushed(bus, tenant)
    start = accepted(tenant, workflow)
    await first.apply([start])
    await second.tasks.get(start.task_id)
    result = completed(open_dispatch(store, start.task_id))
    await first.apply([result])
    stale = result.model_copy(update={"id": str(uuid.uuid4())})  # conflicts on the second router's cache
    fresh = accepted(tenant, workflow)
    durable = f"shell-{uuid.uuid4().hex[:8]}"
    sub = await bus.pull(durable, [subject_for(stale), subject_for(fresh)], ack_wait=30)
    for event in (stale, fresh):
        await bus.js.publish(subject_for(event), event.to_bytes(), headers={MSG_ID: event.id})
    msgs = await sub.fetch(2, timeout=5)
    await second._handle_batch(msgs)  # the batch conflicts; each input is then applied on its own
    assert store.load(fresh.task_id).status == "running"
    assert [r.type for r in store.records(start.task_id)].count("node.succeeded") == 1
    for _ in range(50):  # an ack is a plain publish: give the server a moment to count it
        info = await bus.js.consumer_info("AE_EVENTS", durable)
        if info.num_ack_pending == 0:
            break
        await asyncio.sleep(0.05)
    assert info.num_ack_pending == 0 and info.num_pending == 0 and info.num_redelivered == 0  # both acked
    await bus.js.delete_consumer("AE_EVENTS", durable)


async def test_an_admission_log_commits_in_the_same_transaction_as_its_tasks(bus: Bus, store: TaskStore,
                                                                             tenant: str) -> None:
    shell = await router(bus, store, {"": Limits(), tenant: Limits(max_running=1, max_queued=5)})
    workflow = await pushed(bus, tenant)
    saves = counting_saves(store)
    one, two = accepted(tenant, workflow), accepted(tenant, workflow)
    await shell.apply([one, two])
    assert len(saves) == 1 and set(saves[0]) == {one.task_id, two.task_id, TENANT_KEY + tenant}
    assert store.load(one.task_id).status == "running" and store.load(two.task_id).status == "queued"
    assert [r.type for r in store.records(TENANT_KEY + tenant)] == ["tenant.admitted", "tenant.queued"]


async def test_an_input_refused_after_admission_leaves_no_admission_record(bus: Bus, store: TaskStore,
                                                                           tenant: str) -> None:
    shell = await router(bus, store, {"": Limits(), tenant: Limits(max_running=1, max_queued=5)})
    workflow = await pushed(bus, tenant)
    bad = accepted(tenant, workflow)
    bad = bad.model_copy(update={"data": {**bad.data, "input": ["not", "an", "object"]}})
    refused = await shell.apply([bad, accepted(tenant, workflow)])
    assert list(refused) == [bad.id]
    log = store.records(TENANT_KEY + tenant)
    assert [r.task_id for r in log] != [] and bad.task_id not in {r.task_id for r in log}


async def test_a_deadline_input_the_task_cannot_take_stops_firing(bus: Bus, store: TaskStore, tenant: str) -> None:
    shell = await router(bus, store)
    workflow = await pushed(bus, tenant)
    start = accepted(tenant, workflow)
    await shell.apply([start])
    assert (start.task_id, "start") in shell.deadlines.open
    due = shell.deadlines.expired(datetime.now(UTC).replace(year=2100), caught_up=True, read_through=None)
    [deadline] = [e for e in due if e.task_id == start.task_id]
    broken = deadline.model_copy(update={"data": {"node": "start"}})  # no dispatch id: decide refuses it
    await shell.timers._fire(broken)
    assert (start.task_id, "start") not in shell.deadlines.open


async def test_a_task_admitted_that_its_tenants_log_never_admitted_is_refused(bus: Bus, store: TaskStore,
                                                                            tenant: str) -> None:
    """Found in review: a task.admitted from the bus would start a queued task past its tenant's limit."""
    shell = await router(bus, store, {"": Limits(), tenant: Limits(max_running=1, max_queued=5)})
    workflow = await pushed(bus, tenant)
    running, queued = accepted(tenant, workflow), accepted(tenant, workflow)
    await shell.apply([running, queued])
    forged = command(TaskAdmitted(reason="forged"), tenant=tenant, task_id=queued.task_id, source="intruder")
    assert await refusal(forged, shell.tasks, shell.admission) == (
        f"task.admitted for task {queued.task_id}, which the admission log of tenant '{tenant}' did not admit")
    await shell.apply([completed(open_dispatch(store, running.task_id))])  # ... and so on to the end
    for _ in range(2):
        await shell.apply([completed(open_dispatch(store, running.task_id))])
    assert store.load(running.task_id).status == "succeeded"
    [genuine] = [r for r in store.records(TENANT_KEY + tenant) if r.type == "task.admitted"]
    assert await refusal(genuine, shell.tasks, shell.admission) == ""


# --- idempotency keys --------------------------------------------------------------------------

async def test_a_key_used_twice_makes_one_task_and_the_second_request_names_it(bus: Bus, store: TaskStore,
                                                                               tenant: str) -> None:
    shell = await router(bus, store)
    workflow = await pushed(bus, tenant)
    saves = counting_saves(store)
    first, second = accepted(tenant, workflow, idempotency_key="order-42"), accepted(tenant, workflow,
                                                                                    idempotency_key="order-42")
    await shell.apply([first, second])  # both in one batch
    index = key_aggregate(tenant, "order-42")
    assert len(saves) == 1 and set(saves[0]) == {first.task_id, second.task_id, index}
    assert store.load(first.task_id).status == "running"
    assert [r.type for r in store.records(second.task_id)] == ["router.input", "task.deduplicated"]
    assert store.records(second.task_id)[1].data["original_task_id"] == first.task_id
    assert [(r.type, r.task_id) for r in store.records(index)] == [("tenant.key_claimed", first.task_id)]

    restarted = await router(bus, TaskStore(store.url))  # a new router process: only the store remembers
    third = accepted(tenant, workflow, idempotency_key="order-42")
    await restarted.apply([third])
    assert store.load(third.task_id).duplicate_of == first.task_id
    other_tenant = accepted(f"{tenant}x", await pushed(bus, f"{tenant}x"), idempotency_key="order-42")
    await restarted.apply([other_tenant])
    assert store.load(other_tenant.task_id).status == "running"  # keys are per tenant
    restarted.store.close()


async def test_a_request_the_router_rejects_does_not_claim_its_key(bus: Bus, store: TaskStore, tenant: str) -> None:
    shell = await router(bus, store)
    missing = accepted(tenant, "not-pushed", idempotency_key="k")
    await shell.apply([missing])
    assert store.load(missing.task_id).status == "rejected"
    retry = accepted(tenant, await pushed(bus, tenant), idempotency_key="k")  # pushed now: the same key works
    await shell.apply([retry])
    assert store.load(retry.task_id).status == "running"
    assert [r.task_id for r in store.records(key_aggregate(tenant, "k"))] == [retry.task_id]


async def test_past_the_window_or_with_the_window_off_the_same_key_starts_another_task(bus: Bus, store: TaskStore,
                                                                                       tenant: str) -> None:
    workflow = await pushed(bus, tenant)
    off = Router(bus, store, await workflows.bucket(bus.js), Settings(), NO_LIMITS, idempotency_window_s=0)
    one, two = accepted(tenant, workflow, idempotency_key="a"), accepted(tenant, workflow, idempotency_key="a")
    await off.apply([one, two])
    assert {store.load(one.task_id).status, store.load(two.task_id).status} == {"running"}
    assert store.records(key_aggregate(tenant, "a")) == []

    short = Router(bus, store, await workflows.bucket(bus.js), Settings(), NO_LIMITS, idempotency_window_s=60)
    early = accepted(tenant, workflow, idempotency_key="b")
    late = accepted(tenant, workflow, idempotency_key="b")
    late = late.model_copy(update={"time": early.time + timedelta(seconds=61)})
    await short.apply([early])
    await short.apply([late])
    assert store.load(late.task_id).status == "running"
    assert [r.task_id for r in store.records(key_aggregate(tenant, "b"))] == [early.task_id, late.task_id]


async def test_a_key_claimed_under_limits_also_names_a_queued_task(bus: Bus, store: TaskStore, tenant: str) -> None:
    shell = await router(bus, store, {"": Limits(), tenant: Limits(max_running=1, max_queued=5)})
    workflow = await pushed(bus, tenant)
    running, queued = accepted(tenant, workflow), accepted(tenant, workflow, idempotency_key="q")
    again = accepted(tenant, workflow, idempotency_key="q")
    await shell.apply([running, queued, again])
    assert store.load(queued.task_id).status == "queued"
    assert store.load(again.task_id).duplicate_of == queued.task_id
    # the repeat took no place in the tenant's queue
    assert again.task_id not in {r.task_id for r in store.records(TENANT_KEY + tenant)}


async def test_a_task_that_fails_at_its_first_step_still_claims_its_key(bus: Bus, store: TaskStore,
                                                                        tenant: str) -> None:
    """Found by agentctl's e2e test: a task whose first node cannot even be dispatched starts and fails in one
    decision, and its key must name it all the same."""
    shell = await router(bus, store)
    wf = manifest([tool("start", role="START", args={"text": "$input.missing"}), exit_("done")], chain("start", "done"))
    await workflows.push(await workflows.bucket(bus.js), tenant, "rev-1", wf)
    first, again = accepted(tenant, wf.name, idempotency_key="f"), accepted(tenant, wf.name, idempotency_key="f")
    await shell.apply([first])
    assert store.load(first.task_id).status == "failed"
    await shell.apply([again])
    assert store.load(again.task_id).duplicate_of == first.task_id


async def test_the_router_snapshots_the_states_it_commits(bus: Bus, postgres_url: str, tenant: str) -> None:
    from agent_engine.router import snapshots
    from agent_engine.router.core import fold
    from agent_engine.router.store import aggregate_uuid

    store = TaskStore(postgres_url, snapshot_every=3)
    try:
        shell = await router(bus, store)
        workflow = await pushed(bus, tenant)
        start = accepted(tenant, workflow)
        await shell.apply([start])
        for _ in range(3):  # the open dispatch read from the records: a load could write a snapshot itself
            dispatched = [r for r in store.records(start.task_id) if r.type == "node.dispatched"]
            await shell.apply([completed(dispatched[-1])])
        records = store.records(start.task_id)
        assert records[-1].type == "task.succeeded"
        found = snapshots.stored(postgres_url, aggregate_uuid(start.task_id))
        assert found is not None and found["version"] > len(records) - 3
        snapshot = store.snapshots.read(aggregate_uuid(start.task_id))
        assert snapshot is not None and snapshot.state == fold(records[:snapshot.version])
        assert fold(records) == TaskStore.load(store, start.task_id)
        assert shell.tasks.cached(start.task_id) is None  # it ended: the store has it, the cache does not
    finally:
        store.close()
