"""The router shell's timer and outbox relay, with a fake store and bus (no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.deadlines import DeadlineIndex
from agent_engine.router.follower import Follower
from agent_engine.router.relay import Relay
from agent_engine.router.state import NodeState, TaskState
from agent_engine.router.store import aggregate_uuid, task_uuid

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def dispatched(task_id: str = "t1", node: str = "n1", attempt: int = 1, deadline: datetime = T0) -> Envelope:
    return Envelope(id=f"d-{task_id}-{node}-{attempt}", source="router", type="node.dispatched", time=T0,
                    tenant="acme", task_id=task_id, correlation_id=task_id,
                    data={"dispatch_id": f"{task_id}/{node}/{attempt}", "node": node, "attempt": attempt,
                          "deadline": deadline.isoformat(), "kind": "agent"})


def test_a_deadline_waits_while_results_may_still_be_queued() -> None:
    index = DeadlineIndex()
    index.observe(dispatched(deadline=T0))
    later = T0 + timedelta(seconds=5)
    assert index.expired(later, caught_up=False, read_through=None) == []
    assert index.expired(later, caught_up=False, read_through=T0 - timedelta(seconds=1)) == []
    assert len(index.expired(later, caught_up=False, read_through=T0 + timedelta(seconds=1))) == 1
    [due] = index.expired(later, caught_up=True, read_through=None)
    assert due.type == "node.deadline_expired" and due.data["dispatch_id"] == "t1/n1/1" and due.tenant == "acme"


def test_a_heartbeat_moves_the_deadline_by_the_node_timeout_and_only_for_its_dispatch() -> None:
    index = DeadlineIndex()
    index.observe(dispatched(deadline=T0 + timedelta(seconds=10)))  # a 10 s timeout
    beat = T0 + timedelta(seconds=8)
    assert index.heartbeat("acme", "t1", "n1", "t1/n1/1", beat)
    assert index.expired(T0 + timedelta(seconds=12), caught_up=True, read_through=None) == []
    assert len(index.expired(beat + timedelta(seconds=10), caught_up=True, read_through=None)) == 1
    # another dispatch of the node (an older attempt), another node, or an unknown task: no effect
    assert not index.heartbeat("acme", "t1", "n1", "t1/n1/0", beat + timedelta(seconds=5))
    assert not index.heartbeat("acme", "t1", "n9", "t1/n1/1", beat)
    assert not index.heartbeat("acme", "t9", "n1", "t1/n1/1", beat)
    assert not index.heartbeat("acme", "t1", "n1", "t1/n1/1", T0)  # never moves a deadline earlier
    assert not index.heartbeat("intruder", "t1", "n1", "t1/n1/1", beat + timedelta(seconds=5))  # not its tenant


def test_a_deadline_not_yet_passed_never_fires() -> None:
    index = DeadlineIndex()
    index.observe(dispatched(deadline=T0 + timedelta(minutes=1)))
    assert index.expired(T0, caught_up=True, read_through=T0) == []


def test_settled_nodes_and_finished_tasks_leave_the_index() -> None:
    index = DeadlineIndex()
    index.observe(dispatched(node="a"))
    index.observe(dispatched(node="b"))
    index.observe(Envelope(id="s", source="r", type="node.succeeded", time=T0, tenant="acme", task_id="t1",
                           correlation_id="t1", data={"node": "a"}))
    assert set(index.open) == {("t1", "b")}
    index.observe(Envelope(id="f", source="r", type="task.failed", time=T0, tenant="acme", task_id="t1",
                           correlation_id="t1", data={"status": "failed"}))
    assert index.open == {}


def test_sync_makes_the_index_match_the_stored_state() -> None:
    index = DeadlineIndex()
    index.observe(dispatched(node="stale"))
    state = TaskState(task_id="t1", tenant="acme", correlation_id="t1", status="running",
                      nodes={"stale": NodeState(status="succeeded"),
                             "live": NodeState(status="dispatched", attempts=2, dispatch_id="t1/live/2", deadline=T0)})
    index.sync(state)
    assert set(index.open) == {("t1", "live")} and index.open[("t1", "live")].attempt == 2


class FakeStore:
    def __init__(self) -> None:
        self.log: list[tuple[int, Envelope]] = []
        self.position = 0
        self.member: int | None = None
        self.landing: list[tuple[int, Envelope]] = []

    def notifications(self, after: int, limit: int) -> list[tuple[int, Envelope]]:
        return [n for n in self.log if n[0] > after][:limit]

    def relay_position(self, name: str) -> int:
        return self.position

    def set_relay_position(self, name: str, position: int, member: int | None = None) -> None:
        self.position, self.member = position, member

    def settled_end(self) -> int:
        """Waits for inserts in flight in a real store: here, one may land meanwhile (`landing`)."""
        self.log.extend(self.landing)
        self.landing = []
        return max((n for n, _ in self.log), default=0)

    def others(self, after: int, limit: int, skip: set[int]) -> tuple[int, list[Envelope]]:
        page = [n for n in self.log if n[0] > after][:limit]
        return (page[-1][0] if page else after), [r for n, r in page if n not in skip]


class FakeBus:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, record: Envelope) -> None:
        self.published.append(record.id)


def relay_with(store: FakeStore, bus: FakeBus) -> Relay:
    return Relay(bus, store)  # type: ignore[arg-type]


def test_relay_publishes_offered_records_in_order_and_saves_its_position() -> None:
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)
    records = [(i, dispatched(node=f"n{i}")) for i in (1, 2, 3)]

    async def go() -> None:
        await relay.step()  # reads the (empty) log: now in sync
        store.log.extend(records)
        relay.offer(records)
        await relay.step()
        await relay.step()

    asyncio.run(go())
    assert bus.published == [r.id for _, r in records]
    assert store.position == 3


def test_records_of_a_save_reported_as_failed_are_published_from_the_log() -> None:
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)

    async def go() -> None:
        await relay.step()
        store.log.append((1, dispatched(node="committed-anyway")))  # committed, but the save raised
        relay.resync()
        await relay.step()

    asyncio.run(go())
    assert bus.published == ["d-t1-committed-anyway-1"]


def test_another_routers_records_between_ours_are_left_to_it() -> None:
    """With several routers each publishes only what it committed: an id between this router's is another's."""
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)
    first, theirs, second = (1, dispatched(node="a")), (2, dispatched(node="theirs")), (3, dispatched(node="b"))

    async def go() -> None:
        await relay.step()
        store.log.extend([first, theirs, second])
        relay.offer([first])
        relay.offer([second])
        await relay.step()

    asyncio.run(go())
    assert bus.published == [first[1].id, second[1].id] and relay.position == 3


def test_an_idle_relay_moves_its_position_to_the_end_of_the_log_but_not_past_a_save_in_flight() -> None:
    """A dead router's tail is published from its saved position on: an idle relay keeps that tail short. While a
    save of its own is in flight the position stays, or that save's records could end up behind it."""
    store, bus = FakeStore(), FakeBus()
    relay = Relay(bus, store, member=lambda: 7)  # type: ignore[arg-type]

    async def go() -> None:
        await relay.step()  # in sync
        relay.begin()
        relay.log_end = 40  # others committed up to 40
        await relay.step()
        assert relay.position == 0
        relay.offer([(41, dispatched(node="mine"))])
        await relay.step()
        assert relay.position == 41 and bus.published == ["d-t1-mine-1"]
        relay.log_end = 50
        await relay.step()

    asyncio.run(go())
    assert relay.position == 50 and store.position == 50 and store.member == 7


