"""The AsyncAPI 3.0 document of the bus, generated from the contracts (`make schemas` writes it to
contracts/schemas/asyncapi.json, and a test fails when the committed file differs).

Every address comes from subjects.py's helpers, called with placeholder tokens that are then written
as AsyncAPI channel parameters (`{tenant}`, `{kind}`, `{sender}`, `{service}`, `{partition}`): a change of the subject
map shows here at the next `make schemas`, never by editing a string in this module. What is declared
here is only what no helper says: who sends and who receives each event type, and which queries each
service answers (both checked against the services by their own tests).
"""

from __future__ import annotations

import json
from typing import Any

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope
from agent_engine.contracts.events import EVENT_TYPES
from agent_engine.contracts.subjects import (
    AGENT_RUNNER_RPC,
    AUTH_RPC,
    DLQ_STREAM,
    PARTITIONED,
    PARTITIONS,
    ROUTER_RPC,
    STREAM,
    TELEMETRY_RPC,
    consume_subjects,
    dlq_subject,
    heartbeat_subject,
    partition_subject,
    rpc_subject,
    subject_for,
    tenant_subject,
)
from agent_engine.contracts.upcasting import schema_uri

GUARDRAILS, ROUTER, AGENT_RUNNER, TOOL_RUNNER, TELEMETRY, AUTHORITY, DASHBOARD, CLIENT = (
    "guardrails", "router", "agent-runner", "tool-runner", "telemetry", "authority", "dashboard", "client")
SERVICES = (GUARDRAILS, ROUTER, AGENT_RUNNER, TOOL_RUNNER, TELEMETRY, AUTHORITY, DASHBOARD)
"""The engine's services and the stack's credential authority; `client` is another system or agentctl,
acting with a tenant's credential."""

_RECORD = ((ROUTER,), ())
"""A record the router publishes for anyone to read (clients and telemetry read every subject)."""

FLOWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "task.requested": ((CLIENT,), (GUARDRAILS,)),
    "task.accepted": ((GUARDRAILS,), (ROUTER,)),
    "task.rejected": ((GUARDRAILS, ROUTER), ()),
    "task.cancel_requested": ((CLIENT, ROUTER), (ROUTER,)),
    "task.fork_requested": ((CLIENT,), (ROUTER,)),
    "task.started": _RECORD, "task.succeeded": _RECORD, "task.failed": _RECORD, "task.cancelled": _RECORD,
    "task.deduplicated": _RECORD, "tenant.key_claimed": _RECORD,
    "task.forked": _RECORD, "task.queued": _RECORD,
    "task.admitted": ((ROUTER,), (ROUTER,)),
    "tenant.admitted": _RECORD, "tenant.queued": _RECORD, "tenant.released": _RECORD,
    "node.dispatched": ((ROUTER,), (AGENT_RUNNER, GUARDRAILS)),  # a tool dispatch goes to the tool gate
    "tool.call_cleared": ((GUARDRAILS,), (TOOL_RUNNER,)),
    "node.completed": ((AGENT_RUNNER, TOOL_RUNNER), (ROUTER,)),
    "node.errored": ((AGENT_RUNNER, TOOL_RUNNER, GUARDRAILS), (ROUTER,)),
    "node.tools_requested": ((AGENT_RUNNER,), (ROUTER,)),
    "node.approval_decided": ((CLIENT, DASHBOARD), (ROUTER,)),  # the dashboard's: an operator's, by name
    "node.approval_requested": _RECORD, "node.approval_refused": _RECORD, "node.approved": _RECORD,
    "node.succeeded": _RECORD, "node.failed": _RECORD, "node.result_ignored": _RECORD,
    "node.retry_scheduled": _RECORD, "node.skipped": _RECORD, "node.merged": _RECORD, "node.fanned_out": _RECORD,
    "node.revision_requested": _RECORD, "node.tool_turn_recorded": _RECORD, "node.tool_returned": _RECORD,
    "subtask.requested": ((ROUTER,), (ROUTER,)), "subtask.finished": ((ROUTER,), (ROUTER,)),
    "subtask.settled": _RECORD,
    "llm.called": ((AGENT_RUNNER,), ()), "llm.call_failed": ((AGENT_RUNNER,), ()),
    "guardrail.verdict": ((GUARDRAILS,), ()),
    "node.output_produced": ((AGENT_RUNNER, TOOL_RUNNER), (GUARDRAILS,)),
    "node.output_checked": ((GUARDRAILS,), (ROUTER,)),
    "budget.opened": _RECORD, "budget.reserved": _RECORD, "budget.settled": _RECORD, "budget.exceeded": _RECORD,
    "budget.alert": _RECORD,
}
"""Event type -> (who publishes it, which services consume its subject with a durable consumer). Telemetry
and clients read every event of a tenant through the `events` channel, so they are not repeated here."""

