"""Output checks, end to end over real NATS and PostgreSQL: a tool's output carrying an email address and a
phone number (a customer file it read) reaches the next node and the store redacted, and the raw values are nowhere (not in the task's
stored history, the database, any stream message or any service's log); a reply touching a topic the
workflow holds for a person waits until `agentctl approve`."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from agent_engine.testkit.leaks import everything_in_the_database, everything_on_the_bus

pytestmark = pytest.mark.e2e
LETTERS = str.maketrans("0123456789", "ghijklmnop")
WORKFLOW = "tests/workflows/output-checks"
RAW = (b"jane.roe@example.org", b"7946 0321")


def _node(shown: dict, node: str) -> dict:
    return next(n for n in shown["nodes"] if n["node"] == node)


def test_personal_data_in_an_output_is_redacted_and_a_held_topic_waits_for_a_person(engine, servers, tenant):
    assert engine.agentctl("workflow", "push", WORKFLOW, "--tenant", tenant).returncode == 0
    # letters only: eight random hex digits are sometimes all digits, which the input checks redact as a phone
    name = f"customer-{uuid.uuid4().hex[:8].translate(LETTERS)}.txt"
    (engine.workspace / name).write_bytes(b"Reach Jane at " + RAW[0] + b" or +44 20 " + RAW[1] + b" before Friday.")
    sub = engine.agentctl("submit", "output-checks", "--tenant", tenant, "--input", json.dumps({"file": name}))
    assert sub.returncode == 0, sub.stderr
    task_id = sub.stdout.strip()

    waiting = engine.wait_for_status(task_id, "waiting")
    assert _node(waiting, "read")["output"]["content"] == "Reach Jane at [redacted:email] or [redacted:phone] before Friday."
    advise = _node(waiting, "advise")
    assert advise["status"] == "awaiting_approval" and advise["paused"] == "guardrail"
    approved = engine.agentctl("--credential", engine.credential(tenant, "alice"), "approve", task_id, "advise")
    assert approved.returncode == 0, approved.stderr
    done = engine.wait_for_status(task_id, "succeeded")
    assert _node(done, "advise")["output"] == {"text": "Wait for the diagnosis before replying."}

    history = engine.agentctl("task", "history", task_id, "--json").stdout
    verdicts = [e["data"] for e in json.loads(history) if e["type"] == "node.approval_requested"]
    assert verdicts[0]["pause"] == "guardrail" and "topic.medical x1" in verdicts[0]["reason"]
    tail = engine.agentctl("tail", "--task", task_id, "--type", "guardrail.verdict", "--no-follow", "--json")
    seen = [json.loads(line)["data"] for line in tail.stdout.splitlines() if line.strip()]
    assert {(v["gate"], v["outcome"]) for v in seen} >= {("output", "redacted"), ("output", "paused")}

    stored = history.encode()
    bus = asyncio.run(everything_on_the_bus(engine))
    dump = everything_in_the_database(servers["postgres"])
    assert len(dump) > 1000
    logs = b"".join(log.read_bytes() for log in (engine.home / "logs").glob("*.log"))
    for raw in RAW:
        assert raw not in stored and raw not in bus and raw not in logs and raw not in dump



def test_a_tenant_listed_in_ae_output_checks_has_every_output_checked(own_stack, tmp_path):
    """AE_OUTPUT_CHECKS makes the output gate a tenant's, not a workflow's choice: a workflow that asks for no
    checks has its outputs checked under the tenant's section of the policy file; another tenant's are not."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("tenants:\n  careful:\n    output: {pii: redact}\n")
    engine = own_stack(AE_GUARDRAILS_POLICY=str(policy), AE_OUTPUT_CHECKS="careful")
    (engine.workspace / "card.txt").write_bytes(b"Reach Jane at " + RAW[0] + b".")
    content = {}
    for tenant in ("careful", "casual"):
        assert engine.agentctl("workflow", "push", "tests/workflows/read-file", "--tenant", tenant).returncode == 0
        sub = engine.agentctl("submit", "read-file", "--tenant", tenant, "--input", '{"file": "card.txt"}')
        assert sub.returncode == 0, sub.stderr
        done = engine.wait_for_status(sub.stdout.strip(), "succeeded")
        content[tenant] = _node(done, "read")["output"]["content"]
    assert content == {"careful": "Reach Jane at [redacted:email].", "casual": "Reach Jane at jane.roe@example.org."}


