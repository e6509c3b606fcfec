"""The subject map, defined once. The tenant is a subject token so NATS permissions can confine it.

    ae.<tenant>.<event type>                   e.g. ae.acme.task.requested
    ae.<tenant>.node.dispatched.<kind>         so each runner consumes only its own kind
"""

from __future__ import annotations

from agent_engine.contracts.envelope import Envelope

PREFIX = "ae"
STREAM = "AE_EVENTS"
STREAM_SUBJECTS = [f"{PREFIX}.*.>"]
DLQ_STREAM = "AE_DLQ"
DLQ_PREFIX = "aedlq"
WORKFLOW_BUCKET = "ae_workflows"
TOOL_CALLS_BUCKET = "ae_tool_calls"
"""KV bucket of side-effecting tool calls, key `<tenant>.<task>.<node>`: claimed before the tool runs,
then its result. The tool-runner reads it so such a tool never runs twice for one node of a task."""

HEARTBEAT_PREFIX = "aehb"
"""`aehb.<tenant>`: plain NATS (not stored) "still working on this dispatch" notes from the runners."""
ROUTER_RPC = "aerpc.router"
TELEMETRY_RPC = "aerpc.telemetry"
TENANT_FORGOTTEN = "aerpc.router.tenant.forgotten"
"""Plain NATS note from the router after `agentctl tenant forget`: {"tenant", "task_ids" (None: all)}; every
service holding a tenant's data in memory drops it."""
AGENT_RUNNER_RPC = "aerpc.agent-runner"
"""`aerpc.agent-runner.providers`: each provider/model's circuit breaker state."""


def subject_for(envelope: Envelope) -> str:
    """The subject an event is published on."""
    if envelope.type == "node.dispatched":
        return dispatch_subject(str(envelope.data.get("kind", "unknown")), envelope.tenant)
    return type_subject(envelope.type, envelope.tenant)


def type_subject(event_type: str, tenant: str = "*") -> str:
    """Filter subject for one event type, any tenant by default."""
    return f"{PREFIX}.{tenant}.{event_type}"


def dispatch_subject(kind: str, tenant: str = "*") -> str:
    """Node dispatches of one kind (`agent` or `tool`): what one runner consumes."""
    return f"{type_subject('node.dispatched', tenant)}.{kind}"


def tenant_subject(tenant: str = "*") -> str:
    """Every event of a tenant (any tenant by default)."""
    return f"{PREFIX}.{tenant}.>"


def heartbeat_subject(tenant: str = "*") -> str:
    return f"{HEARTBEAT_PREFIX}.{tenant}"


def rpc_subject(service_rpc: str, action: str) -> str:
    """A query subject, e.g. rpc_subject(ROUTER_RPC, "task.show"); action ">" for all of a service's queries."""
    return f"{service_rpc}.{action}"


def dlq_subject(service: str, tenant: str | None = None) -> str:
    """`aedlq.<service>.<tenant>`, the tenant of the subject the message arrived on, so a tenant's dead letters
    can be purged by subject; `aedlq.<service>` for one that names no tenant (and every dead letter kept
    before dead letters carried a tenant)."""
    return f"{DLQ_PREFIX}.{service}.{tenant}" if tenant else f"{DLQ_PREFIX}.{service}"


def tenant_from_subject(subject: str) -> str | None:
    parts = subject.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == PREFIX else None


def subject_problem(subject: str, envelope: Envelope) -> str:
    """Why `envelope` may not arrive on `subject` ("" when it may): it must be the subject the event is
    published on, since the subject (its tenant and type) is what NATS permissions confine. A tenant may
    not speak for another, nor pass one event type off as another (say, a task.accepted only guardrails
    may publish, sent on a subject the tenant may use). The one check every consumer makes."""
    if tenant_from_subject(subject) != envelope.tenant:
        return f"envelope tenant '{envelope.tenant}' arrived on subject {subject}, which is not that tenant's"
    expected = subject_for(envelope)
    if subject != expected:
        return f"a {envelope.type} event arrived on subject {subject}; it is published on {expected}"
    return ""
