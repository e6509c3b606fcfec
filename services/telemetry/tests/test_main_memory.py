"""Without PostgreSQL (the ledger in memory) telemetry answers `tasks.list` and rebuilds its ledger as it does with
PostgreSQL: a rebuild refolds the stream and counts every call once, not twice."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.contracts.subjects import TELEMETRY_RPC, rpc_subject, subject_for, tenant_inbox
from agent_engine.runtime import embedded
from agent_engine.runtime.bus import MSG_ID, connect
from agent_engine.runtime.keyring import Keyring

pytestmark = pytest.mark.integration


def events(tenant: str) -> list[Envelope]:
    out = []
    for i, (kind, data) in enumerate([
            ("task.accepted", {"workflow": "triage", "input": {"question": "where is my parcel"}}),
            ("task.started", {"workflow": "triage", "revision": "r1"}),
            *((LlmCalled.TYPE, LlmCalled(dispatch_id="d", node="n", provider="anthropic", model="m", cost_usd="0.1",
                                         usage=Usage(input_tokens=1)).model_dump(mode="json")) for _ in range(3)),
            ("task.succeeded", {"status": "succeeded"})]):
        out.append(Envelope(id=f"{tenant}-{i}", source="test", type=kind, time=datetime.now(UTC), tenant=tenant,
                            task_id="t1", correlation_id="t1", data=data))
    return out


def test_tasks_list_and_rebuild_in_memory(tmp_path: Path, keyring: Keyring) -> None:
    server = embedded.start_nats(tmp_path / "nats", keyring=keyring)  # its own: no other telemetry answers
    tenant = f"t{uuid.uuid4().hex[:10]}"
    env = {k: v for k, v in os.environ.items() if k not in ("AE_POSTGRES_URL", "AE_POSTGRES_URL_FILE")}
    env["AE_NATS_URL"] = server.url

    sums: dict[str, Any] = {}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
        nc = await connect(server.url, "telemetry-test")

        async def ask(action: str, body: dict[str, Any], timeout: float = 2) -> dict[str, Any]:
            reply = await nc.request(rpc_subject(TELEMETRY_RPC, action), json.dumps(body).encode(), timeout=timeout)
            answer: dict[str, Any] = json.loads(reply.data)
            return answer

        try:
            js = nc.jetstream()
            await js.add_stream(name="AE_EVENTS", subjects=["ae.>"])
            for event in events(tenant):
                await js.publish(subject_for(event), event.to_bytes(), headers={MSG_ID: event.id})
            # the stream's last message deleted (as guardrails deletes a raw request): the refold never sees the
            # last sequence, and must still answer once the consumer has nothing more to give
            gone = await js.publish(f"ae.{tenant}.task.requested.x", b"{}")
            await js.delete_msg("AE_EVENTS", gone.seq)
            with open(tmp_path / "telemetry.log", "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "agent_engine.telemetry"], env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                listed: dict[str, Any] = {}
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    try:
                        listed = await ask("tasks.list", {"tenant": tenant})
                    except Exception:  # noqa: BLE001  not listening yet
                        await asyncio.sleep(0.3)
                        continue
                    if listed["tasks"] and listed["tasks"][0]["cost_usd"] == "0.3" and listed["tasks"][0][
                            "status"] == "succeeded":
                        break
                    await asyncio.sleep(0.3)
                rebuilt = await ask("ledger.rebuild", {}, timeout=60)
                sums["asked"] = await ask("ledger", {"tenants": [tenant]})  # cost by model and day of a tenant
                sums["bad"] = await ask("ledger", {"tenants": 7})
                # another tenant's credential asking for this tenant's sums gets its own (none) instead
                inbox = f"{tenant_inbox('intruder', 'viewer')}.{uuid.uuid4().hex}"  # where its answers may go
                replies = await nc.subscribe(inbox, max_msgs=1)
                await nc.publish(rpc_subject(TELEMETRY_RPC, "ledger", "intruder"),
                                 json.dumps({"tenants": [tenant]}).encode(), reply=inbox)
                sums["intruder"] = json.loads((await replies.next_msg(timeout=10)).data)
                return listed, rebuilt, await ask("ledger", {"tenant": tenant}), await ask("tasks.list", {})
            finally:
                proc.terminate()
                proc.wait(timeout=40)
        finally:
            await nc.close()

    try:
        listed, rebuilt, ledger, again = asyncio.run(scenario())
    finally:
        server.stop()
    task = listed["tasks"][0]
    assert (task["task_id"], task["workflow"], task["revision"], task["status"], task["cost_usd"]) == (
        "t1", "triage", "r1", "succeeded", "0.3")
    assert (rebuilt["rebuilt"], rebuilt["messages"], rebuilt["position"]) == (True, 6, 6)
    assert (ledger["calls"], ledger["cost_usd"]) == (3, "0.3")  # once, not twice
    assert again == listed
    assert sums["asked"]["tenants"] == {tenant: {k: v for k, v in ledger.items() if k not in ("tenant", "models",
                                                                                              "days")}}
    assert (ledger["models"], ledger["days"]) == (sums["asked"]["models"], sums["asked"]["days"])
    assert [(k, v["calls"], v["cost_usd"]) for k, v in sums["asked"]["models"].items()] == [("anthropic/m", 3, "0.3")]
    assert [v["calls"] for v in sums["asked"]["days"].values()] == [3]  # the events' one day
    assert sums["bad"] == {"error": "tenants must be a tenant name or a list of tenant names"}
    assert list(sums["intruder"]["tenants"]) == ["intruder"] and sums["intruder"]["models"] == {}
