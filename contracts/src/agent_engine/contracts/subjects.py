"""The subject map, defined once. The tenant is a subject token so NATS permissions can confine it.

    ae.<tenant>.<event type>                   e.g. ae.acme.task.accepted
    ae.<tenant>.node.dispatched.<kind>         so each runner consumes only its own kind
    ae.<tenant>.<command type>.<sender>        a client's request, e.g. ae.acme.task.requested.billing
    ae.<tenant>.<router input>.<partition>     what the engine sends the router, e.g. ae.acme.node.completed.7
    aerpc.<service>.<action>                   a query about any tenant (services, platform admin)
    aerpc.tenant.<tenant>.<service>.<action>   a query answered about that tenant's tasks only
"""

from __future__ import annotations

import re
import zlib

from agent_engine.contracts.envelope import Envelope

PREFIX = "ae"
STREAM = "AE_EVENTS"
STREAM_SUBJECTS = [f"{PREFIX}.*.>"]
DLQ_STREAM = "AE_DLQ"
DLQ_PREFIX = "aedlq"
WORKFLOW_BUCKET = "ae_workflows"
TOOL_CALLS_BUCKET = "ae_tool_calls"
RATE_LIMITS_BUCKET = "ae_rate_limits"
"""Guardrails' rate-limit state: one key per tenant, user and session (docs/guardrails.md)."""
"""KV bucket of side-effecting tool calls, key `<tenant>.<task>.<node>`: claimed before the tool runs,
then its result. The tool-runner reads it so such a tool never runs twice for one node of a task."""

TOOL_GATE_DURABLE = "guardrails-tools"
"""Guardrails' consumer of the router's tool dispatches (`node.dispatched.tool`): the tool gate."""
CLEARED_DURABLE = "tool-runner"
"""The tool-runner's consumer of `tool.call_cleared`, the only tool work it may take."""

HEARTBEAT_PREFIX = "aehb"
"""`aehb.<tenant>`: plain NATS (not stored) "still working on this dispatch" notes from the runners."""
ROUTER_RPC = "aerpc.router"
TELEMETRY_RPC = "aerpc.telemetry"
AUTH_RPC = "aerpc.auth"
"""`aerpc.tenant.<tenant>.auth.credential.<add|list|revoke>`: a tenant admin's credential requests."""
TENANT_FORGOTTEN = "aerpc.router.tenant.forgotten"
"""Plain NATS note from the router after `agentctl tenant forget`: {"tenant", "task_ids" (None: all)}; every
service holding a tenant's data in memory drops it."""
AGENT_RUNNER_RPC = "aerpc.agent-runner"
"""`aerpc.agent-runner.providers`: each provider/model's circuit breaker state."""
AUDIT_STREAM = "AE_AUDIT"
AUDIT_PREFIX = "aeaudit"
"""`aeaudit.<chain id>`: checkpoints of the router store's audit chain head (JSON, not envelopes), kept out of
PostgreSQL's reach so a rewrite of the whole chain table shows (docs/audit.md)."""


IDENTITY_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A sender's name (a credential's user within its tenant): one subject token."""
_IDENTITY = re.compile(IDENTITY_PATTERN)

COMMAND_SENDERS = {
    "task.requested": "requested_by",
    "task.cancel_requested": "requested_by",
    "task.fork_requested": "requested_by",
    "node.approval_decided": "decided_by",
}
"""The requests clients send, and the payload field naming who sent it. Such a request is published with
that name as its last subject token, and a credential may publish only under its own name (NATS
permissions), so the name the engine records is the authenticated sender, not free text. A request whose
sender is missing or not a token goes on the bare type subject, which no tenant credential may publish on."""


PARTITIONS = 12
"""Router partitions. Every input the engine itself sends the router (below) goes on a subject ending with
its task's partition, so up to this many routers can each own some partitions and take only their tasks'
inputs (docs/scaling.md). A fixed number of the contract: publishers compute a partition with no setting to
agree on. 12 splits evenly over 1, 2, 3, 4 and 6 routers."""

PARTITIONED = frozenset({"task.accepted", "task.admitted", "subtask.requested", "subtask.finished",
                         "node.completed", "node.errored", "node.tools_requested", "node.output_checked"})
"""The router's inputs that carry a partition token: all but a client's requests (COMMAND_SENDERS), which
keep their sender as the last token and which any router takes."""


def partition_of(task_id: str) -> int:
    """The partition of a task: CRC-32 of its id, modulo PARTITIONS (the same in any language)."""
    return zlib.crc32(task_id.encode()) % PARTITIONS


def partition_subject(event_type: str, tenant: str = "*", partition: int | str = "*") -> str:
    """The subject of a partitioned input: one partition, or every one by default."""
    return f"{type_subject(event_type, tenant)}.{partition}"


def partition_durable(partition: int) -> str:
    """The durable consumer of one partition's inputs on the event stream: whichever router owns the
    partition binds it, so a new owner goes on from where the last one's acks left it."""
    return f"router-p{partition}"