UNPUBLISHED = frozenset({"node.deadline_expired", "node.retry_due"})
"""Types only the router's own timers make and that never reach the bus (recorded in the store only)."""

QUERIES: dict[str, tuple[str, ...]] = {
    ROUTER_RPC: ("task.show", "task.history", "task.replay", "task.fork_plan"),
    TELEMETRY_RPC: ("ledger", "tasks.list", "ledger.rebuild"),
    AGENT_RUNNER_RPC: ("providers",),
    AUTH_RPC: ("credential.add", "credential.list", "credential.revoke"),
}
"""Query actions each service answers (core NATS request/reply, JSON bodies)."""

TENANT_SCOPED = frozenset({ROUTER_RPC, TELEMETRY_RPC, AUTH_RPC})
"""Services that also answer a query in a tenant's scope (about that tenant's tasks only)."""
TENANT_ONLY = frozenset({AUTH_RPC})
"""The credential authority answers a tenant admin only, in its tenant's scope (docs/security.md)."""
PLATFORM_ONLY = frozenset({(TELEMETRY_RPC, "ledger.rebuild")})
"""Queries answered on the unscoped subject only (`agentctl cost rebuild`: the ledger is every tenant's)."""

_TENANT, _KIND, _SENDER, _SERVICE, _PARTITION = "x0tenant0x", "x0kind0x", "x0sender0x", "x0service0x", "x0part0x"
"""Placeholder tokens the helpers accept (a tenant name, a sender name), replaced by parameters."""
_PLACEHOLDERS = {_TENANT: "{tenant}", _KIND: "{kind}", _SENDER: "{sender}", _SERVICE: "{service}",
                 _PARTITION: "{partition}"}

PARAMETERS: dict[str, dict[str, Any]] = {
    "tenant": {"description": "the tenant: one subject token matching ^[A-Za-z0-9_-]{1,64}$ (the envelope's "
                              "`tenant`); a tenant's credential may use its own only", "examples": ["acme"]},
    "kind": {"description": "the node kind a runner consumes", "enum": ["agent", "tool"]},
    "sender": {"description": "the sender's name within its tenant (the credential's user, also written in the "
                              "payload's requested_by / decided_by): a credential may publish under its own "
                              "name only", "examples": ["agentctl", "billing"]},
    "partition": {"description": f"the task's router partition: CRC-32 of the envelope's task_id (its UTF-8 "
                                 f"bytes) modulo {PARTITIONS}, in decimal",
                  "enum": [str(p) for p in range(PARTITIONS)]},
    "service": {"description": "the service that dead-lettered the message",
                "enum": [GUARDRAILS, ROUTER, AGENT_RUNNER, TOOL_RUNNER]},
}

SECURITY = {
    "nkey": {
        "type": "asymmetricEncryption",
        "description": (
            "NATS nkey authentication. Every connection holds an Ed25519 key pair (an nkey seed read from a "
            "credential file); on connect the server sends a nonce, the client signs it with its private key and "
            "sends the signature with its public key, and the server admits the public key only if it is "
            "configured, with that user's publish and subscribe permissions. No secret crosses the wire. "
            "AsyncAPI 3.0 has no scheme for signed-nonce authentication; `asymmetricEncryption` (a public-key "
            "scheme) is the closest. Services and tenants each have their own key: a tenant's may publish only "
            "its own requests (under its own sender name) and read only its own subjects."),
    },
}


def _address(subject: str) -> str:
    for token, parameter in _PLACEHOLDERS.items():
        subject = subject.replace(token, parameter)
    return subject


def _parameters(address: str) -> dict[str, Any]:
    return {name: {"$ref": f"#/components/parameters/{name}"} for name in PARAMETERS if f"{{{name}}}" in address}


def _bare_description(event_type: str) -> str:
    why = ("the subject publishers used before router partitions; any router takes it" if event_type in PARTITIONED
           else "the subject of contract v1 clients, on which only the platform's own credentials may publish")
    return f"{event_type} as its consumers also take it: {why}. Stored in the JetStream stream {STREAM}."


def _probe(event_type: str) -> Envelope:
    """An event of `event_type` carrying placeholder tokens, so `subject_for` builds its address."""
    data = {"kind": _KIND, "requested_by": _SENDER, "decided_by": _SENDER}
    return Envelope.model_construct(id="x", source="x", type=event_type, tenant=_TENANT, task_id="x",
                                    correlation_id="x", data=data)


