"""Each tenant's artifact bucket, created by the router when one of the tenant's tasks starts.

The services that store artifacts (the runners, guardrails' output gate) may not create streams: a right to
create one is a right to create any (one on another tenant's inbox subjects, say), and NATS cannot narrow it to
a prefix of a stream name. The router, which holds the store and its keys already, creates the bucket before it
records the task's start, so it exists before any dispatch of the task is published. Page:
docs/observability.md (Artifacts).
"""

from __future__ import annotations

import time

from agent_engine.runtime.artifacts import ArtifactStore

FRESH_S = 300.0
"""How long a bucket this router saw is taken to exist without asking again (a tenant forgotten meanwhile has
it deleted; the router drops its note when told, and asks again after this at the latest)."""


class ArtifactBuckets:
    def __init__(self, store: ArtifactStore, fresh_s: float = FRESH_S) -> None:
        self.store = store
        self.fresh_s = fresh_s
        self.seen: dict[str, float] = {}
        """tenant -> when its bucket was last known to exist (one entry per tenant: bounded by the tenants)."""

    async def ensure(self, tenant: str) -> None:
        now = time.monotonic()
        if now - self.seen.get(tenant, float("-inf")) < self.fresh_s:
            return
        await self.store.ensure_bucket(tenant)
        self.seen[tenant] = now

    def forget(self, tenant: str) -> None:
        self.seen.pop(tenant, None)