def test_a_failed_save_holds_the_position_until_the_log_is_read_again() -> None:
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)

    async def go() -> None:
        await relay.step()
        relay.begin()
        store.log.append((5, dispatched(node="committed-anyway")))
        relay.failed()
        relay.log_end = 9
        await relay.step()  # reads the log: publishes what the save committed
        await relay.step()  # in sync, idle: moves up to the log's end

    asyncio.run(go())
    assert bus.published == ["d-t1-committed-anyway-1"] and relay.position == 9


def test_after_a_failed_save_the_log_is_read_once_inserts_in_flight_have_ended() -> None:
    """A save that raised may still commit (its transaction outlives the error): read before it ends, the log would
    not hold it, the relay would go in sync, and its idle move to the log's end would pass over it for good."""
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)

    async def go() -> None:
        await relay.step()
        relay.begin()
        store.landing.append((5, dispatched(node="committed-late")))  # commits while the relay waits
        relay.failed()
        relay.log_end = 9
        await relay.step()
        await relay.step()

    asyncio.run(go())
    assert bus.published == ["d-t1-committed-late-1"] and relay.position == 9


def test_a_save_whose_caller_was_cancelled_is_offered_when_its_thread_ends() -> None:
    """At stop the batch's task may be cancelled while its save goes on in a worker thread: the relay holds its
    position until it hears how the save ended, then publishes its records (or reads the log for them)."""
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)

    async def go() -> None:
        await relay.step()
        relay.begin()
        saving: asyncio.Future[list[tuple[int, Envelope]]] = asyncio.get_running_loop().create_future()
        saving.add_done_callback(relay.settled)
        relay.log_end = 9
        await relay.step()
        assert relay.position == 0  # a save in flight: no idle move past it
        saving.set_result([(4, dispatched(node="late"))])
        await asyncio.sleep(0)
        await relay.step()
        await relay.step()
        failing: asyncio.Future[list[tuple[int, Envelope]]] = asyncio.get_running_loop().create_future()
        relay.begin()
        failing.add_done_callback(relay.settled)
        failing.set_exception(ConnectionError("server closed the connection"))
        await asyncio.sleep(0)
        assert relay.unsettled and not relay.in_sync and not relay.saving

    asyncio.run(go())
    assert bus.published == ["d-t1-late-1"] and relay.position == 9


