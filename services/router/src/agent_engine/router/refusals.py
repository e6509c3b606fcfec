"""Why an input may not touch the task it names: checked before deciding, so a forged or stray input is
dead-lettered at once with the reason. The answer never tells whether another tenant has a task of an id."""

from __future__ import annotations

from agent_engine.contracts.envelope import Envelope
from agent_engine.router.admission import TENANT_KEY
from agent_engine.router.core import BUS_INPUTS, InvalidInput, RouterInput, apply, starts_task
from agent_engine.router.state import TaskState
from agent_engine.router.tasks import TaskCache
from agent_engine.router.tenants import AdmissionLogs
from agent_engine.runtime.inbox import Refused, describe


async def refusal(env: Envelope, tasks: TaskCache, admission: AdmissionLogs) -> str:
    """"" when the input may be decided; else why not: a reserved id, no such task of its tenant, a
    subtask its parent never asked for, or a queued task its tenant's admission log never admitted."""
    if env.task_id.startswith(TENANT_KEY):
        return f"task id '{env.task_id}' uses the reserved prefix '{TENANT_KEY}'"
    if env.type not in BUS_INPUTS:
        return f"the router does not take {env.type} from the stream"
    state = await tasks.get(env.task_id)
    if state.status == "reserved":
        return f"task id '{env.task_id}' names a tenant's admission log, not a task"
    no_task = f"no task {env.task_id} of tenant '{env.tenant}'"
    if state.tenant and state.tenant != env.tenant:
        return no_task
    if state.status == "new" and not starts_task(env):
        state = await tasks.fresh(env.task_id)  # another router may have started it since this one cached it
        if state.status == "new" or state.tenant != env.tenant:
            return no_task
    if env.type == "task.admitted" and not await admission.admitted(env.tenant, env.task_id):
        return f"task.admitted for task {env.task_id}, which the admission log of tenant '{env.tenant}' did not admit"
    return await _lineage(env, tasks) if state.status == "new" else ""


async def _lineage(env: Envelope, tasks: TaskCache) -> str:
    """A subtask may only be started (or stopped before it starts) by the parent whose SPLIT made it."""
    if env.type == "subtask.requested":
        lineage = env.data.get("lineage")
        parent_id = lineage.get("parent_id") if isinstance(lineage, dict) else None
    elif env.type == "task.cancel_requested":
        parent_id = env.data.get("parent_id")
    else:
        return ""
    if not isinstance(parent_id, str) or not parent_id or parent_id.startswith(TENANT_KEY):
        return ""  # decide refuses a payload that is not valid
    if _made(await tasks.get(parent_id), env) or _made(await tasks.fresh(parent_id), env):
        return ""
    return f"{env.type} for task {env.task_id} names parent task {parent_id}, which has no such subtask"


def _made(parent: TaskState, env: Envelope) -> bool:
    """The parent (of the same tenant) fanned out the task the input names."""
    return parent.tenant == env.tenant and any(env.task_id in f.subtasks for f in parent.fanouts.values())


def decided(state: TaskState, inp: RouterInput) -> tuple[TaskState, list[Envelope]]:
    """The pure core's answer. It is deterministic, so what it raises is the input's fault for good (not
    valid for its type, or contradicting itself): Refused, which dead-letters it at once."""
    try:
        return apply(state, inp)
    except Exception as exc:
        raise Refused(str(exc) if isinstance(exc, InvalidInput) else describe(exc)) from exc
