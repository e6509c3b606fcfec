"""agentctl finds a task's records in the store by the same aggregate id the router stores them under
(runtime.audit.aggregate_id repeats store.aggregate_uuid so the CLI need not import a service)."""

from __future__ import annotations

import uuid

from agent_engine.router.store import aggregate_uuid
from agent_engine.runtime.audit import aggregate_id


def test_every_kind_of_task_id_maps_as_the_store_maps_it() -> None:
    canonical = str(uuid.uuid4())
    for key in (canonical, canonical.upper(), canonical.replace("-", ""), "{" + canonical + "}", "order-42", "",
                "tenant:acme", "tenant:", str(uuid.UUID(int=(uuid.uuid4().int & ~(0b111 << 61)) | (0b111 << 61)))):
        assert aggregate_id(key) == aggregate_uuid(key), key
