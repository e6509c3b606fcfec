"""Every event type's payload (`Envelope.data`), keyed by the envelope's `type`.

Past-tense names: each records something that happened. Adding an optional field keeps the
schema_version; consumers ignore fields they do not know.

One module per topic, each ending with `EVENTS`, the event types it defines:

- `tasks`: a task's requests and its lifecycle (requested, accepted, rejected, deduplicated, started, ended,
  cancelled, forked), and the tenant's idempotency keys
- `scheduling`: per-tenant limits (a task queued, admitted; the tenant's admission log)
- `nodes`: one node's lifecycle: dispatch, results, retries, deadlines, approvals
- `tool_use`: an agent node's model asking for tools, and the calls' results
- `roles`: BRANCH / SPLIT / MERGE (skips, merges, subtasks) and a reviewer's revisions
- `usage`: LLM calls with their token usage (`llm.called`, `llm.call_failed`)
- `guardrails`: the gates' verdicts (`guardrail.verdict`), the tool calls the tool gate let through
  (`tool.call_cleared`) and the output gate's traffic (`node.output_produced`, `node.output_checked`)
- `budgets`: a task's LLM budget: reservations before agent dispatches and their settlement

Import the names from here: every module re-exports through this one. `INTERNAL_TYPES` are the types
the router makes for itself (`EventData.INTERNAL` says what that means).
"""

from __future__ import annotations

from typing import Any

from agent_engine.contracts.events import budgets, guardrails, nodes, roles, scheduling, tasks, tool_use, usage
from agent_engine.contracts.events.base import EventData
from agent_engine.contracts.events.budgets import (
    BudgetAlert,
    BudgetExceeded,
    BudgetOpened,
    BudgetReserved,
    BudgetSettled,
    PinnedPrices,
    SubtaskBudget,
)
from agent_engine.contracts.events.guardrails import (
    GuardrailVerdict,
    NodeOutputChecked,
    NodeOutputProduced,
    RuleHit,
    ToolCallCleared,
)
from agent_engine.contracts.events.nodes import (
    DispatchedAgent,
    DispatchedTool,
    HeldResult,
    MemoryView,
    ModelChoice,
    NodeApprovalDecided,
    NodeApprovalRefused,
    NodeApprovalRequested,
    NodeApproved,
    NodeCompleted,
    NodeContext,
    NodeDeadlineExpired,
    NodeDispatched,
    NodeErrored,
    NodeFailed,
    NodeResultIgnored,
    NodeRetryDue,
    NodeRetryScheduled,
    NodeSucceeded,
)
from agent_engine.contracts.events.roles import (
    NodeFannedOut,
    NodeMerged,
    NodeRevisionRequested,
    NodeSkipped,
    SubtaskFinished,
    SubtaskRequested,
    SubtaskSettled,
)
from agent_engine.contracts.events.scheduling import (
    TaskAdmitted,
    TaskQueued,
    TenantAdmitted,
    TenantQueued,
    TenantReleased,
)
from agent_engine.contracts.events.tasks import (
    Lineage,
    TaskAccepted,
    TaskCancelled,
    TaskCancelRequested,
    TaskDeduplicated,
    TaskFailed,
    TaskFinished,
    TaskForked,
    TaskForkRequested,
    TaskRejected,
    TaskRequested,
    TaskStarted,
    TaskStatus,
    TaskSucceeded,
    TenantKeyClaimed,
)
from agent_engine.contracts.events.tool_use import (
    ConversationSummary,
    NodeToolReturned,
    NodeToolsRequested,
    NodeToolTurnRecorded,
    RequestedCall,
    ToolCallRef,
    ToolDef,
    ToolRefusal,
    ToolStep,
    ToolTurn,
)
from agent_engine.contracts.events.usage import LlmCalled, LlmCallFailed, LlmCallNote, Usage

TOPICS = (tasks, scheduling, nodes, tool_use, roles, usage, guardrails, budgets)
"""The topic modules; each event type is defined in exactly one of them."""

EVENT_TYPES: dict[str, type[EventData]] = {cls.TYPE: cls for topic in TOPICS for cls in topic.EVENTS}

INTERNAL_TYPES: frozenset[str] = frozenset(t for t, cls in EVENT_TYPES.items() if cls.INTERNAL)
"""The types the router makes for itself and no other system may send (see `EventData`)."""


def data_model_for(event_type: str) -> type[EventData]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise ValueError(f"unknown event type '{event_type}'; known: {sorted(EVENT_TYPES)}") from None


def parse_data(event_type: str, data: dict[str, Any]) -> EventData:
    return data_model_for(event_type).model_validate(data)


__all__ = [
    "EVENT_TYPES",
    "INTERNAL_TYPES",
    "TOPICS",
    "BudgetAlert",
    "BudgetExceeded",
    "BudgetOpened",
    "BudgetReserved",
    "BudgetSettled",
    "ConversationSummary",
    "DispatchedAgent",
    "DispatchedTool",
    "EventData",
    "GuardrailVerdict",
    "HeldResult",
    "Lineage",
    "LlmCallFailed",
    "LlmCallNote",
    "LlmCalled",
    "MemoryView",
    "ModelChoice",
    "NodeApprovalDecided",
    "NodeApprovalRefused",
    "NodeApprovalRequested",
    "NodeApproved",
    "NodeCompleted",
    "NodeContext",
    "NodeDeadlineExpired",
    "NodeDispatched",
    "NodeErrored",
    "NodeFailed",
    "NodeFannedOut",
    "NodeMerged",
    "NodeOutputChecked",
    "NodeOutputProduced",
    "NodeResultIgnored",
    "NodeRetryDue",
    "NodeRetryScheduled",
    "NodeRevisionRequested",
    "NodeSkipped",
    "NodeSucceeded",
    "NodeToolReturned",
    "NodeToolTurnRecorded",
    "NodeToolsRequested",
    "PinnedPrices",
    "RequestedCall",
    "RuleHit",
    "SubtaskBudget",
    "SubtaskFinished",
    "SubtaskRequested",
    "SubtaskSettled",
    "TaskAccepted",
    "TaskAdmitted",
    "TaskCancelRequested",
    "TaskCancelled",
    "TaskDeduplicated",
    "TaskFailed",
    "TaskFinished",
    "TaskForkRequested",
    "TaskForked",
    "TaskQueued",
    "TaskRejected",
    "TaskRequested",
    "TaskStarted",
    "TaskStatus",
    "TaskSucceeded",
    "TenantAdmitted",
    "TenantKeyClaimed",
    "TenantQueued",
    "TenantReleased",
    "ToolCallCleared",
    "ToolCallRef",
    "ToolDef",
    "ToolRefusal",
    "ToolStep",
    "ToolTurn",
    "Usage",
    "data_model_for",
    "parse_data",
]