def test_a_stop_with_a_save_still_in_flight_keeps_its_member() -> None:
    """Its records are then another router's to publish (follower.py), once this one is gone."""
    store, bus = FakeStore(), FakeBus()
    relay = Relay(bus, store, member=lambda: 7)  # type: ignore[arg-type]
    relay.begin()
    relay.saved_member = 7
    asyncio.run(relay.run(stopped()))
    assert store.member == 7


def test_a_drained_stop_saves_no_member_and_an_undrained_one_keeps_it() -> None:
    """No member: no other router reads this relay's tail. A stop that could not publish keeps the member, so the
    tail goes out from another router once this one is gone."""
    store, bus = FakeStore(), FakeBus()
    relay = Relay(bus, store, member=lambda: 7)  # type: ignore[arg-type]
    store.log.append((1, dispatched()))
    relay.offer([(1, dispatched())])
    asyncio.run(relay.run(stopped()))
    assert bus.published == [dispatched().id] and store.position == 1 and store.member is None

    class GoneBus(FakeBus):
        async def publish(self, record: Envelope) -> None:
            raise ConnectionError("nats: connection closed")

    store, gone = FakeStore(), GoneBus()
    relay = Relay(gone, store, member=lambda: 7)  # type: ignore[arg-type]
    store.log.append((1, dispatched()))
    relay.offer([(1, dispatched())])
    relay.saved_member = 7  # saved while running
    asyncio.run(relay.run(stopped()))
    assert store.position == 0 and store.member == 7


def test_router_input_records_are_stored_but_never_published() -> None:
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)
    kept = dispatched()
    internal = kept.model_copy(update={"id": "in-1", "type": "router.input"})
    store.log.extend([(1, internal), (2, kept)])

    async def go() -> None:
        await relay.step()
        await relay.step()  # idle: now the position is saved

    asyncio.run(go())
    assert bus.published == [kept.id] and store.position == 2


def test_only_the_canonical_uuid_spelling_is_used_as_the_aggregate_id() -> None:
    canonical = "6f1c2a52-8e0b-4a3c-9d55-3b1f0e7a9c10"
    assert str(task_uuid(canonical)) == canonical
    for other in (canonical.upper(), canonical.replace("-", ""), "{" + canonical + "}"):
        assert task_uuid(other) != task_uuid(canonical)
    assert task_uuid("order-42") == task_uuid("order-42")




def test_a_scheduled_retry_becomes_a_retry_due_input_when_its_time_comes() -> None:
    index = DeadlineIndex()
    index.observe(Envelope(id="r", source="router", type="node.retry_scheduled", time=T0, tenant="acme",
                           task_id="t1", correlation_id="t1",
                           data={"node": "n1", "attempt": 2, "at": (T0 + timedelta(seconds=3)).isoformat(),
                                 "delay_s": 3.0, "reason": "retry"}))
    assert index.expired(T0 + timedelta(seconds=2), caught_up=True, read_through=None) == []
    [due] = index.expired(T0 + timedelta(seconds=3), caught_up=True, read_through=None)
    assert due.type == "node.retry_due" and due.data == {"node": "n1", "attempt": 2, "at": "2026-11-22T12:00:03Z"}
    index.observe(dispatched(attempt=2))  # the retry went out: now its deadline is what is watched
    assert index.open[("t1", "n1")].retry is False


def test_records_read_back_from_the_log_reach_the_deadline_index_without_undoing_heartbeats() -> None:
    """Another router's dispatch, read from the log, gets a deadline here too; our own dispatch read
    back keeps the deadline its heartbeats moved."""
    store, bus = FakeStore(), FakeBus()
    index = DeadlineIndex()
    relay = Relay(bus, store, observe=index.observe)  # type: ignore[arg-type]
    ours = dispatched(task_id="t1", deadline=T0 + timedelta(seconds=10))
    theirs = dispatched(task_id="t2", deadline=T0 + timedelta(seconds=10))
    index.observe(ours)
    assert index.heartbeat("acme", "t1", "n1", "t1/n1/1", T0 + timedelta(seconds=8))

    async def go() -> None:
        await relay.step()
        store.log.extend([(1, ours), (2, theirs)])  # theirs was committed by another router
        relay.resync()
        await relay.step()

    asyncio.run(go())
    due = index.expired(T0 + timedelta(seconds=12), caught_up=True, read_through=None)
    assert [e.task_id for e in due] == ["t2"]  # ours was extended to 18 s; theirs is overdue here too