def sender_of(envelope: Envelope) -> str | None:
    """The sender a request names, when it is a valid subject token."""
    field = COMMAND_SENDERS.get(envelope.type)
    sender = envelope.data.get(field) if field else None
    return sender if isinstance(sender, str) and _IDENTITY.match(sender) else None


def subject_for(envelope: Envelope) -> str:
    """The subject an event is published on."""
    if envelope.type == "node.dispatched":
        return dispatch_subject(str(envelope.data.get("kind", "unknown")), envelope.tenant)
    if envelope.type in PARTITIONED:
        return partition_subject(envelope.type, envelope.tenant, partition_of(envelope.task_id))
    sender = sender_of(envelope)
    if sender is not None:
        return f"{type_subject(envelope.type, envelope.tenant)}.{sender}"
    return type_subject(envelope.type, envelope.tenant)


def consume_subjects(event_type: str, tenant: str = "*") -> list[str]:
    """Filter subjects that take in every event of one type: a request's with and without a sender token, a
    partitioned input's in every partition and bare (as publishers sent it before partitions)."""
    bare = type_subject(event_type, tenant)
    return [bare, f"{bare}.*"] if event_type in COMMAND_SENDERS or event_type in PARTITIONED else [bare]


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


TENANT_RPC = "aerpc.tenant"


def rpc_subject(service_rpc: str, action: str, tenant: str | None = None) -> str:
    """A query subject, e.g. rpc_subject(ROUTER_RPC, "task.show"); action ">" for all of a service's queries.
    With a tenant, the tenant-scoped form: the service answers about that tenant's tasks only, and a
    tenant's credential may publish only there."""
    if tenant is not None:
        return f"{TENANT_RPC}.{tenant}.{service_rpc.removeprefix('aerpc.')}.{action}"
    return f"{service_rpc}.{action}"


def rpc_listen(service_rpc: str) -> list[str]:
    """What a service subscribes to for its queries: both forms, any tenant."""
    return [rpc_subject(service_rpc, ">"), rpc_subject(service_rpc, ">", "*")]


def rpc_scope(service_rpc: str, subject: str) -> tuple[str | None, str]:
    """(the tenant a query is confined to, or None for any; the action) of a subject `rpc_listen` matched."""
    if subject.startswith(service_rpc + "."):
        return None, subject.removeprefix(service_rpc + ".")
    parts = subject.split(".", 4)  # aerpc, tenant, <tenant>, <service>, <action>
    if len(parts) == 5 and f"{parts[0]}.{parts[1]}" == TENANT_RPC and f"aerpc.{parts[3]}" == service_rpc:
        return parts[2], parts[4]
    raise ValueError(f"{subject} is not a query subject of {service_rpc}")


def tenant_inbox(tenant: str, user: str) -> str:
    """The inbox prefix of a tenant's credential: replies to its requests come here, and only it may read them."""
    return f"_INBOX.{tenant}.{user}"


def tail_consumer(tenant: str, user: str) -> str:
    """The one event-stream consumer a tenant credential may create and read (`agentctl tail`): named after
    it with a separator no tenant or user name contains, so no two credentials share a name."""
    return f"tail@{tenant}@{user}"


def service_inbox(name: str) -> str:
    """The inbox prefix of a service's (or the platform admin's) credential; a root no tenant inbox can spell."""
    return f"_INBOX_SVC.{name}"


def dlq_subject(service: str, tenant: str | None = None) -> str:
    """`aedlq.<service>.<tenant>`, the tenant of the subject the message arrived on, so a tenant's dead letters
    can be purged by subject; `aedlq.<service>` for one that names no tenant (and every dead letter kept
    before dead letters carried a tenant)."""
    return f"{DLQ_PREFIX}.{service}.{tenant}" if tenant else f"{DLQ_PREFIX}.{service}"


def audit_subject(chain: str = "*") -> str:
    return f"{AUDIT_PREFIX}.{chain}"


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
    # a request on its bare type subject (as v1 clients sent them) reads too: only the platform's own
    # credentials may publish there; so does a partitioned input without its partition (as publishers sent
    # it before partitions; any router takes those)
    bare = ((envelope.type in COMMAND_SENDERS or envelope.type in PARTITIONED)
            and subject == type_subject(envelope.type, envelope.tenant))
    if subject != expected and not bare:
        return f"a {envelope.type} event arrived on subject {subject}; it is published on {expected}"
    return ""
