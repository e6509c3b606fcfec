"""A client of a running engine over NATS, as end-to-end tests and benchmarks drive it: push a workflow,
submit tasks, query the router, wait for tasks to end."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from agent_engine.contracts.envelope import Envelope, command
from agent_engine.contracts.events import TaskRequested
from agent_engine.contracts.servers import server_list
from agent_engine.contracts.subjects import ROUTER_RPC, rpc_subject, subject_for
from agent_engine.runtime import workflows
from agent_engine.runtime.bus import MSG_ID, TASK_ID_HEADER, auth_options
from agent_engine.runtime.keyring import credential_from_env
from agent_engine.runtime.manifests import load
from agent_engine.runtime.streams import ensure_streams

SOURCE = "agent-engine-testkit"
TERMINAL = ("succeeded", "failed", "rejected", "cancelled")


def task_request(tenant: str, workflow: str, task_input: dict[str, Any], data_subject: str | None = None
                 ) -> Envelope:
    """A `task.requested` for a new task (a fresh task id)."""
    return command(TaskRequested(workflow=workflow, input=task_input, requested_by=SOURCE, data_subject=data_subject),
                   tenant=tenant, task_id=str(uuid.uuid4()), source=SOURCE)


@dataclass
class Successes:
    """A tenant's node.succeeded events as they arrive: `count` so far, `reached` once `goal` have been seen."""

    goal: int
    count: int = 0
    reached: asyncio.Event = field(default_factory=asyncio.Event)


class EngineClient:
    """What tests and benchmarks do to a running engine over NATS: push, submit, query, wait.

    A subclass gives `nats_url` (one URL, or a cluster's, comma-separated) and `example`, the workflow directory
    `push` and `run_to_end` use by default."""

    nats_url: str
    example: Path

    async def connect(self) -> Client:
        async def quiet(_: Exception) -> None:  # reconnects during a NATS restart are expected
            return None

        nc = await nats.connect(server_list(self.nats_url), max_reconnect_attempts=-1, reconnect_time_wait=0.3,
                                error_cb=quiet, **auth_options(credential_from_env()))
        await ensure_streams(nc.jetstream())
        return nc

    async def push(self, nc: Client, tenant: str, directory: Path | None = None) -> str:
        loaded = load(directory or self.example)
        assert not loaded.errors and loaded.manifest is not None, loaded.errors
        await workflows.push(await workflows.bucket(nc.jetstream()), tenant, loaded.revision, loaded.manifest)
        return loaded.manifest.name

    async def submit(self, nc: Client, tenant: str, workflow: str, task_input: dict[str, Any],
                     data_subject: str | None = None) -> str:
        envelope = task_request(tenant, workflow, task_input, data_subject)
        await self.publish(nc, envelope)
        return envelope.task_id

    async def publish(self, nc: Client, envelope: Envelope) -> None:
        """Publish a request to its stream; publishing the same envelope again is deduplicated by its id."""
        await nc.jetstream().publish(subject_for(envelope), envelope.to_bytes(),
                                     headers={MSG_ID: envelope.id, TASK_ID_HEADER: envelope.task_id})

    async def start_tasks(self, nc: Client, tenant: str, count: int, under_way: int | None = None,
                          ) -> tuple[list[str], Successes]:
        """Push the example, submit `count` tasks and count their nodes' successes as they come (`reached` once
        `under_way` have succeeded, by default `count`: about one node per task, the rest still in flight)."""
        seen = Successes(count if under_way is None else under_way)

        async def counted(_msg: Any) -> None:
            seen.count += 1
            if seen.count >= seen.goal:
                seen.reached.set()

        await nc.subscribe(f"ae.{tenant}.node.succeeded", cb=counted)
        workflow = await self.push(nc, tenant)
        ids = [await self.submit(nc, tenant, workflow, {"brief": f"task {i}"}) for i in range(count)]
        return ids, seen

    async def query(self, nc: Client, action: str, task_id: str) -> dict[str, Any]:
        msg = await nc.request(rpc_subject(ROUTER_RPC, action), json.dumps({"task_id": task_id}).encode(), timeout=10)
        return dict(json.loads(msg.data))

    async def history(self, nc: Client, task_id: str) -> list[Envelope]:
        return [Envelope.model_validate(e) for e in (await self.query(nc, "task.history", task_id))["events"]]

    async def statuses(self, nc: Client, task_ids: list[str]) -> dict[str, str]:
        out = {}
        for task_id in task_ids:
            try:
                out[task_id] = (await self.query(nc, "task.show", task_id)).get("status", "unknown")
            except Exception:  # noqa: BLE001  router or NATS restarting: unknown for now
                out[task_id] = "unknown"
        return out

    async def run_to_end(self, tenant: str, task_input: dict[str, Any], directory: Path | None = None
                         ) -> tuple[str, list[Envelope]]:
        """Push a workflow, submit one task, wait for it to end: its status and stored history."""
        nc = await self.connect()
        try:
            workflow = await self.push(nc, tenant, directory)
            task_id = await self.submit(nc, tenant, workflow, task_input)
            status = await self.wait_terminal(nc, [task_id])
            return status[task_id], await self.history(nc, task_id)
        finally:
            await nc.close()

    async def show(self, nc: Client, task_id: str) -> dict[str, Any]:
        return await self.query(nc, "task.show", task_id)

    async def wait_terminal(self, nc: Client, task_ids: list[str], timeout: float = 90) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        done: dict[str, str] = {}
        while time.monotonic() < deadline:
            pending = [t for t in task_ids if t not in done]
            for task_id, status in (await self.statuses(nc, pending)).items():
                if status in TERMINAL:
                    done[task_id] = status
            if len(done) == len(task_ids):
                break
            await asyncio.sleep(0.5)
        return {t: done.get(t, "unfinished") for t in task_ids}
