"""While a ledger rebuild runs, telemetry still answers its other queries (review of issue #16).

`ledger.rebuild` is answered only once the refold caught up (__main__.rebuild_asked awaits `Rebuild.ask`). It was
awaited inside the query callback, and nats-py runs one subscription's callbacks one after another: until the
rebuild ended, every other platform query (the dashboard's task list and cost pages, `agentctl cost`, the
agent-runner's `by_score` figures) waited behind it and timed out. Shown deterministically: the rebuild is held at
its reset by a lock on the position table, and a `tasks.list` (which reads another table) is asked meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from agent_engine.contracts.subjects import TELEMETRY_RPC, rpc_subject
from agent_engine.runtime import embedded
from agent_engine.runtime.bus import connect
from agent_engine.runtime.keyring import Keyring

pytestmark = pytest.mark.integration


def test_tasks_list_is_answered_while_a_rebuild_waits(tmp_path: Path, keyring: Keyring, postgres_url: str) -> None:
    database = f"review_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    url = make_conninfo(postgres_url, dbname=database)
    server = embedded.start_nats(tmp_path / "nats", keyring=keyring)  # its own: no other telemetry answers
    env = {k: v for k, v in os.environ.items() if k != "AE_POSTGRES_URL_FILE"}
    env.update(AE_NATS_URL=server.url, AE_POSTGRES_URL=url)

    async def scenario() -> dict[str, Any] | str:
        nc = await connect(server.url, "telemetry-test")

        async def ask(action: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
            reply = await nc.request(rpc_subject(TELEMETRY_RPC, action), json.dumps(body).encode(), timeout=timeout)
            answer: dict[str, Any] = json.loads(reply.data)
            return answer

        try:
            await nc.jetstream().add_stream(name="AE_EVENTS", subjects=["ae.>"])
            with open(tmp_path / "telemetry.log", "ab") as out:
                proc = subprocess.Popen([sys.executable, "-m", "agent_engine.telemetry"], env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 60
                while True:  # until it listens (and has made its tables)
                    try:
                        await ask("tasks.list", {}, 2)
                        break
                    except Exception:  # noqa: BLE001  not listening yet
                        assert time.monotonic() < deadline, (tmp_path / "telemetry.log").read_text()[-2000:]
                        await asyncio.sleep(0.3)
                with psycopg.connect(url) as holder:  # the rebuild's reset waits for this lock
                    holder.execute("LOCK TABLE ae_ledger_position IN ACCESS EXCLUSIVE MODE")
                    rebuild = asyncio.ensure_future(ask("ledger.rebuild", {}, 120))
                    await asyncio.sleep(0)  # the rebuild request goes out first
                    try:
                        return await ask("tasks.list", {}, 15)
                    except Exception as exc:  # noqa: BLE001
                        return f"tasks.list not answered while the rebuild waited: {type(exc).__name__}"
                    finally:
                        holder.rollback()
                        await asyncio.wait_for(rebuild, 120)
            finally:
                proc.terminate()
                proc.wait(timeout=40)
        finally:
            await nc.close()

    try:
        answered = asyncio.run(scenario())
    finally:
        server.stop()
    assert isinstance(answered, dict) and answered == {"tasks": []}, answered