def _schemas() -> tuple[dict[str, Any], dict[str, str]]:
    """components/schemas: the envelope and every payload, their `$defs` lifted beside them (a `$ref` in an
    AsyncAPI document resolves against the document). Returns the schemas and, per event type, its name."""
    from agent_engine.contracts.export import envelope_schema, event_schemas

    schemas: dict[str, Any] = {}
    names: dict[str, str] = {}

    def add(name: str, schema: dict[str, Any]) -> None:
        schema = dict(schema)
        schema.pop("$id", None)  # an $id would rebase the refs below it
        for sub, definition in schema.pop("$defs", {}).items():
            if schemas.get(sub, definition) != definition:
                raise ValueError(f"two definitions named {sub} differ; rename one model")
            schemas[sub] = definition
        schemas[name] = schema

    add("Envelope", envelope_schema())
    for event_type, schema in event_schemas().items():
        names[event_type] = event_type.replace(".", "_")
        add(names[event_type], schema)
    text = json.dumps(schemas).replace('"#/$defs/', '"#/components/schemas/')
    return json.loads(text), names


def _message(event_type: str, schema_name: str) -> dict[str, Any]:
    return {
        "name": event_type,
        "title": event_type,
        "summary": (EVENT_TYPES[event_type].__doc__ or event_type).strip().split("\n\n")[0].replace("\n", " "),
        "contentType": "application/cloudevents+json",
        "description": f"A CloudEvents 1.0 event in structured mode: the envelope with `type` {event_type} and "
                       f"`dataschema` {schema_uri(event_type)}, its payload in `data`.",
        "headers": {"$ref": "#/components/schemas/Headers"},
        "payload": {"allOf": [{"$ref": "#/components/schemas/Envelope"}, {
            "type": "object", "required": ["data"],
            "properties": {"type": {"const": event_type}, "dataschema": {"const": schema_uri(event_type)},
                           "data": {"$ref": f"#/components/schemas/{schema_name}"}}}]},
    }


