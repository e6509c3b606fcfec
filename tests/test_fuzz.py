"""Hostile traffic on every subject the services consume, from another system on the bus: every message
is answered (rejected, dead-lettered with a reason, or applied), no service exits, the victim tenant's
real tasks all succeed, and nothing of one tenant's tasks shows up in the other's.

    AE_FUZZ_MESSAGES=N   messages to publish (default 1500; 10000 for the long run)
    AE_FUZZ_SEED=S       the seed (default: a fixed one, so `make test` is repeatable; `make faults` draws a
                         fresh one each run; either is printed and named in any failure)
    AE_FUZZ_ONLY=n,m     publish only these message numbers of the seed's corpus (to reproduce one)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_accounts import (  # tests/ is not a package: found through the path above
    OBSERVED_SUBJECTS,
    Histories,
    Observer,
    Problem,
    Sent,
    envelopes_in,
    foreign_records,
    history_wanted,
    json_object,
    report,
    runner_tenant_leak,
    verdict,
)
from fuzz_corpus import FUZZ_HEADER, Fuzz, World, corpus, parse_envelope, subject_tenant

pytestmark = pytest.mark.e2e

DEFAULT_SEED = 20261203
BATCH = 64
QUERY_TIMEOUT_S = 5.0
TERMINAL = ("succeeded", "failed", "rejected", "cancelled")
SERVICES = ("guardrails", "router", "agent-runner", "tool-runner", "telemetry")


class Stack(Protocol):
    async def connect(self) -> Any: ...

    async def push(self, nc: Any, tenant: str) -> str: ...

    def pids(self) -> dict[str, int]: ...


def _settings() -> tuple[int, int, list[int] | None]:
    seed = int(os.environ.get("AE_FUZZ_SEED") or DEFAULT_SEED)
    count = int(os.environ.get("AE_FUZZ_MESSAGES") or 1500)
    only = os.environ.get("AE_FUZZ_ONLY")
    return seed, count, [int(n) for n in only.split(",") if n.strip()] if only else None


def test_hostile_bus_traffic_is_answered_and_changes_nothing(own_stack: Callable[..., Any], tmp_path: Path) -> None:
    seed, count, only = _settings()
    print(f"fuzz: seed {seed}, {count} messages (repeat with AE_FUZZ_SEED={seed} AE_FUZZ_MESSAGES={count})")
    world = World.for_seed(seed)
    started = time.monotonic()
    problems = asyncio.run(Campaign(own_stack(AE_TENANT_LIMITS=world.limits()), world, count, only).run())
    print(f"fuzz: done in {time.monotonic() - started:.1f}s, {len(problems)} problem(s)")
    text = report(problems, world, count)
    (tmp_path / "fuzz-report.txt").write_text(text)
    assert not problems, f"{text}\n(full report: {tmp_path / 'fuzz-report.txt'})"


class Campaign:
    """One run: the victim's real tasks, the corpus around them, then the accounts."""

    def __init__(self, stack: Stack, world: World, count: int, only: list[int] | None) -> None:
        self.stack = stack
        self.world = world
        self.count = count
        self.fuzzes = corpus(world, count, only)
        self.sent: dict[int, Sent] = {}
        self.observer = Observer(world.victim)
        self.histories: Histories = {}
        self.accounted: set[int] = set()
        self.nc: Any = None
        self.limit = asyncio.Semaphore(32)
        self.started = time.monotonic()

    async def run(self) -> list[Problem]:
        self.nc = await self.stack.connect()
        try:
            return await self._run()
        finally:
            await self.nc.close()

    async def _run(self) -> list[Problem]:
        js = self.nc.jetstream(timeout=30)
        await self._observe(js)
        await self.stack.push(self.nc, self.world.victim)
        before = self.stack.pids()
        half = len(self.world.victim_tasks) // 2
        queries: list[asyncio.Task[None]] = []
        await self._submit_victims(js, range(half))
        await self._publish(js, [f for f in self.fuzzes if f.n < self.count // 2], queries)
        await self._submit_victims(js, range(half, len(self.world.victim_tasks)))
        await self._publish(js, [f for f in self.fuzzes if f.n >= self.count // 2], queries)
        await asyncio.gather(*queries)
        self._phase("published")
        statuses = await self._settle()
        self._phase("settled")
        problems = self._unaccounted()
        problems += self._services(before, self.stack.pids())
        problems += [Problem("victim", f"victim task {t} ended {s}, not succeeded")
                     for t, s in statuses.items() if s != "succeeded"]
        problems += await self._isolation()
        problems += await self._telemetry()
        self._phase("checked")
        return problems

    def _phase(self, name: str) -> None:
        print(f"fuzz: {name} after {time.monotonic() - self.started:.1f}s")

    # --- traffic ---

    async def _observe(self, js: Any) -> None:
        async def on_event(msg: Any) -> None:
            self.observer.on_event(msg.subject, dict(msg.headers or {}), msg.data)

        async def on_dead_letter(msg: Any) -> None:
            self.observer.on_dead_letter(msg.subject, dict(msg.headers or {}), msg.data)

        for subject in OBSERVED_SUBJECTS:
            await js.subscribe(subject, cb=on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        await js.subscribe("aedlq.>", cb=on_dead_letter, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)

    async def _submit_victims(self, js: Any, indexes: Iterable[int]) -> None:
        """Submit real tasks and wait until the router has them, so forgeries name tasks that exist."""
        tasks = []
        for i in indexes:
            body, headers = self.world.victim_request(i)
            await js.publish(f"ae.{self.world.victim}.task.requested", body, headers=headers)
            tasks.append(self.world.victim_tasks[i])
        deadline = time.monotonic() + 30
        while tasks and time.monotonic() < deadline:
            tasks = [t for t in tasks if (await self._show(t)).get("status") is None]
            await asyncio.sleep(0.2)
        assert not tasks, f"the router never started the victim's tasks {tasks}"

    async def _publish(self, js: Any, fuzzes: list[Fuzz], queries: list[asyncio.Task[None]]) -> None:
        # queries wait up to 5 s for a reply: they run beside the publishing rather than hold up its batches
        queries += [asyncio.create_task(self._ask(f)) for f in fuzzes if f.kind == "query"]
        published = [f for f in fuzzes if f.kind != "query"]
        for start in range(0, len(published), BATCH):
            await asyncio.gather(*(self._send(js, f) for f in published[start:start + BATCH]))

    async def _send(self, js: Any, fuzz: Fuzz) -> None:
        sent = self.sent[fuzz.n] = Sent(fuzz)
        headers = {**fuzz.headers, FUZZ_HEADER: str(fuzz.n)}
        try:
            if fuzz.kind == "heartbeat":
                await self.nc.publish(fuzz.subject, fuzz.body, headers=headers)
                return
            ack = await js.publish(fuzz.subject, fuzz.body,
                                   headers={**headers, "Nats-Msg-Id": f"fuzz-{self.world.seed}-{fuzz.n}"})
            sent.seq = ack.seq
            if ack.duplicate:
                sent.error = "JetStream took it for a duplicate"
        except Exception as exc:  # noqa: BLE001  recorded: the accounts report it with the message
            sent.error = f"{type(exc).__name__}: {exc}"

    async def _ask(self, fuzz: Fuzz) -> None:
        sent = self.sent[fuzz.n] = Sent(fuzz)
        async with self.limit:
            try:
                msg = await self.nc.request(fuzz.subject, fuzz.body, timeout=QUERY_TIMEOUT_S,
                                            headers={FUZZ_HEADER: str(fuzz.n)})
                sent.reply = msg.data
            except NatsTimeoutError:
                sent.error = f"no reply within {QUERY_TIMEOUT_S:g} s"
            except NoRespondersError:
                sent.error = "no responders: nobody serves the subject"
            except Exception as exc:  # noqa: BLE001
                sent.error = f"request failed: {type(exc).__name__}: {exc}"

    # --- queries of our own ---

    async def _rpc(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            msg = await self.nc.request(subject, json.dumps(body).encode(), timeout=10)
        except Exception:  # noqa: BLE001  an unanswered query reads as "nothing known"
            return {}
        return json_object(msg.data) or {}

    async def _show(self, task_id: str) -> dict[str, Any]:
        return await self._rpc("aerpc.router.task.show", {"task_id": task_id, "tenant": self.world.victim})

    async def _history(self, task_id: str, tenant: str) -> list[dict[str, Any]]:
        async with self.limit:
            events = (await self._rpc("aerpc.router.task.history", {"task_id": task_id, "tenant": tenant})).get("events")
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    async def _fetch(self, keys: Iterable[tuple[str, str]]) -> None:
        keys = list(set(keys))
        found = await asyncio.gather(*(self._history(task, tenant) for task, tenant in keys))
        self.histories.update(zip(keys, found, strict=True))

    # --- waiting for the outcomes ---

    async def _settle(self) -> dict[str, str]:
        """Poll the accounts and the victim's tasks until everything is in or the deadline passes."""
        deadline = time.monotonic() + 30 + len(self.fuzzes) / 100
        statuses: dict[str, str] = {}
        next_fetch = time.monotonic()
        while True:
            open_ = self._open()
            for task in self.world.victim_tasks:
                if statuses.get(task) not in TERMINAL:
                    statuses[task] = str((await self._show(task)).get("status", "unknown"))
            done = not open_ and all(s in TERMINAL for s in statuses.values())
            if done or time.monotonic() > deadline:
                break
            if time.monotonic() >= next_fetch:  # histories are costly for the router: every 3 s at most
                await self._fetch(k for s in open_ for k in history_wanted(s, self.observer))
                next_fetch = time.monotonic() + 3
            await asyncio.sleep(1)
        await self._fetch(k for s in self._open() for k in history_wanted(s, self.observer))
        return statuses

    def _open(self) -> list[Sent]:
        """Messages not accounted for yet; once accounted for, a message stays so."""
        pending = []
        for n, sent in self.sent.items():
            if n in self.accounted:
                continue
            if verdict(sent, self.observer, self.histories) is None:
                self.accounted.add(n)
            else:
                pending.append(sent)
        return pending

    # --- the checks ---

    def _unaccounted(self) -> list[Problem]:
        problems = []
        for sent in sorted(self._open(), key=lambda s: s.fuzz.n):
            observed = verdict(sent, self.observer, self.histories)
            problems.append(Problem("unaccounted", observed or "", sent.fuzz))
        for sent in sorted(self.sent.values(), key=lambda s: s.fuzz.n):
            leak = runner_tenant_leak(sent, self.observer)
            if leak:
                problems.append(Problem("isolation", leak, sent.fuzz))
        return problems

    @staticmethod
    def _services(before: dict[str, int], after: dict[str, int]) -> list[Problem]:
        problems = [Problem("service", f"{name} was not running when the fuzzing began")
                    for name in SERVICES if name not in before]
        problems += [Problem("service", f"{name} (pid {pid}) exited; now {after.get(name, 'not running')}")
                     for name, pid in before.items() if after.get(name) != pid]
        return problems

    async def _isolation(self) -> list[Problem]:
        world = self.world
        problems: list[Problem] = []
        victim_ids: set[str] = set()
        for task in (*world.victim_tasks, f"tenant:{world.victim}"):
            events = await self._history(task, world.victim)
            victim_ids.update(str(e["id"]) for record in events for e in envelopes_in(record))
            problems += [Problem("isolation", f"victim task {task}: {line}")
                         for line in foreign_records(events, world.victim, set(), set())]
        for task, events in (await self._intruder_histories()).items():
            problems += [Problem("isolation", f"intruder task {task}: {line}")
                         for line in foreign_records(events, world.intruder, set(world.victim_tasks), victim_ids)]
        return problems

    async def _intruder_histories(self) -> dict[str, list[dict[str, Any]]]:
        """The stored history of every task the intruder's traffic created, once each has come to rest."""
        created = set()
        for sent in self.sent.values():
            env = parse_envelope(sent.fuzz.body) if sent.fuzz.kind in ("request", "router") else None
            if env and env.tenant == self.world.intruder == subject_tenant(sent.fuzz.subject):
                created.add(env.task_id)
        created -= set(self.world.victim_tasks)
        tasks = sorted(created)
        deadline = time.monotonic() + 15
        while True:
            histories = dict(zip(tasks, await asyncio.gather(*(self._history(t, self.world.intruder) for t in tasks)),
                                 strict=True))
            moving = [t for t, h in histories.items() if h and not _at_rest(h)]
            if not moving or time.monotonic() > deadline:
                return {t: h for t, h in histories.items() if h}
            tasks = moving
            await asyncio.sleep(1)

    async def _telemetry(self) -> list[Problem]:
        """Telemetry kept consuming (it counted every message), and no tenant's forged llm.called reached
        the ledger of another tenant's task."""
        noise = sum(1 for s in self.sent.values() if s.fuzz.subject.endswith(".fuzz.noise") and s.seq)
        # a subject of no event type is counted as "other" (a client cannot grow telemetry's table)
        wanted = {"other": noise, "llm.called": self.observer.llm_called_messages}
        counted: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            counted = (await self._rpc("aerpc.telemetry.ledger", {})).get("messages_by_subject") or {}
            if all(counted.get(k, 0) >= v for k, v in wanted.items()):
                break
            await asyncio.sleep(1)
        problems = [Problem("telemetry", f"telemetry counted {counted.get(k, 0)} of the {v} messages on ae.*.{k}: "
                                         "its consumer fell behind or stopped")
                    for k, v in wanted.items() if counted.get(k, 0) < v]
        for task in self.world.victim_tasks:
            ledger = await self._rpc("aerpc.telemetry.ledger", {"task_id": task, "tenant": self.world.victim})
            logged = {str(c.get("event_id")) for c in ledger.get("call_log", []) if isinstance(c, dict)}
            forged = logged - self.observer.victim_llm_calls.get(task, set())
            if forged:
                problems.append(Problem("isolation", f"the ledger of victim task {task} counts {len(forged)} "
                                                     f"llm.called event(s) of another tenant: {sorted(forged)[:3]}"))
        return problems


def _at_rest(events: list[dict[str, Any]]) -> bool:
    """Whether a task's history shows it ended (or never started): nothing more will be recorded."""
    types = {e.get("type") for e in events}
    return "task.started" not in types or bool(types & {f"task.{s}" for s in TERMINAL})
