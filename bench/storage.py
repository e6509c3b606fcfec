"""What the router stores per finished task of bench/workflows/linear5 (five agent nodes in a line, mock provider).

Runs a whole engine (bench/cluster.py: NATS and PostgreSQL owned by this process, the five services as OS
processes), submits `--tasks` tasks of linear5 at most `--inflight` at a time, waits until every one ended, then
reads from PostgreSQL: the bytes of the stored (sealed) rows of the router's events table per task, the table's
`pg_total_relation_size` (heap, TOAST and indexes) per task, and, opened with the stack's master key, the JSON
bytes of each record type per task (which records hold what).

linear5's mock answers `{}`; `--output-bytes N` runs a copy of it whose mock answers every node with an output of
about N bytes (`{"text": "..."}`), as a model's answer would be.

Run it with the interpreter of the build to measure (a checkout's own .venv): the services it starts are that
build's, so two builds are compared on the same machine by running it once with each.

    python bench/storage.py [--tasks 200] [--inflight 16] [--output-bytes 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cluster import Cluster

from agent_engine.cli.stack import MASTER_KEY_ENV, SERVICES
from agent_engine.router.store import TaskStore
from bench import WORKFLOW, machine

TABLE = "router_events"


def with_outputs(root: Path, size: int) -> Path:
    """A copy of linear5 whose mock answers each node with `{"text": ...}` of `size` bytes (linear5 itself: 0)."""
    if size <= 0:
        return WORKFLOW
    copy = root / "linear5"
    shutil.copytree(WORKFLOW, copy)
    (copy / "mock").mkdir()
    for node in ("n1", "n2", "n3", "n4", "n5"):
        text = (f"{node} answers: " + "lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
        (copy / "mock" / f"{node}.json").write_text(json.dumps({"text": text}))
    return copy


async def run_tasks(cluster: Cluster, tasks: int, inflight: int, directory: Path = WORKFLOW) -> list[str]:
    nc = await cluster.connect()
    try:
        tenant = f"store{uuid.uuid4().hex[:8]}"
        workflow = await cluster.push(nc, tenant, directory)
        ids: list[str] = []
        while len(ids) < tasks:
            batch = [await cluster.submit(nc, tenant, workflow, {"brief": f"task {len(ids) + i}"})
                     for i in range(min(inflight, tasks - len(ids)))]
            ended = await cluster.wait_terminal(nc, batch, timeout=300)
            bad = {t: s for t, s in ended.items() if s != "succeeded"}
            if bad or len(ended) != len(batch):
                raise RuntimeError(f"tasks did not all succeed: {bad or 'some never ended'}")
            ids += batch
        return ids
    finally:
        await nc.close()


def measure(url: str, ids: list[str]) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        rows, stored = conn.execute(f"SELECT count(*), sum(octet_length(state)) FROM {TABLE}").fetchone() or (0, 0)
        relation = conn.execute(f"SELECT pg_total_relation_size('{TABLE}')").fetchone()
    store = TaskStore(url)
    by_type: Counter[str] = Counter()
    count: Counter[str] = Counter()
    try:
        for task_id in ids:
            for record in store.records(task_id):
                by_type[record.type] += len(record.to_bytes())
                count[record.type] += 1
    finally:
        store.close()
    n = len(ids)
    return {"tasks": n, "rows": rows, "rows_per_task": rows / n,
            "stored_bytes_per_task": round(int(stored or 0) / n),
            "relation_bytes_per_task": round((relation[0] if relation else 0) / n),
            "json_bytes_per_task": round(sum(by_type.values()) / n),
            "json_bytes_per_task_by_type": {t: round(b / n) for t, b in by_type.most_common()},
            "records_per_task_by_type": {t: count[t] / n for t in by_type}}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--output-bytes", type=int, default=0, help="each node's mock output (0: linear5's, `{}`)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ae-storage-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            await cluster.wait_ready(SERVICES)
            ids = await run_tasks(cluster, args.tasks, args.inflight, with_outputs(Path(tmp), args.output_bytes))
            os.environ.setdefault(MASTER_KEY_ENV, str(Path(tmp) / "home" / "master.key"))  # the stack's, to open them
            assert cluster.postgres is not None
            figures = {"machine": machine(), "workflow": "bench/workflows/linear5", "output_bytes": args.output_bytes,
                       **measure(cluster.postgres.url, ids)}
        finally:
            cluster.stop()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