def test_no_task_id_names_another_aggregate() -> None:
    """Found by the fuzz suite: the UUID keying a tenant's admission log, given as a task id, named the log;
    and a hashed id spelled out as a UUID named the task it was hashed from."""
    log = aggregate_uuid("tenant:victim")
    assert task_uuid(str(log)) != log
    hashed = task_uuid("order-42")
    assert task_uuid(str(hashed)) != hashed
    ours = "0b8a4f5e-77c2-4a61-9b1e-2f3c4d5e6f70"  # an RFC 4122 UUID as agentctl makes them: used as is
    assert str(task_uuid(ours)) == ours


def test_a_relay_stopped_right_after_a_commit_publishes_it_before_returning() -> None:
    """The drain on SIGTERM: nothing this router committed waits for the next start to be published."""
    store, bus = FakeStore(), FakeBus()
    relay = relay_with(store, bus)
    mine = [(1, dispatched(node="a")), (2, dispatched(node="b"))]
    others = (3, dispatched(node="another-routers"))  # committed by another router after ours
    store.log.extend([*mine, others])
    relay.offer(mine)
    stop = asyncio.Event()
    stop.set()  # the stop came before the relay's loop ever ran

    asyncio.run(relay.run(stop))
    assert bus.published == [r.id for _, r in mine]
    assert store.position == 2


def test_a_relay_whose_bus_is_gone_at_stop_gives_up_the_last_pass_and_returns() -> None:
    class GoneBus(FakeBus):
        async def publish(self, record: Envelope) -> None:
            raise ConnectionError("nats: connection closed")

    store, bus = FakeStore(), GoneBus()
    relay = relay_with(store, bus)
    store.log.append((1, dispatched()))
    relay.offer([(1, dispatched())])
    stop = asyncio.Event()
    stop.set()

    asyncio.run(asyncio.wait_for(relay.run(stop), 5))
    assert store.position == 0  # not published: the next start publishes it


def test_a_relay_that_cannot_read_its_position_at_start_keeps_trying_rather_than_ending() -> None:
    """PostgreSQL blinking as the router starts must not leave a router that commits and never publishes."""

    class BlinkingStore(FakeStore):
        tries = 0

        def relay_position(self, name: str) -> int:
            self.tries += 1
            if self.tries == 1:
                raise OSError("connection refused")
            return self.position

    store, bus = BlinkingStore(), FakeBus()
    relay = relay_with(store, bus)
    store.log.append((1, dispatched()))
    stop = asyncio.Event()

    async def go() -> None:
        running = asyncio.create_task(relay.run(stop))
        for _ in range(50):
            await asyncio.sleep(0.1)
            if bus.published:
                break
        stop.set()
        await running

    asyncio.run(go())
    assert store.tries == 2 and bus.published == [dispatched().id]


def test_the_follower_feeds_the_index_other_routers_records_and_skips_its_own() -> None:
    """Another router's dispatch reaches this router's deadline index (it fires here if that router dies); this
    router's own records, seen at commit, are not read again, and the relay learns how far the log goes."""
    store, bus = FakeStore(), FakeBus()
    seen: list[str] = []
    relay = relay_with(store, bus)
    follower = Follower(store, relay, observe=lambda r: seen.append(r.id))  # type: ignore[arg-type]
    follower.position = 1  # the router's start read the log through 1
    mine, theirs = (3, dispatched(node="mine")), (2, dispatched(node="theirs"))
    store.log.extend([(1, dispatched(node="before")), theirs, mine])
    follower.committed([mine])

    asyncio.run(follower.step())
    assert seen == ["d-t1-theirs-1"] and follower.position == 3 and relay.log_end == 3
    assert not follower.mine and not bus.published  # it publishes nothing of a live router's


def test_the_last_pass_at_stop_feeds_the_deadline_index_what_it_publishes() -> None:
    store, bus = FakeStore(), FakeBus()
    seen: list[str] = []
    relay = Relay(bus, store, observe=lambda r: seen.append(r.id))  # type: ignore[arg-type]
    others = (1, dispatched(node="another-routers"))
    mine = (2, dispatched(node="mine"))
    store.log.extend([others, mine])
    relay.offer([mine])

    asyncio.run(relay.run(stopped()))
    assert bus.published == [others[1].id, mine[1].id] and others[1].id in seen


def stopped() -> asyncio.Event:
    stop = asyncio.Event()
    stop.set()
    return stop