def test_an_output_the_gate_cannot_read_is_dead_lettered_without_its_personal_data(engine, tenant):
    """A runner's node.output_produced guardrails cannot read goes to AE_DLQ as a copy with personal data redacted
    (and the runner's message goes from the event stream, as an answered one does); broken JSON, not UTF-8 even,
    and an envelope whose payload is invalid alike."""
    email, card = f"kim.{uuid.uuid4().hex[:8]}@example.net", "4111 1111 1111 1111"
    subject = f"ae.{tenant}.node.output_produced"
    broken = b'{"type": "node.output_produced", "data": {"output": {"to": "' + email.encode() + b'", "card": "' + \
        card.encode() + b'"\xff'
    invalid = json.dumps({"specversion": "1.0", "id": str(uuid.uuid4()), "source": "agent-engine/tool-runner",
                          "type": "node.output_produced", "time": "2026-12-04T11:00:00Z", "tenant": tenant,
                          "task_id": str(uuid.uuid4()), "correlation_id": "c", "data": {"output": {
                              "to": email, "card": card}}}).encode()

    async def send() -> tuple[list, list]:
        nc = await engine.connect()
        try:
            js = nc.jetstream()
            dlq = await nc.subscribe(f"aedlq.guardrails.{tenant}")
            acks, dead = [], []
            for body in (broken, invalid):
                acks.append(await js.publish(subject, body, headers={"Nats-Msg-Id": str(uuid.uuid4())}))
                dead.append(await dlq.next_msg(timeout=30))
            gone = []
            for ack in acks:
                for _ in range(50):  # the gate deletes the message right after its dead letter is written
                    try:
                        await js.get_msg("AE_EVENTS", ack.seq)
                    except Exception:  # noqa: BLE001  nats' NotFoundError: deleted
                        gone.append(ack.seq)
                        break
                    await asyncio.sleep(0.1)
            return dead, gone
        finally:
            await nc.close()

    dead, gone = asyncio.run(send())
    assert len(gone) == 2
    for msg in dead:
        kept = msg.data + json.dumps(dict(msg.headers)).encode()
        assert email.encode() not in kept and card.encode() not in kept and card.replace(" ", "").encode() not in kept
        assert b"[redacted:email]" in msg.data and b"[redacted:card]" in msg.data
        assert msg.headers["Ae-Redacted"] == "card=1,email=1" and msg.headers["Ae-Original-Subject"] == subject
        assert msg.headers["Ae-Error"].endswith("[the body is a copy with personal data redacted: 1 card, 1 email]")
    assert dead[0].headers["Ae-Error"].startswith("not a valid event envelope")
    assert dead[1].headers["Ae-Error"].startswith("not a valid node.output_produced payload")
    # a redacted copy is not the message: `dlq replay` refuses it, saying why, and keeps it listed
    listed = engine.agentctl("dlq", "list", "--service", "guardrails", "--json")
    assert listed.returncode == 0, listed.stderr
    seqs = [e["seq"] for e in json.loads(listed.stdout) if e["original_subject"] == subject]
    assert len(seqs) == 2
    replayed = engine.agentctl("dlq", "replay", str(seqs[0]))
    assert replayed.returncode == 1 and "copy with personal data redacted (card=1,email=1)" in replayed.stderr
    again = [e["seq"] for e in json.loads(engine.agentctl("dlq", "list", "--json").stdout)
             if e["original_subject"] == subject]
    assert again == seqs
