"""Who may do what on the bus: each service's and each tenant role's NATS permissions, and the server's
`authorization` block rendered from them.

Every connection authenticates with an nkey (contracts.credentials). The server holds only public keys,
each with publish and subscribe permissions; a message outside them is refused by the server, never
merely ignored by our code. Rights are listed here once, in subjects from contracts.subjects, so the
permission a service gets and the subject it uses cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent_engine.contracts.artifacts import bucket_of
from agent_engine.contracts.credentials import ROLES, Credential, Role
from agent_engine.contracts.mcp import MCP_TOOLS_BUCKET
from agent_engine.contracts.subjects import (
    AGENT_RUNNER_RPC,
    AUDIT_STREAM,
    AUTH_RPC,
    CLEARED_DURABLE,
    COMMAND_SENDERS,
    PARTITIONED,
    PARTITIONS,
    RATE_LIMITS_BUCKET,
    ROUTER_RPC,
    STREAM,
    TELEMETRY_RPC,
    TENANT_FORGOTTEN,
    TOOL_CALLS_BUCKET,
    TOOL_GATE_DURABLE,
    WORKFLOW_BUCKET,
    audit_subject,
    dispatch_subject,
    dlq_subject,
    heartbeat_subject,
    partition_durable,
    partition_subject,
    rpc_listen,
    rpc_subject,
    service_inbox,
    tail_consumer,
    tenant_inbox,
    tenant_subject,
    type_subject,
)
from agent_engine.runtime.streamowner import ENGINE_STREAMS

JS = "$JS.API"


@dataclass(frozen=True)
class Rights:
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    responses: bool = False
    """May answer the requests it receives (NATS `allow_responses`: one reply to each request's inbox)."""

    def __add__(self, other: Rights) -> Rights:
        return Rights(self.publish + other.publish, self.subscribe + other.subscribe,
                      self.responses or other.responses)

    def as_conf(self) -> dict[str, object]:
        # allow-lists only, no deny: what a service may reach is what it names, so a stream or subject
        # added later is out of its reach until a right here names it
        conf: dict[str, object] = {"publish": {"allow": sorted(set(self.publish))},
                                   "subscribe": {"allow": sorted(set(self.subscribe))}}
        if self.responses:
            conf["allow_responses"] = True
        return conf


def _lookup(*streams: str) -> Rights:
    """Look up the streams a service uses (stream info): nothing that creates, deletes or edits one."""
    return Rights(publish=tuple(f"{JS}.STREAM.INFO.{s}" for s in streams))


def _streams(*streams: str) -> Rights:
    """Look up, and create when missing, the named streams. A create right lets its holder make the stream, while
    it is missing, with any subjects (another tenant's inbox, say) and read what it captures: so the engine's
    own streams are the router's to create (runtime/streamowner.py), never another service's."""
    return _lookup(*streams) + Rights(publish=tuple(f"{JS}.STREAM.CREATE.{s}" for s in streams))


def _kv_read(bucket: str, *, create: bool = True) -> Rights:
    """Read a KV bucket; `create`: make it when missing too (the router its buckets, guardrails its rate limits;
    docs/security.md)."""
    stream = f"KV_{bucket}"
    return (_streams(stream) if create else _lookup(stream)) + Rights(publish=(
        f"{JS}.DIRECT.GET.{stream}.>", f"{JS}.STREAM.MSG.GET.{stream}"))


def _kv_write(bucket: str, *, create: bool = True) -> Rights:
    return _kv_read(bucket, create=create) + Rights(publish=(f"$KV.{bucket}.>",))


def artifact_stream(tenant: str) -> str:
    return f"OBJ_{bucket_of(tenant)}"


def _artifacts(tenants: Iterable[str], *, write: bool, delete: bool = False) -> Rights:
    """The artifact buckets of the tenants the engine serves (runtime/artifacts.py), each named: read an
    object's metadata and chunks by message get; to write, also look the bucket up and publish its chunks
    and metadata; to delete, purge one object's chunks. A NATS wildcard cannot match part of a token
    (`OBJ_ae_artifacts_*` is no pattern), so the only alternative to naming each bucket is `*`, which is
    every stream, the engine's own included: an allow-list by name is what keeps a service off a stream it
    does not need, a new one too. A service serving every tenant gets every served tenant's bucket; a tenant
    the keyring was not told of (keyring.declare, `agentctl tenant declare`) has none open to it. No stream
    creation: that would be any stream, one capturing other tenants' inboxes too (the router creates each
    tenant's bucket, `_artifact_buckets`)."""
    streams = [artifact_stream(t) for t in sorted(set(tenants))]
    rights = Rights(publish=tuple(f"{JS}.STREAM.MSG.GET.{s}" for s in streams))
    if write:
        rights += Rights(publish=tuple(p for t in sorted(set(tenants)) for p in (
            f"{JS}.STREAM.INFO.{artifact_stream(t)}", f"$O.{bucket_of(t)}.C.>", f"$O.{bucket_of(t)}.M.>")))
    if delete:
        rights += Rights(publish=tuple(f"{JS}.STREAM.PURGE.{s}" for s in streams))
    return rights


def _artifact_buckets() -> Rights:
    """The router creates a tenant's bucket when one of its tasks starts (router/buckets.py): look a stream
    up and create one. The token must be `*` (see `_artifacts`), as the router makes the bucket of a tenant
    no one declared too (its tasks run; only their large outputs wait for the declaration); the router holds
    the store and its keys, so this adds little to what it may do already. It never reads an artifact."""
    return Rights(publish=(f"{JS}.STREAM.INFO.*", f"{JS}.STREAM.CREATE.*"))


def tenant_artifacts(tenant: str) -> Rights:
    """A tenant credential reads its own tenant's artifacts, and no other's: the only right is a message get
    on its own bucket's stream (the server refuses one on another tenant's)."""
    return _artifacts([tenant], write=False)


def _durable(name: str) -> Rights:
    """Create, bind to, fetch from and ack one durable pull consumer on the event stream."""
    api = f"{JS}.CONSUMER"
    return Rights(publish=(f"{api}.DURABLE.CREATE.{STREAM}.{name}", f"{api}.CREATE.{STREAM}.{name}",
                           f"{api}.CREATE.{STREAM}.{name}.>", f"{api}.INFO.{STREAM}.{name}",
                           f"{api}.MSG.NEXT.{STREAM}.{name}", f"$JS.ACK.{STREAM}.{name}.>"))


def _gated_durable(name: str, subject: str) -> Rights:
    """One durable pull consumer that may only ever filter on `subject`: it is created through the API subject
    that names its filter (the server checks the request's filter against it), and neither the legacy
    create nor a create without a filter is allowed. What keeps the tool-runner behind guardrails' tool gate."""
    api = f"{JS}.CONSUMER"
    return Rights(publish=(f"{api}.CREATE.{STREAM}.{name}.{subject}", f"{api}.INFO.{STREAM}.{name}",
                           f"{api}.MSG.NEXT.{STREAM}.{name}", f"$JS.ACK.{STREAM}.{name}.>"))


def _base(name: str) -> Rights:
    """What every service does: look up the event and DLQ streams and the tool-call bucket (Bus.open waits for
    them; only the router creates them), dead letters under its own name, replies to its own inbox."""
    return (_lookup(*ENGINE_STREAMS)
            + Rights(publish=(dlq_subject(name), f"{dlq_subject(name)}.>"), subscribe=(f"{service_inbox(name)}.>",)))


def _publishes(*event_types: str) -> Rights:
    """Each type's subject (a dispatch's with its kind, a router input's in any partition and bare, as a
    service not yet upgraded sends it). A request only on its bare subject: the router cancels a subtask
    under no one's name, and no service may send under a person's."""
    return Rights(publish=tuple(s for t in event_types for s in (
        [dispatch_subject("*")] if t == "node.dispatched"
        else [type_subject(t), partition_subject(t)] if t in PARTITIONED else [type_subject(t)])))


RUNNER_RESULTS = ("node.completed", "node.errored")
OTHERS_PUBLISH = frozenset({"task.requested", "task.accepted", "node.completed", "llm.called", "llm.call_failed",
                            "node.tools_requested", "guardrail.verdict", "node.output_produced",
                            "node.output_checked", "tool.call_cleared"})
"""Event types only a client, guardrails or a runner publishes: the router never does."""


def service_rights(event_types: Iterable[str], tenants: Iterable[str] = ()) -> dict[str, Rights]:
    """Each service's rights. `event_types`: every event type of the contracts (the router publishes what
    the others do not); `tenants`: the tenants the engine serves, whose artifact buckets the services that
    serve every tenant may use (the keyring's `tenants()`). Every stream a service may read is named here:
    the KV buckets it reads, the artifact buckets of those tenants, nothing else."""
    tenants = sorted(set(tenants))
    router_types = sorted(t for t in event_types if t not in OTHERS_PUBLISH)
    return {
        # guardrails deletes a raw request from the stream once answered (docs/data-lifecycle.md); it keeps the
        # rate limits in their bucket and reads workflows (their input schemas) from the registry. The tool gate:
        # it takes the router's tool dispatches and answers each with tool.call_cleared (which only it may
        # publish) or a refusal as node.errored; the output gate answers a runner's output with
        # node.output_checked (only it may publish) or a refusal as node.errored
        "guardrails": (_base("guardrails") + _durable("guardrails") + _durable(TOOL_GATE_DURABLE)
                       + _kv_write(RATE_LIMITS_BUCKET) + _kv_read(WORKFLOW_BUCKET, create=False)
                       + _durable("guardrails-output")
                       + _publishes("task.accepted", "task.rejected", "guardrail.verdict", "tool.call_cleared",
                                    "node.output_checked",
                                    "node.errored")
                       + Rights(publish=(f"{JS}.STREAM.MSG.DELETE.{STREAM}",))
                       # the injection classifier: asked of the agent-runner, answered on guardrails' own inbox
                       + Rights(publish=(rpc_subject(AGENT_RUNNER_RPC, "judge"),))
                       # the output gate reads a large output's artifacts to check it, and stores a redacted one
                       + _artifacts(tenants, write=True, delete=True)),
        # it alone creates the engine's streams and its buckets (runtime/streamowner.py), at start
        "router": (_base("router") + _streams(*ENGINE_STREAMS) + _durable("router")
                   + _kv_read(WORKFLOW_BUCKET) + _kv_read(MCP_TOOLS_BUCKET)
                   + _publishes(*router_types)
                   + sum((_durable(partition_durable(p)) for p in range(PARTITIONS)), Rights())
                   # the platform's inbox outright: the answer to `tenant forget` (which it alone may ask) is
                   # sent after the router published other messages, which the one-reply allowance does not survive
                   + Rights(publish=(TENANT_FORGOTTEN, f"{service_inbox('admin')}.>"),
                            subscribe=(*rpc_listen(ROUTER_RPC), heartbeat_subject()), responses=True)
                   + _streams(AUDIT_STREAM) + Rights(publish=(audit_subject(">"),))  # audit checkpoints
                   + _artifact_buckets()),
        "agent-runner": (_base("agent-runner") + _durable("agent-runner")
                         + _publishes(*RUNNER_RESULTS, "llm.called", "llm.call_failed", "node.tools_requested",
                                      "node.output_produced")
                         + Rights(publish=(heartbeat_subject(),), subscribe=(*rpc_listen(AGENT_RUNNER_RPC),),
                                  responses=True)
                         # telemetry's figures, for `fallback_order: by_score` (agent_runner/scores.py)
                         + Rights(publish=(rpc_subject(TELEMETRY_RPC, "agents"),))
                         + _artifacts(tenants, write=True)),  # reads upstream artifacts, stores its own large outputs
        # only what the tool gate cleared, never the router's dispatches themselves (docs/guardrails.md)
        "tool-runner": (_base("tool-runner") + _gated_durable(CLEARED_DURABLE, type_subject("tool.call_cleared"))
                        + _kv_write(TOOL_CALLS_BUCKET, create=False)  # the router creates it (ENGINE_STREAMS)
                        + _kv_write(MCP_TOOLS_BUCKET, create=False)  # the MCP catalogue it publishes at start
                        + _publishes(*RUNNER_RESULTS, "node.output_produced") + Rights(publish=(heartbeat_subject(),))
                        + _artifacts(tenants, write=True)),  # stores large tool results
        # the authority answers after the server reloaded its configuration, which forgets the right to
        # reply that `allow_responses` grants: it may publish on tenant inboxes instead (it holds the
        # keyring, so this gives it no power it lacks)
        "authority": (_base("authority")
                      + Rights(publish=(f"{tenant_inbox('*', '*')}.>",), subscribe=(rpc_subject(AUTH_RPC, ">", "*"),),
                               responses=True)),
        # its ordered consumer is unnamed (nats-py creates it on `CONSUMER.CREATE.AE_EVENTS`, and again on each
        # reset), so no right names a consumer. The server refuses a durable name on that subject but takes a body
        # naming another consumer as an update of it: a known gap (docs/security.md, "Only the router creates
        # streams"), closed only by telemetry reading through a consumer of its own name
        "telemetry": (_base("telemetry")
                      + Rights(publish=(f"{JS}.STREAM.NAMES", f"{JS}.CONSUMER.CREATE.{STREAM}",
                                        f"{JS}.CONSUMER.INFO.{STREAM}.>",  # no delete: its ephemerals expire
                                        "$JS.FC.>"),
                               subscribe=(*rpc_listen(TELEMETRY_RPC), TENANT_FORGOTTEN), responses=True)),
        # the web dashboard (services/dashboard): asks the router's and telemetry's queries, watches every tenant's
        # events (core subscription: which tasks changed), and sends an operator's approval decision. On the
        # bare subject, under the name "dashboard:<operator>", which no credential of a person can spell: the
        # dashboard vouches for its operators' logins, and may never send under a tenant credential's name
        "dashboard": (_base("dashboard") + _publishes("node.approval_decided")
                      + Rights(publish=(rpc_subject(ROUTER_RPC, "task.show"), rpc_subject(ROUTER_RPC, "task.history"),
                                        rpc_subject(TELEMETRY_RPC, "ledger"), rpc_subject(TELEMETRY_RPC, "tasks.list")),
                               subscribe=(tenant_subject(),))  # the queries it asks, no other (no rebuild)
                      + _artifacts(tenants, write=False)),  # a task's artifacts, shown on its page: gets only
    }


PLATFORM = Rights(publish=(">",), subscribe=(">",), responses=True)
"""The platform administrator (agentctl on the stack's own credential): every tenant, every stream."""


def tenant_rights(tenant: str, user: str, role: Role) -> Rights:
    """A tenant credential: read its tenant's events (live) and ask about its tasks; a submitter submits
    (under its own name only), an operator approves, rejects, cancels and forks, an admin also pushes its
    tenant's workflows."""
    tail = tail_consumer(tenant, user)
    rights = Rights(publish=(rpc_subject(ROUTER_RPC, ">", tenant), rpc_subject(TELEMETRY_RPC, ">", tenant),
                             f"{JS}.CONSUMER.CREATE.{STREAM}.{tail}.{tenant_subject(tenant)}",
                             *(f"{JS}.CONSUMER.{op}.{STREAM}.{tail}" for op in ("MSG.NEXT", "INFO", "DELETE"))),
                    subscribe=(tenant_subject(tenant), f"{tenant_inbox(tenant, user)}.>"))
    rights += tenant_artifacts(tenant)
    level = ROLES.index(role)
    if level >= ROLES.index("submitter"):
        rights += Rights(publish=(f"{type_subject('task.requested', tenant)}.{user}",))
    if level >= ROLES.index("operator"):
        rights += Rights(publish=tuple(f"{type_subject(t, tenant)}.{user}" for t in COMMAND_SENDERS
                                       if t != "task.requested"))
    if level >= ROLES.index("admin"):
        rights += Rights(publish=(rpc_subject(AUTH_RPC, ">", tenant),))
        own = f"$KV.{WORKFLOW_BUCKET}.{tenant}.>"  # no stream info: it would list every tenant's keys
        rights += Rights(publish=(own, f"{JS}.DIRECT.GET.KV_{WORKFLOW_BUCKET}.{own}"))
    return rights


@dataclass(frozen=True)
class Entry:
    """One authorized key: a public nkey with its rights (a credential's public half)."""

    public_key: str
    rights: Rights
    label: str = ""


@dataclass
class Authorization:
    entries: list[Entry] = field(default_factory=list)

    def add(self, public_key: str, rights: Rights, label: str) -> None:
        if any(e.public_key == public_key for e in self.entries):
            raise ValueError(f"public key of {label} is already authorized")
        self.entries.append(Entry(public_key, rights, label))

    def render(self) -> str:
        """The `authorization` block of nats-server's configuration (JSON is valid NATS config syntax)."""
        users = [{"nkey": e.public_key, "permissions": e.rights.as_conf()} for e in self.entries]
        lines = [f"# {e.label}: {e.public_key}" for e in self.entries]
        return "\n".join([*lines, "authorization " + json.dumps({"users": users}, indent=1)]) + "\n"


def rights_of(credential: Credential, event_types: Iterable[str], tenants: Iterable[str] = ()) -> Rights:
    return rights_for(credential.kind, credential.user, credential.tenant, credential.role, event_types, tenants)


def rights_for(kind: str, user: str, tenant: str | None, role: Role | None, event_types: Iterable[str],
               tenants: Iterable[str] = ()) -> Rights:
    """One credential's rights; `tenants`: the tenants the engine serves (a service's artifact buckets)."""
    if kind == "platform":
        return PLATFORM
    if kind == "service":
        rights = service_rights(event_types, tenants).get(user)
        if rights is None:
            raise ValueError(f"no service is named '{user}'")
        return rights
    if tenant is None or role is None:
        raise ValueError(f"tenant credential {user} names no tenant or role")
    return tenant_rights(tenant, user, role)


def public_key(seed: str) -> str:
    import nkeys

    return str(nkeys.from_seed(bytearray(seed.encode())).public_key.decode())


def new_seed() -> str:
    import nacl.signing
    import nkeys

    raw = nacl.signing.SigningKey.generate().encode()
    return str(nkeys.encode_seed(raw, nkeys.PREFIX_BYTE_USER).decode())
