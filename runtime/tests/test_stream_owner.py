"""Who may create the engine's streams and whose consumers a service may create, checked without a server
(runtime/tests/test_stream_creation_rights.py checks the same against a real nats-server).

A review of issue #16 found two rights broader than any service needs: every service could create AE_EVENTS,
AE_DLQ and the tool-call bucket when missing, with any subjects; and telemetry could create or update a consumer
of any name on the event stream, the router's durable included."""

from __future__ import annotations

from agent_engine.contracts.credentials import Credential
from agent_engine.contracts.events import EVENT_TYPES
from agent_engine.runtime.auth import service_rights
from agent_engine.runtime.keyring import SERVICES
from agent_engine.runtime.streamowner import ENGINE_STREAMS, ROUTER_BUCKETS, creates_streams

RIGHTS = service_rights(EVENT_TYPES, ["acme"])
API = "$JS.API"
SEED = "SU" + "A" * 56


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest (one token at least)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may(service: str, subject: str) -> bool:
    return any(matches(p, subject) for p in RIGHTS[service].publish)


def consumer_names(service: str) -> set[str]:
    """The consumer names a service's create rights spell out on the event stream."""
    names = set()
    for p in RIGHTS[service].publish:
        tokens = p.split(".")
        if p.startswith(f"{API}.CONSUMER.CREATE.AE_EVENTS.") or p.startswith(f"{API}.CONSUMER.DURABLE.CREATE.AE_EVENTS."):
            names.add(tokens[6] if tokens[3] == "DURABLE" else tokens[5])
    return names


def test_only_the_router_may_create_the_engines_streams_and_every_service_may_look_them_up() -> None:
    assert ENGINE_STREAMS == ("AE_EVENTS", "AE_DLQ", "KV_ae_tool_calls")
    for service in SERVICES:
        for stream in ENGINE_STREAMS:
            assert may(service, f"{API}.STREAM.INFO.{stream}"), (service, stream)
            assert may(service, f"{API}.STREAM.CREATE.{stream}") is (service == "router"), (service, stream)
            assert not may(service, f"{API}.STREAM.UPDATE.{stream}"), (service, stream)


def test_the_routers_buckets_are_created_by_the_router_only_and_the_rate_limits_by_their_one_user() -> None:
    assert ROUTER_BUCKETS == ("ae_tool_calls", "ae_workflows", "ae_mcp_tools")
    for service in SERVICES:
        for bucket in ROUTER_BUCKETS:
            assert may(service, f"{API}.STREAM.CREATE.KV_{bucket}") is (service == "router"), (service, bucket)
        assert may(service, f"{API}.STREAM.CREATE.KV_ae_rate_limits") is (service in ("guardrails", "router")), service
    assert may("guardrails", f"{API}.STREAM.INFO.KV_ae_workflows")  # it still looks it up, and waits for it
    assert may("tool-runner", f"{API}.STREAM.INFO.KV_ae_mcp_tools") and may("tool-runner", "$KV.ae_mcp_tools.s.t")


def test_no_service_may_create_a_consumer_of_any_name_on_the_event_stream() -> None:
    """A consumer's name is spelled in every create right (no `*` or `>` in its place): a service creates or
    updates its own durables only. Telemetry's unnamed create is the only bare one (its ordered consumer)."""
    for service in SERVICES:
        for p in RIGHTS[service].publish:
            tokens = p.split(".")
            if p.startswith(f"{API}.CONSUMER.CREATE.AE_EVENTS") and len(tokens) > 5:
                assert tokens[5] not in ("*", ">"), (service, p)
            if p.startswith(f"{API}.CONSUMER.DURABLE.CREATE.AE_EVENTS"):
                assert tokens[6] not in ("*", ">"), (service, p)
        bare = may(service, f"{API}.CONSUMER.CREATE.AE_EVENTS")
        assert bare is (service == "telemetry"), service


def test_a_service_may_not_create_or_update_another_services_durable() -> None:
    owned = {service: consumer_names(service) for service in SERVICES}
    assert owned["telemetry"] == set() and owned["authority"] == set() and owned["dashboard"] == set()
    assert {"router", "guardrails", "guardrails-tools", "guardrails-output", "agent-runner", "tool-runner"} <= {
        name for names in owned.values() for name in names}
    for service in SERVICES:
        others = set().union(*(names for other, names in owned.items() if other != service)) - owned[service]
        for name in others:
            for subject in (f"{API}.CONSUMER.CREATE.AE_EVENTS.{name}",
                            f"{API}.CONSUMER.CREATE.AE_EVENTS.{name}.ae.acme.task.requested",
                            f"{API}.CONSUMER.DURABLE.CREATE.AE_EVENTS.{name}"):
                assert not may(service, subject), (service, subject)
    assert may("router", f"{API}.CONSUMER.CREATE.AE_EVENTS.router")  # its own, still


def _credential(kind: str, user: str) -> Credential:
    tenant, role = ("acme", "admin") if kind == "tenant" else (None, None)
    return Credential.model_validate({"kind": kind, "user": user, "tenant": tenant, "role": role, "seed": SEED})


def test_the_router_and_the_platform_create_the_streams_every_other_service_waits_for_them() -> None:
    assert creates_streams(None)  # a server without authorization: anyone may
    assert creates_streams(_credential("platform", "admin"))
    assert creates_streams(_credential("service", "router"))
    for service in set(SERVICES) - {"router"}:
        assert not creates_streams(_credential("service", service)), service
    assert not creates_streams(_credential("tenant", "bob"))
