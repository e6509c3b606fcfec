"""The audit chain's format (runtime/audit.py): what each hash covers, byte for byte, pinned so a change is
deliberate (a new tag version) and never drift; and the standalone verifier computes the same links."""

from __future__ import annotations

import hashlib
import importlib.util
import uuid
from pathlib import Path
from types import ModuleType

from agent_engine.runtime import audit

ORIGINATOR = uuid.UUID("12345678-1234-5678-1234-567812345678")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verify_audit_bundle.py"


def test_each_hash_covers_exactly_its_documented_bytes() -> None:
    record = audit.record_hash("t", b"state")
    assert record == hashlib.sha256(b"ae-audit-record-v1" + b"\0\0\0\x01" + b"t" + b"\0" * 7 + b"\x05" + b"state").digest()
    task = audit.task_link(audit.ZERO, ORIGINATOR, 1, 3, record)
    assert task == hashlib.sha256(b"ae-audit-task-v1" + bytes(32) + ORIGINATOR.bytes + b"\0" * 7 + b"\x01"
                                  + b"\0" * 7 + b"\x03" + record).digest()
    owner = hashlib.sha256(b"ae-audit-owner-v1" + ORIGINATOR.bytes + b"\0" * 7 + b"\x02").digest()
    assert audit.owner(ORIGINATOR, 2) == owner
    assert audit.global_link(audit.ZERO, 2, 3, ORIGINATOR, task) == hashlib.sha256(
        b"ae-audit-global-v1" + bytes(32) + b"\0" * 7 + b"\x02" + b"\0" * 7 + b"\x03" + owner + task).digest()
    # pinned: records chained by earlier routers must still verify
    assert record.hex() == "8a590739ffc4c12577b4b3e882188d115e73a08c06941802572215acd55327ac"
    assert task.hex() == "dd84b31e6b96606ecef26b9da4be0ecd868f0bdba9a698d55b2b3eaeb25b2452"


def test_no_two_different_records_share_a_hash_by_moving_bytes_between_fields() -> None:
    assert audit.record_hash("ab", b"c") != audit.record_hash("a", b"bc")
    record = audit.record_hash("t", b"")
    assert audit.task_link(audit.ZERO, ORIGINATOR, 1, 5, record) != audit.task_link(audit.ZERO, ORIGINATOR, 2, 5, record)
    assert audit.task_link(audit.ZERO, ORIGINATOR, 1, 5, record) != audit.task_link(audit.ZERO, ORIGINATOR, 1, 6, record)
    other = uuid.uuid4()
    assert audit.owner(ORIGINATOR, 1) != audit.owner(other, 1) and audit.owner(other, 1) != audit.owner(other, 2)


def test_a_checkpoint_reads_back_what_it_wrote() -> None:
    cp = audit.Checkpoint(chain="c", position=5, notification_id=9, head="ab" * 32, time="2026-12-03T10:00:00+00:00",
                          router="router")
    assert audit.Checkpoint.from_json(cp.to_json(), stream_sequence=4) == audit.Checkpoint(**{**cp.__dict__,
                                                                                            "stream_sequence": 4})


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_audit_bundle", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_standalone_script_hashes_as_the_engine_does_and_imports_only_the_standard_library() -> None:
    s = script()
    for topic, state in (("t", b""), ("agent_engine.router.store:TaskRecord", b'{"x": 1}' * 100), ("", b"\0")):
        content = audit.record_hash(topic, state)
        assert content == s.record_hash(topic, state)
        linked = audit.task_link(content, ORIGINATOR, 7, 8, content)
        assert linked == s.task_link(content, ORIGINATOR, 7, 8, content)
        assert audit.global_link(linked, 9, 12, ORIGINATOR, linked) == s.global_link(
            linked, 9, 12, s.owner(ORIGINATOR, 9), linked)
    imports = {line.split()[1] for line in SCRIPT.read_text().splitlines() if line.startswith(("import ", "from "))}
    assert imports == {"__future__", "base64", "hashlib", "json", "sys", "uuid"}


def test_task_ids_name_the_same_aggregates_as_in_the_router_store() -> None:
    canonical = str(uuid.uuid4())
    assert audit.aggregate_id(canonical) == uuid.UUID(canonical)
    for key in (canonical.upper(), "order-42", "tenant:acme", "{" + canonical + "}"):
        assert audit.aggregate_id(key).int >> 61 & 0b111 == 0b111  # hashed: the reserved variant
    assert audit.aggregate_id("tenant:acme") != audit.aggregate_id("acme")
