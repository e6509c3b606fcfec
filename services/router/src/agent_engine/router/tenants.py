"""The shell around per-tenant scheduling: each tenant's admission log, read from the store once and
kept, and written in the same batch (and transaction) as the tasks it admits, queues or releases."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from agent_engine.contracts.envelope import Envelope, caused_by, derive_id
from agent_engine.contracts.events import TaskAdmitted, TenantAdmitted
from agent_engine.router.admission import TENANT_KEY, Limits, TenantState, admit, evolve_tenant, release
from agent_engine.router.batch import Batch
from agent_engine.router.core import SOURCE, RouterInput
from agent_engine.router.store import TaskStore


class AdmissionLogs:
    def __init__(self, store: TaskStore, limits: dict[str, Limits]) -> None:
        self.store = store
        self.limits = limits
        """By tenant; "" is the default for the others."""
        self.saved: dict[str, TenantState] = {}
        """Admission logs by tenant, as last saved (only kept where limits apply)."""

    def limits_for(self, tenant: str) -> Limits:
        return self.limits.get(tenant, self.limits[""])

    async def admit(self, inp: RouterInput, batch: Batch) -> RouterInput:
        """A new task under limits: start, queue or reject it, as the tenant's log decides (and records)."""
        event = inp.event
        limits = self.limits_for(event.tenant)
        if limits.max_running <= 0:
            return inp
        state = await self._state(event.tenant, batch)
        if event.task_id in state.running or any(q[2] == event.task_id for q in state.queued):
            return inp  # decided before (a redelivery after a failed save): the task records will say so
        priority = int(event.data.get("priority", 0) or 0)
        admission, data = admit(state, limits, event.tenant, event.task_id, priority)
        if data is not None:
            self._log(event.tenant, batch, event, event.task_id, data)
        return replace(inp, admission=admission)

    async def release(self, event: Envelope, status: str, batch: Batch) -> None:
        """A task of the tenant ended: record it, and admit the queued tasks that may start now."""
        state = await self._state(event.tenant, batch)  # read once per tenant, then kept
        if not state.running and not state.queued:
            return  # a tenant without limits, now or before
        for task_id, data in release(state, self.limits_for(event.tenant), event.task_id, status):
            self._log(event.tenant, batch, event, task_id, data)
            if isinstance(data, TenantAdmitted):  # tell the queued task it may start
                self._log(event.tenant, batch, event, task_id,
                          TaskAdmitted(reason=f"a running task of tenant '{event.tenant}' ended"))

    async def admitted(self, tenant: str, task_id: str) -> bool:
        """Whether the tenant's log admitted the task (read again from the store if the kept copy says no)."""
        saved = self.saved.get(tenant)
        if saved is not None and task_id in saved.running:
            return True
        fresh = await asyncio.to_thread(self.store.load_tenant, tenant)
        return task_id in fresh.running

    def committed(self, key: str, batch: Batch) -> None:
        tenant = key.removeprefix(TENANT_KEY)
        self.saved[tenant] = batch.tenants[tenant]

    def forget(self) -> None:
        """A save failed: what the store holds is the truth again."""
        self.saved.clear()

    async def _state(self, tenant: str, batch: Batch) -> TenantState:
        if tenant not in batch.tenants:
            saved = self.saved.get(tenant)
            if saved is None:
                saved = self.saved[tenant] = await asyncio.to_thread(self.store.load_tenant, tenant)
            batch.tenants[tenant] = saved
        return batch.tenants[tenant]

    def _log(self, tenant: str, batch: Batch, cause: Envelope, task_id: str, data: Any) -> None:
        """Append one record to the tenant's admission log (saved with the batch)."""
        key = TENANT_KEY + tenant
        state = batch.tenants[tenant]
        count = len(batch.pending.get(key, (0, []))[1])
        record = caused_by(cause, data, id=derive_id(cause.id, "admission", count), source=SOURCE,
                           time=cause.time, tenant=tenant, task_id=task_id)
        batch.append(key, state.version, [record])
        if record.type.startswith("tenant."):
            batch.tenants[tenant] = evolve_tenant(state, record)
        else:
            batch.tenants[tenant] = replace(state, version=state.version + 1)
