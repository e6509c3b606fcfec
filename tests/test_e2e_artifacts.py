"""Artifacts, end to end over real NATS and PostgreSQL (issue 16 item 5): a tool reads a file of about 1 MiB
(over the 256 KiB an event may carry), the events carry only a reference, the next agent's prompt has the
content, `agentctl artifact get` returns the exact bytes, the same content read twice is stored once, and
another tenant's credential is refused by the server; forgetting the tenant deletes them. A large output with personal data in it is checked
by the output gate on its content and kept nowhere unredacted."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.artifacts import artifact_id, as_ref, dispatch_object

pytestmark = pytest.mark.e2e
EMAIL = b"jane.roe@example.org"


def _events(engine: Any, task_id: str) -> list[dict[str, Any]]:
    history = engine.agentctl("task", "history", task_id, "--json")
    assert history.returncode == 0, history.stderr
    return list(json.loads(history.stdout))


def _output(events: list[dict[str, Any]], node: str, kind: str = "node.succeeded") -> dict[str, Any]:
    return next(e["data"]["output"] for e in events if e["type"] == kind and e["data"].get("node") == node)


async def _bucket(engine: Any, tenant: str) -> tuple[int, bytes]:
    """How many artifacts the tenant's bucket names, and every byte stored in it (metadata and chunks)."""
    nc = await engine.connect()
    try:
        js, stream = nc.jetstream(), f"OBJ_ae_artifacts_{tenant}"
        info = await js.stream_info(stream, subjects_filter=f"$O.ae_artifacts_{tenant}.M.>")
        names, out, seq = len(info.state.subjects or {}), bytearray(), 0
        while seq < info.state.last_seq:
            try:
                msg = await js.get_msg(stream, seq=seq + 1, subject=f"$O.ae_artifacts_{tenant}.>", next=True)
            except Exception:  # noqa: BLE001  nothing after seq
                break
            out += msg.data or b""
            seq = msg.seq or seq + 1
        return names, bytes(out)
    finally:
        await nc.close()


