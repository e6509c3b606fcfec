"""Sealing without servers: a sealed record opens only under its key, for its aggregate and version; the
master key file is read in the forms the docs give and anything else is named."""

from __future__ import annotations

import base64
import secrets
import uuid
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from agent_engine.router.crypto import MAGIC, seal, sealed_key_id, unseal
from agent_engine.router.datakeys import DataKey, MasterKeyError, master_key_from_env, read_master_key

KEY = DataKey(uuid.uuid4(), "acme", secrets.token_bytes(32))
TASK = uuid.uuid4()


def test_a_sealed_record_names_its_key_and_opens_for_its_own_place_only() -> None:
    stored = seal(KEY, TASK, 3, b'{"brief": "Ada"}')
    assert stored.startswith(MAGIC) and b"Ada" not in stored and sealed_key_id(stored) == KEY.key_id
    assert unseal(KEY, TASK, 3, stored) == b'{"brief": "Ada"}'
    for aggregate, version in ((uuid.uuid4(), 3), (TASK, 4)):  # moved to another task, or another position
        with pytest.raises(InvalidTag):
            unseal(KEY, aggregate, version, stored)
    with pytest.raises(InvalidTag):
        unseal(DataKey(KEY.key_id, "acme", secrets.token_bytes(32)), TASK, 3, stored)
    tampered = stored[:-1] + bytes([stored[-1] ^ 1])
    with pytest.raises(InvalidTag):
        unseal(KEY, TASK, 3, tampered)


def test_two_seals_of_the_same_record_differ_and_a_plain_record_names_no_key() -> None:
    assert seal(KEY, TASK, 1, b"x") != seal(KEY, TASK, 1, b"x")  # a fresh nonce each time
    assert sealed_key_id(b'{"envelope": {}}') is None  # stored before sealing began: read as it is


def test_the_master_key_file_holds_hex_or_base64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = secrets.token_bytes(32)
    (tmp_path / "hex").write_text(raw.hex() + "\n")
    (tmp_path / "b64").write_text(base64.b64encode(raw).decode())
    assert read_master_key(tmp_path / "hex") == raw == read_master_key(tmp_path / "b64")
    (tmp_path / "short").write_text(raw[:16].hex())
    with pytest.raises(MasterKeyError, match="32-byte key"):
        read_master_key(tmp_path / "short")
    monkeypatch.delenv("AE_MASTER_KEY_FILE", raising=False)
    with pytest.raises(MasterKeyError, match="AE_MASTER_KEY_FILE is not set"):
        master_key_from_env()
