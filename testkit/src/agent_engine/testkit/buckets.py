"""A tenant's artifact bucket as the router makes it when one of the tenant's tasks starts (router/buckets.py),
for tests that store artifacts without running a task: only the router may create streams. The tenant is
declared first (keyring.declare): the services may use the buckets of served tenants only (runtime/auth.py)."""

from __future__ import annotations

import nats

from agent_engine.contracts.credentials import load_credential
from agent_engine.runtime.artifacts import ArtifactStore
from agent_engine.runtime.bus import auth_options
from agent_engine.runtime.keyring import Keyring


async def router_made_buckets(nats_url: str, keyring: Keyring, *tenants: str) -> None:
    for tenant in tenants:
        keyring.declare(tenant)
    nc = await nats.connect(nats_url, **auth_options(load_credential(keyring.service("router"))))
    try:
        for tenant in tenants:
            await ArtifactStore(nc.jetstream()).ensure_bucket(tenant)
    finally:
        await nc.close()