def test_a_1_mib_tool_output_goes_on_by_reference_and_comes_back_exact(engine: Any, tenant: str, word: str,
                                                                        tmp_path: Path) -> None:
    assert engine.agentctl("tenant", "declare", tenant).returncode == 0  # its bucket open to the services
    assert engine.agentctl("workflow", "push", "tests/workflows/artifacts", "--tenant", tenant).returncode == 0
    name = f"log-{word}.txt"
    content = b"".join(f"line-{i:07d} the engine recorded one more step\n".encode() for i in range(22_000))
    assert len(content) > 1_000_000
    (engine.workspace / name).write_bytes(content)
    sub = engine.agentctl("submit", "artifacts", "--tenant", tenant, "--input", json.dumps({"file": name}))
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    engine.wait_for_status(task_id, "succeeded")

    events = _events(engine, task_id)
    read, again = _output(events, "read"), _output(events, "again")
    ref = as_ref(read["content"])
    assert ref is not None and ref.artifact == artifact_id(content) and ref.size == len(content)
    assert ref.media_type.startswith("text/plain") and ref.name == "read.content"
    assert read["bytes"] == len(content) and read["truncated"] is False  # small fields stay inline
    assert as_ref(again["content"]) is not None and again["content"]["artifact"] == ref.artifact
    assert b"line-0012345" not in json.dumps(events).encode()  # the events carry only the reference
    assert all(len(json.dumps(e)) < 256 * 1024 for e in events)

    # the next agent's prompt had both reads' content: the mock counts its input from the prompt's text
    done = next(e["data"] for e in events if e["type"] == "node.succeeded" and e["data"]["node"] == "summarise")
    assert done["usage"]["input_tokens"] >= 2 * len(content) // 4

    listed = json.loads(engine.agentctl("artifact", "list", "--task", task_id, "--json").stdout)
    assert [(row["artifact"], row["node"]) for row in listed] == [(ref.artifact, "read")]
    names, _ = asyncio.run(_bucket(engine, tenant))
    assert names == 1  # read twice, stored once

    out = tmp_path / "got.txt"
    got = engine.agentctl("artifact", "get", ref.artifact, "--tenant", tenant, "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == content
    own = engine.credential(tenant, "reader", "viewer")
    piped = engine.agentctl("--credential", own, "artifact", "get", ref.artifact)
    assert piped.returncode == 0 and piped.stdout.encode() == content

    stranger = engine.credential(f"{tenant}x", "peeker", "operator")
    refused = engine.agentctl("--credential", stranger, "artifact", "get", ref.artifact, "--tenant", tenant)
    assert refused.returncode == 1 and "may act for tenant" in refused.stderr
    refused = engine.agentctl("--credential", stranger, "artifact", "get", ref.artifact)  # its own: none there
    assert refused.returncode == 1 and "has no artifact" in refused.stderr

    bad = engine.agentctl("artifact", "get", "sha256:abc", "--tenant", tenant)
    assert bad.returncode == 1 and "is not an artifact id" in bad.stderr

    forgot = engine.agentctl("tenant", "forget", tenant, "--yes", "--json")
    assert forgot.returncode == 0 and json.loads(forgot.stdout)["artifacts_deleted"] == 1, forgot.stderr
    gone = engine.agentctl("artifact", "get", ref.artifact, "--tenant", tenant)
    assert gone.returncode == 1 and "has no artifact" in gone.stderr


def test_a_large_output_is_checked_on_its_content_and_kept_nowhere_unredacted(engine: Any, tenant: str, word: str) -> None:
    assert engine.agentctl("tenant", "declare", tenant).returncode == 0  # its bucket open to the services
    assert engine.agentctl("workflow", "push", "tests/workflows/artifacts-checked", "--tenant", tenant).returncode == 0
    name = f"customer-{word}.txt"
    filler = b"".join(f"note {i:06d}: the customer called about the invoice\n".encode() for i in range(6_000))
    content = filler + b"Reach Jane at " + EMAIL + b" before Friday.\n" + filler
    (engine.workspace / name).write_bytes(content)
    sub = engine.agentctl("submit", "artifacts-checked", "--tenant", tenant, "--input", json.dumps({"file": name}))
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    engine.wait_for_status(task_id, "succeeded")

    events = _events(engine, task_id)
    ref = as_ref(_output(events, "read")["content"])
    assert ref is not None and ref.artifact != artifact_id(content)
    redacted = engine.agentctl("artifact", "get", ref.artifact, "--tenant", tenant)
    assert redacted.returncode == 0, redacted.stderr
    assert "Reach Jane at [redacted:email] before Friday." in redacted.stdout
    assert redacted.stdout.encode() == content.replace(EMAIL, b"[redacted:email]")
    # the tool-runner stored the unredacted original as the dispatch's own copy (the gate deletes it, and must take
    # nothing from another record naming equal content), never as shared content
    dispatch_id = next(e["data"]["dispatch_id"] for e in events
                       if e["type"] == "node.dispatched" and e["data"].get("node") == "read")
    original = "sha256:" + dispatch_object(artifact_id(content), dispatch_id)
    shared = engine.agentctl("artifact", "get", artifact_id(content), "--tenant", tenant)
    assert shared.returncode == 1 and "has no artifact" in shared.stderr, shared.stderr
    for _ in range(50):  # the gate deletes the unredacted original once its answer is acked
        gone = engine.agentctl("artifact", "get", original, "--tenant", tenant)
        if gone.returncode == 1:
            break
        time.sleep(0.2)
    assert gone.returncode == 1 and "has no artifact" in gone.stderr
    names, stored = asyncio.run(_bucket(engine, tenant))
    assert names >= 1 and EMAIL not in stored and EMAIL not in json.dumps(events).encode()


def test_a_file_a_tool_writes_to_the_workspace_is_stored_as_an_artifact(engine: Any, tenant: str, word: str) -> None:
    assert engine.agentctl("tenant", "declare", tenant).returncode == 0  # its bucket open to the services
    assert engine.agentctl("workflow", "push", "tests/workflows/artifacts-files", "--tenant", tenant).returncode == 0
    name = f"notes/{word}.md"
    (engine.workspace / "notes").mkdir(exist_ok=True)
    (engine.workspace / name).write_bytes(b"# Notes\n")
    sub = engine.agentctl("submit", "artifacts-files", "--tenant", tenant, "--input",
                          json.dumps({"file": name, "text": "the engine wrote this"}))
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    engine.wait_for_status(task_id, "succeeded")

    listed = json.loads(engine.agentctl("artifact", "list", "--task", task_id, "--json").stdout)
    assert [(row["name"], row["node"], row["media_type"]) for row in listed] == [
        (name, "note", "text/plain; charset=utf-8")]
    got = engine.agentctl("artifact", "get", listed[0]["artifact"], "--tenant", tenant)
    assert got.returncode == 0 and got.stdout == "# Notes\nthe engine wrote this\n"
    assert _output(_events(engine, task_id), "note") == {"path": name, "bytes_written": 22, "size": 30}


def test_a_tenant_no_one_declared_gets_a_clear_error_for_a_large_output(engine: Any, tenant: str, word: str) -> None:
    """The services may use only the buckets of served tenants (runtime/auth.py): a tenant with no credential
    and no declaration runs its tasks, but a large output cannot be stored, and the node says how to fix it."""
    assert engine.agentctl("workflow", "push", "tests/workflows/artifacts", "--tenant", tenant).returncode == 0
    name = f"log-{word}.txt"
    (engine.workspace / name).write_bytes(b"one more step\n" * 10_000)  # over the 64 KiB threshold
    sub = engine.agentctl("submit", "artifacts", "--tenant", tenant, "--input", json.dumps({"file": name}))
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()
    engine.wait_for_status(task_id, "failed")
    failures = json.dumps([e["data"] for e in _events(engine, task_id) if e["type"] in ("node.errored", "node.failed")])
    assert f"tenant '{tenant}'" in failures and f"agentctl tenant declare {tenant}" in failures, failures
