"""`python -m agent_engine.telemetry` without a PostgreSQL URL still works: it says so and keeps the ledger in
memory, read from the whole stream."""

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

import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import LlmCalled, Usage
from agent_engine.contracts.subjects import TELEMETRY_RPC, rpc_subject, subject_for
from agent_engine.runtime import embedded
from agent_engine.runtime.bus import MSG_ID, connect
from agent_engine.runtime.keyring import Keyring

pytestmark = pytest.mark.integration


def test_without_a_postgres_url_the_ledger_is_kept_in_memory_with_a_warning(
        tmp_path: Path, keyring: Keyring) -> None:
    server = embedded.start_nats(tmp_path / "nats", keyring=keyring)  # its own: no other telemetry answers
    tenant = f"t{uuid.uuid4().hex[:10]}"
    log = tmp_path / "telemetry.log"
    env = {k: v for k, v in os.environ.items() if k not in ("AE_POSTGRES_URL", "AE_POSTGRES_URL_FILE")}
    env["AE_NATS_URL"] = server.url  # the test's platform credential (AE_NATS_CREDENTIAL) may do all it does

    async def scenario() -> dict[str, object]:
        nc = await connect(server.url, "telemetry-test")
        try:
            js = nc.jetstream()
            await js.add_stream(name="AE_EVENTS", subjects=["ae.>"])
            for i in range(3):
                call = LlmCalled(dispatch_id="d", node="n", provider="anthropic", model="m", cost_usd="0.1",
                                 usage=Usage(input_tokens=1))
                event = Envelope(id=f"{tenant}-{i}", source="test", type=LlmCalled.TYPE, time=datetime.now(UTC),
                                 tenant=tenant, task_id="t1", correlation_id="t1", data=call.model_dump(mode="json"))
                await js.publish(subject_for(event), event.to_bytes(), headers={MSG_ID: event.id})
            with open(log, "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "agent_engine.telemetry"], env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                answer: dict[str, object] = {}
                deadline = time.monotonic() + 30
                while answer.get("calls") != 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.3)
                    try:
                        reply = await nc.request(rpc_subject(TELEMETRY_RPC, "ledger"),
                                                 json.dumps({"tenant": tenant}).encode(), timeout=1)
                        answer = json.loads(reply.data)
                    except Exception:  # noqa: BLE001  not listening yet
                        continue
                return answer
            finally:
                proc.terminate()
                proc.wait(timeout=40)
        finally:
            await nc.close()

    try:
        answer = asyncio.run(scenario())
    finally:
        server.stop()
    assert (answer.get("calls"), answer.get("cost_usd")) == (3, "0.3")
    text = log.read_text()
    assert "AE_POSTGRES_URL is not set: the ledger is kept in memory" in text
    assert "reading the stream from its first message" in text