HEADERS = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "the envelope's id: JetStream drops a repeat within "
                                                         "the stream's duplicate window"},
        "Ae-Task-Id": {"type": "string", "description": "the envelope's task id, so even the refusal of an "
                                                        "unreadable body names its task"},
        "traceparent": {"type": "string", "description": "W3C trace context of the publish span, when tracing is "
                                                         "on (docs/observability.md#traces)"},
        "tracestate": {"type": "string", "description": "W3C tracestate that goes with traceparent"},
    },
}


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document, as a JSON value (stable across runs)."""
    schemas, schema_names = _schemas()
    schemas["Headers"] = HEADERS
    schemas["QueryBody"] = {"type": "object", "description": "a JSON object; see docs/events.md#queries"}
    schemas["QueryAnswer"] = {"type": "object", "description": "the answer, or {\"error\": \"...\"}"}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    published = sorted(set(EVENT_TYPES) - UNPUBLISHED)

    def operation(op_id: str, action: str, channel: str, who: str, summary: str, message: str | None = None,
                  **extra: Any) -> None:
        ids = [message] if message else list(channels[channel]["messages"])
        operations[op_id] = {"action": action, "channel": {"$ref": f"#/channels/{channel}"},
                             "summary": summary, "tags": [{"name": who}],
                             "messages": [{"$ref": f"#/channels/{channel}/messages/{m}"} for m in ids], **extra}

    for event_type in published:
        messages[schema_names[event_type]] = _message(event_type, schema_names[event_type])
        address = _address(partition_subject(event_type, _TENANT, _PARTITION) if event_type in PARTITIONED
                           else subject_for(_probe(event_type)))
        channel = schema_names[event_type]
        channels[channel] = {
            "address": address, "title": event_type, "parameters": _parameters(address),
            "description": f"Stored in the JetStream stream {STREAM}.",
            "messages": {channel: {"$ref": f"#/components/messages/{channel}"}}}
        senders, receivers = FLOWS[event_type]
        for who in senders:
            operation(f"{who}.send.{event_type}", "send", channel, who, f"{who} publishes {event_type}")
        for who in receivers:
            operation(f"{who}.receive.{event_type}", "receive", channel, who,
                      f"{who} consumes {event_type} (durable pull consumer, explicit acks)")
        for other in consume_subjects(event_type, _TENANT):
            other = _address(other)
            if other == address or "*" in other or ">" in other:
                continue  # the address above, or a filter that only matches it
            also = f"{channel}_bare"
            assert also not in channels, f"{event_type}: a second subject besides {address}; name its channel"
            channels[also] = {**channels[channel], "address": other, "parameters": _parameters(other),
                              "description": _bare_description(event_type)}
            for who in receivers:
                operation(f"{who}.receive.{event_type}.bare", "receive", also, who,
                          f"{who} consumes {event_type} on {other} too")

    everything = _address(tenant_subject(_TENANT))
    channels["events"] = {
        "address": everything, "title": "every event of a tenant", "parameters": _parameters(everything),
        "description": f"Every subject above, for readers of all of a tenant's events (stream {STREAM}).",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages}}
    operation("telemetry.receive.events", "receive", "events", TELEMETRY,
              "telemetry folds every event into the ledger and its counts (ordered consumer)")
    operation("client.receive.events", "receive", "events", CLIENT,
              "a client follows its tenant's events (agentctl tail; a task's outcome)")

    heartbeat = _address(heartbeat_subject(_TENANT))
    messages["heartbeat"] = {"name": "heartbeat", "contentType": "application/json",
                             "summary": "a runner still works on a dispatch (core NATS, not stored)",
                             "payload": {"type": "object", "required": ["task_id", "node", "dispatch_id"],
                                         "properties": {k: {"type": "string"}
                                                        for k in ("task_id", "node", "dispatch_id")}}}
    channels["heartbeats"] = {"address": heartbeat, "parameters": _parameters(heartbeat),
                              "messages": {"heartbeat": {"$ref": "#/components/messages/heartbeat"}}}
    for who in (AGENT_RUNNER, TOOL_RUNNER):
        operation(f"{who}.send.heartbeat", "send", "heartbeats", who, f"{who} reports a running dispatch")
    operation("router.receive.heartbeat", "receive", "heartbeats", ROUTER, "the router moves the node's deadline")

    dead = _address(dlq_subject(_SERVICE))
    messages["dead_letter"] = {"name": "dead_letter", "summary": "a message a service could not use: its body and "
                               "headers, plus Ae-Original-Subject and Ae-Error (or a stub when too large)",
                               "payload": {}}
    channels["dead_letters"] = {"address": dead, "parameters": _parameters(dead),
                                "description": f"Stored in the JetStream stream {DLQ_STREAM}.",
                                "messages": {"dead_letter": {"$ref": "#/components/messages/dead_letter"}}}
    for who in (GUARDRAILS, ROUTER, AGENT_RUNNER, TOOL_RUNNER):
        operation(f"{who}.send.dead_letter", "send", "dead_letters", who, f"{who} dead-letters what it cannot use",
                  message="dead_letter")
    operation("client.receive.dead_letter", "receive", "dead_letters", CLIENT, "agentctl dlq list / replay")

    messages["query"] = {"name": "query", "contentType": "application/json",
                         "payload": {"$ref": "#/components/schemas/QueryBody"}}
    messages["query_answer"] = {"name": "query_answer", "contentType": "application/json",
                                "payload": {"$ref": "#/components/schemas/QueryAnswer"}}
    for service_rpc, actions in QUERIES.items():
        service = AUTHORITY if service_rpc == AUTH_RPC else service_rpc.split(".", 1)[1]
        for action in actions:
            forms = [] if service_rpc in TENANT_ONLY else [(False, rpc_subject(service_rpc, action))]
            if service_rpc in TENANT_SCOPED and (service_rpc, action) not in PLATFORM_ONLY:
                forms.append((True, _address(rpc_subject(service_rpc, action, _TENANT))))
            for scoped, address in forms:
                channel = f"{service}.{action}" + (".tenant" if scoped else "")
                channels[channel] = {"address": address, "parameters": _parameters(address),
                                     "title": f"query {service} {action}" + (" (tenant scope)" if scoped else ""),
                                     "messages": {"query": {"$ref": "#/components/messages/query"}}}
                reply = f"{channel}.reply"
                channels[reply] = {"address": None, "messages": {
                    "query_answer": {"$ref": "#/components/messages/query_answer"}}}
                scope = " about that tenant's tasks only" if scoped else ""
                operation(f"{service}.answer.{action}" + (".tenant" if scoped else ""), "receive", channel, service,
                          f"{service} answers {action}{scope}",
                          reply={"channel": {"$ref": f"#/channels/{reply}"},
                                 "messages": [{"$ref": f"#/channels/{reply}/messages/query_answer"}]})

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Agent Engine bus",
            "version": f"{CONTRACT_VERSION}.0.0",
            "description": "Every subject of the engine's NATS bus: events (CloudEvents 1.0, structured mode, "
                           f"contract version {CONTRACT_VERSION}) on JetStream, heartbeats, dead letters and "
                           "queries. Operations are tagged with the component that performs them: "
                           + ", ".join(SERVICES) + f", or {CLIENT} (another system or agentctl). Generated "
                           "from agent_engine.contracts (asyncapi.py); do not edit.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"nats": {"host": "localhost:4222", "protocol": "nats",
                             "description": "a NATS server with JetStream (the local stack's is on a free port, "
                                            "named in $AE_HOME/stack.json)",
                             "security": [{"$ref": "#/components/securitySchemes/nkey"}]}},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages, "parameters": PARAMETERS,
                       "securitySchemes": SECURITY},
    }

