"""Who may do what on the bus, checked without a server: each service's rights cover the subjects its code
uses and nothing a client or another service sends; each tenant role confines to its tenant and name; the
keyring issues, renders and revokes. (tests/test_e2e_trust.py checks the same against a real server.)"""

from __future__ import annotations

import itertools
import json
import re
import stat
from pathlib import Path

import pytest

from agent_engine.contracts.credentials import ROLES, load_credential
from agent_engine.contracts.envelope import TENANT_PATTERN, command
from agent_engine.contracts.events import EVENT_TYPES, NodeDispatched, TaskCancelRequested, TaskRequested
from agent_engine.contracts.subjects import (
    AGENT_RUNNER_RPC,
    AUDIT_STREAM,
    DLQ_STREAM,
    IDENTITY_PATTERN,
    PARTITIONED,
    PARTITIONS,
    ROUTER_RPC,
    STREAM,
    TELEMETRY_RPC,
    dlq_subject,
    partition_durable,
    partition_subject,
    rpc_subject,
    subject_for,
    tail_consumer,
    type_subject,
)
from agent_engine.runtime.auth import Rights, public_key, service_rights, tenant_rights
from agent_engine.runtime.keyring import Keyring, KeyringError
from agent_engine.runtime.queries import reply_allowed

SERVICES = service_rights(EVENT_TYPES, ["acme", "beta"])
"""With two tenants served: each service's artifact rights name their buckets."""


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` one token, `>` the rest (one token at least)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def may_publish(rights: Rights, subject: str) -> bool:
    return any(matches(p, subject) for p in rights.publish)


def may_subscribe(rights: Rights, subject: str) -> bool:
    return any(matches(p, subject) for p in rights.subscribe)


def test_the_matcher_follows_nats_rules() -> None:
    assert matches("ae.*.task.accepted", "ae.acme.task.accepted")
    assert not matches("ae.*.task.accepted", "ae.acme.task.accepted.x")
    assert matches("ae.acme.>", "ae.acme.task.requested.bob") and not matches("ae.acme.>", "ae.acme")


@pytest.mark.parametrize(("service", "allowed", "refused"), [
    ("guardrails", ["task.accepted", "task.rejected"], ["node.completed", "node.dispatched", "task.succeeded"]),
    ("agent-runner", ["node.completed", "node.errored", "llm.called", "node.tools_requested"],
     ["task.accepted", "task.succeeded", "node.dispatched"]),
    ("tool-runner", ["node.completed", "node.errored"], ["llm.called", "task.accepted", "node.succeeded"]),
    ("telemetry", [], ["node.completed", "task.accepted", "task.succeeded"]),
    ("router", ["task.started", "node.succeeded", "task.succeeded", "task.rejected", "node.dispatched"],
     ["task.accepted", "node.completed", "llm.called", "node.tools_requested"]),
])
def test_a_service_publishes_its_own_event_types_only(service: str, allowed: list[str], refused: list[str]) -> None:
    rights = SERVICES[service]
    for kind, t in [("allowed", t) for t in allowed] + [("refused", t) for t in refused]:
        subject = type_subject(t, "acme") + (".agent" if t == "node.dispatched" else "")
        assert may_publish(rights, subject) == (kind == "allowed"), (service, t)
        if t in PARTITIONED:  # in any partition, and bare (as a service not yet upgraded sends it)
            assert may_publish(rights, partition_subject(t, "acme", 7)) == (kind == "allowed"), (service, t)
    assert may_publish(rights, dlq_subject(service)) and not may_publish(rights, dlq_subject("router" if service != "router" else "guardrails"))


def test_no_service_sends_a_request_under_a_persons_name() -> None:
    for service, rights in SERVICES.items():
        for t in ("task.requested", "task.cancel_requested", "node.approval_decided", "task.fork_requested"):
            assert not may_publish(rights, f"{type_subject(t, 'acme')}.alice"), (service, t)
    # the router cancels a subtask under no one's name: the bare subject
    cancel = command(TaskCancelRequested(reason="parent", requested_by="task 1", parent_id="1"), tenant="acme",
                     task_id="2", source="router")
    assert may_publish(SERVICES["router"], subject_for(cancel))


def test_each_service_consumes_its_own_durable_and_answers_its_own_queries() -> None:
    for service, durable in (("guardrails", "guardrails"), ("router", "router"), ("agent-runner", "agent-runner"),
                             ("tool-runner", "tool-runner")):
        rights = SERVICES[service]
        assert may_publish(rights, f"$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.{durable}")
        others = {"guardrails", "router", "agent-runner", "tool-runner"} - {durable}
        assert not any(may_publish(rights, f"$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.{o}") for o in others)
        assert not may_publish(rights, "$JS.API.STREAM.DELETE.AE_EVENTS")
        assert not may_publish(rights, "$JS.API.STREAM.PURGE.AE_EVENTS")
    for partition in range(PARTITIONS):  # whichever partitions it comes to own
        assert may_publish(SERVICES["router"], f"$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.{partition_durable(partition)}")
        assert not may_publish(SERVICES["agent-runner"],
                               f"$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.{partition_durable(partition)}")
    assert may_subscribe(SERVICES["router"], rpc_subject(ROUTER_RPC, "task.show", "acme"))
    assert not may_subscribe(SERVICES["tool-runner"], rpc_subject(ROUTER_RPC, "task.show"))
    assert SERVICES["router"].responses and not SERVICES["tool-runner"].responses


def test_tenant_roles_are_nested_and_confined_to_their_tenant_and_name() -> None:
    rights = {role: tenant_rights("acme", "bob", role) for role in ROLES}
    for lower, higher in itertools.pairwise(ROLES):
        assert set(rights[lower].publish) < set(rights[higher].publish), (lower, higher)
    request = command(TaskRequested(workflow="w", requested_by="bob"), tenant="acme", task_id="t", source="s")
    assert not may_publish(rights["viewer"], subject_for(request))
    assert may_publish(rights["submitter"], subject_for(request))
    assert not may_publish(rights["submitter"], "ae.acme.task.cancel_requested.bob")
    assert may_publish(rights["operator"], "ae.acme.task.cancel_requested.bob")
    assert may_publish(rights["operator"], "ae.acme.node.approval_decided.bob")
    for role, r in rights.items():
        for subject in ("ae.acme.task.requested.alice", "ae.other.task.requested.bob", "ae.acme.task.accepted",
                        "ae.acme.node.completed", "ae.acme.task.accepted.3", "ae.acme.node.completed.3", "ae.acme.node.dispatched.tool", rpc_subject(ROUTER_RPC, "task.show"),
                        rpc_subject(ROUTER_RPC, "task.show", "other"), "$JS.API.STREAM.PURGE.AE_EVENTS",
                        "$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.router", "$KV.ae_workflows.other.w"):
            assert not may_publish(r, subject), (role, subject)
        assert may_publish(r, rpc_subject(ROUTER_RPC, "task.show", "acme"))
        assert may_publish(r, rpc_subject(TELEMETRY_RPC, "ledger", "acme"))
        assert may_publish(r, f"$JS.API.CONSUMER.CREATE.AE_EVENTS.{tail_consumer('acme', 'bob')}.ae.acme.>")
        assert not may_publish(r, f"$JS.API.CONSUMER.CREATE.AE_EVENTS.{tail_consumer('acme', 'bob')}.ae.other.>")
        assert may_subscribe(r, "ae.acme.task.succeeded") and not may_subscribe(r, "ae.other.task.succeeded")
        assert may_subscribe(r, "_INBOX.acme.bob.x1") and not may_subscribe(r, "_INBOX.acme.alice.x1")
        assert not may_subscribe(r, "_INBOX_SVC.router.x1") and not r.responses
    assert may_publish(rights["admin"], "$KV.ae_workflows.acme.w")
    assert not may_publish(rights["operator"], "$KV.ae_workflows.acme.w")


def test_tail_consumer_names_never_collide_across_tenants() -> None:
    """The separator is a character no tenant or user name may contain, so a name says whose it is."""
    assert not re.match(TENANT_PATTERN, "a@b") and not re.match(IDENTITY_PATTERN, "a@b")
    assert tail_consumer("a_b", "c") != tail_consumer("a", "b_c")
    assert tail_consumer("a", "b").split("@") == ["tail", "a", "b"]


def test_a_dispatch_subject_is_the_routers_to_publish() -> None:
    dispatch = command(NodeDispatched.model_construct(kind="tool"), tenant="acme", task_id="t", source="r")  # type: ignore[call-arg]
    dispatch = dispatch.model_copy(update={"type": "node.dispatched", "data": {"kind": "tool"}})
    assert may_publish(SERVICES["router"], subject_for(dispatch))
    assert not may_publish(SERVICES["tool-runner"], subject_for(dispatch))


def test_every_stream_a_service_reads_or_changes_is_named_never_matched_by_wildcard() -> None:
    """An allow-list: no service's right on a stream's messages, info or purge has `*` for the stream (that
    is every stream, one made tomorrow too), and no credential's rights carry a deny. Only the router looks
    up and creates streams by `*`: it makes each tenant's bucket (router/buckets.py)."""
    ops = ("STREAM.MSG.GET", "DIRECT.GET", "STREAM.INFO", "STREAM.PURGE", "STREAM.MSG.DELETE", "STREAM.CREATE",
           "STREAM.UPDATE", "STREAM.DELETE")
    for service, rights in SERVICES.items():
        wild = sorted(p for p in rights.publish for op in ops if p.startswith(f"$JS.API.{op}.*"))
        expected = ["$JS.API.STREAM.CREATE.*", "$JS.API.STREAM.INFO.*"] if service == "router" else []
        assert wild == expected, service
        assert not may_publish(rights, "$JS.API.STREAM.MSG.GET.NEW_STREAM"), service
        assert "deny" not in json.dumps(rights.as_conf()), service
    for role in ROLES:
        assert "deny" not in json.dumps(tenant_rights("acme", "bob", role).as_conf())


def test_each_service_reads_exactly_the_streams_it_needs() -> None:
    """Message get (and direct get), by stream: the KV buckets each reads through the KV API, the served
    tenants' artifact buckets for those that store or show artifacts; never the event, dead-letter or audit
    stream, which are read through consumers."""
    artifacts = {"OBJ_ae_artifacts_acme", "OBJ_ae_artifacts_beta"}
    expected = {
        "guardrails": {"KV_ae_rate_limits", "KV_ae_workflows"} | artifacts,  # its limits; input schemas
        "router": {"KV_ae_workflows", "KV_ae_mcp_tools"},  # workflows; the MCP catalogue
        "agent-runner": artifacts,  # upstream outputs in its prompts
        "tool-runner": {"KV_ae_tool_calls", "KV_ae_mcp_tools"} | artifacts,  # its calls; its catalogue
        "telemetry": set(),  # the event stream, through its consumer
        "authority": set(),
        "dashboard": artifacts,  # what a task page shows
    }
    for service, rights in SERVICES.items():
        read = {p.split(".")[5] for p in rights.publish if p.startswith("$JS.API.STREAM.MSG.GET.")}
        assert read == expected[service], service
        direct = {p.split(".")[4] for p in rights.publish if p.startswith("$JS.API.DIRECT.GET.")}
        assert direct <= read, service


def test_the_keyring_serves_the_tenants_it_declares_or_issued_credentials_to(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys").ensure_platform()
    assert ring.tenants() == ["default"]  # agentctl's tenant when none is named
    assert ring.declare("acme") is True and ring.declare("acme") is False
    ring.issue("beta", "billing", "viewer")
    assert ring.tenants() == ["acme", "beta", "default"]
    conf = ring.authorization().render()
    for tenant in ("acme", "beta"):
        assert f"$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_{tenant}" in conf
    ring.revoke("beta")
    assert ring.tenants() == ["acme", "default"]  # a declaration stays; a tenant with only credentials goes
    with pytest.raises(KeyringError, match="tenant 'a.b' is not valid"):
        ring.declare("a.b")


def test_the_keyring_issues_renders_and_revokes(tmp_path: Path) -> None:
    ring = Keyring(tmp_path / "keys").ensure_platform()
    path = ring.issue("acme", "billing", "submitter")
    cred = load_credential(path)
    assert (cred.tenant, cred.user, cred.role, cred.inbox) == ("acme", "billing", "submitter", "_INBOX.acme.billing")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    [entry] = ring.registry()
    assert entry["public_key"] == public_key(cred.seed) and cred.seed not in (tmp_path / "keys/registry.json").read_text()
    with pytest.raises(KeyringError, match="already has a credential named 'billing'"):
        ring.issue("acme", "billing", "viewer")
    conf = ring.authorization().render()
    assert public_key(cred.seed) in conf and cred.seed not in conf
    users = json.loads(conf[conf.index("{"):])["users"]
    assert len(users) == 9 and len({u["nkey"] for u in users}) == 9  # seven services, the platform, billing
    assert (tmp_path / "keys/auth.conf").exists()  # written for a server this keyring did not start
    assert [e["user"] for e in ring.revoke("acme")] == ["billing"] and not path.exists()
    with pytest.raises(KeyringError, match="no credentials of tenant 'acme'"):
        ring.revoke("acme")


def test_rights_that_would_reach_other_tenants_or_other_services_are_not_granted() -> None:
    admin = tenant_rights("acme", "root", "admin")
    assert not may_publish(admin, "$JS.API.STREAM.INFO.KV_ae_workflows")  # its info lists every tenant's keys
    assert not may_publish(admin, "$JS.API.STREAM.MSG.GET.KV_ae_workflows")  # the key would be in the body
    assert may_publish(admin, "$JS.API.DIRECT.GET.KV_ae_workflows.$KV.ae_workflows.acme.w")
    assert not may_publish(admin, "$JS.API.DIRECT.GET.KV_ae_workflows.$KV.ae_workflows.beta.w")
    assert not may_publish(SERVICES["telemetry"], "$JS.API.CONSUMER.DELETE.AE_EVENTS.router")
    assert not may_publish(SERVICES["router"], "$KV.ae_workflows.acme.w")  # it reads workflows, never writes


@pytest.mark.parametrize(("reply", "scope", "allowed"), [
    ("_INBOX.acme.bob.x1.y", "acme", True),
    ("_INBOX.acmex.bob.x1", "acme", False),
    ("_INBOX_SVC.admin.x1", "acme", False),
    ("$KV.ae_workflows.beta.w", "acme", False),
    ("ae.beta.task.accepted", "acme", False),
    ("_INBOX_SVC.admin.x1", None, True),
    ("_INBOX.x1.y", None, True),
    ("aerpc.router.tenant.forget", None, False),
    ("$KV.ae_workflows.beta.w", None, False),
])
def test_a_query_is_answered_on_an_inbox_of_its_scope_only(reply: str, scope: str | None, allowed: bool) -> None:
    """A reply subject is the asker's to choose: answered anywhere, it would let a tenant make a service
    publish on another tenant's subjects (allow_responses grants one publish on whatever the reply names)."""
    assert reply_allowed(reply, scope) is allowed


def test_the_tool_gate_only_guardrails_clears_a_call_and_the_tool_runner_reads_only_cleared_calls() -> None:
    cleared = type_subject("tool.call_cleared", "acme")
    assert [s for s, r in SERVICES.items() if may_publish(r, cleared)] == ["guardrails"]
    assert may_publish(SERVICES["guardrails"], partition_subject("node.errored", "acme", 3))  # a refusal
    assert may_publish(SERVICES["guardrails"], "$JS.API.CONSUMER.MSG.NEXT.AE_EVENTS.guardrails-tools")
    tool_runner = SERVICES["tool-runner"]
    api = "$JS.API.CONSUMER"
    assert may_publish(tool_runner, f"{api}.CREATE.AE_EVENTS.tool-runner.ae.*.tool.call_cleared")
    for refused in (f"{api}.CREATE.AE_EVENTS.tool-runner.ae.*.node.dispatched.tool",
                    f"{api}.CREATE.AE_EVENTS.tool-runner.ae.*.>", f"{api}.CREATE.AE_EVENTS.tool-runner",
                    f"{api}.DURABLE.CREATE.AE_EVENTS.tool-runner", f"{api}.CREATE.AE_EVENTS",
                    f"{api}.MSG.NEXT.AE_EVENTS.guardrails-tools"):
        assert not may_publish(tool_runner, refused), refused


def test_guardrails_keeps_its_rate_limits_and_reads_workflows_only() -> None:
    rights = SERVICES["guardrails"]
    assert may_publish(rights, "$KV.ae_rate_limits.acme.tenant")
    assert may_publish(rights, "$JS.API.DIRECT.GET.KV_ae_rate_limits.$KV.ae_rate_limits.acme.tenant")
    assert may_publish(rights, "$JS.API.DIRECT.GET.KV_ae_workflows.$KV.ae_workflows.acme.w")
    assert not may_publish(rights, "$KV.ae_workflows.acme.w")
    for other in ("router", "agent-runner", "tool-runner", "telemetry"):
        assert not may_publish(SERVICES[other], "$KV.ae_rate_limits.acme.tenant")


def test_only_guardrails_asks_the_agent_runners_judge_and_no_tenant_can() -> None:
    """The classifier's query costs a model call: guardrails may ask it, the agent-runner answers it; no other
    service asks, and no tenant credential of any role may publish it in either form."""
    judge = rpc_subject(AGENT_RUNNER_RPC, "judge")
    assert [s for s, r in SERVICES.items() if may_publish(r, judge)] == ["guardrails"]
    assert judge in SERVICES["agent-runner"].subscribe or any(
        s.endswith(".>") and judge.startswith(s[:-1]) for s in SERVICES["agent-runner"].subscribe)
    for role in ROLES:
        rights = tenant_rights("acme", "ana", role)
        assert not may_publish(rights, judge) and not may_publish(rights, rpc_subject(AGENT_RUNNER_RPC, "judge", "acme"))


def test_a_tenant_reads_only_its_own_artifact_bucket_and_never_writes_one() -> None:
    for role in ROLES:
        rights = tenant_rights("acme", "bob", role)
        assert may_publish(rights, "$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_acme")
        assert not may_publish(rights, "$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_acmex")
        assert not may_publish(rights, "$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_beta")
        assert not may_publish(rights, "$O.ae_artifacts_acme.C.x")  # no writing, no deleting its bucket
        assert not may_publish(rights, "$JS.API.STREAM.DELETE.OBJ_ae_artifacts_acme")
    for service in ("agent-runner", "tool-runner", "guardrails"):  # they store and read large outputs
        assert may_publish(SERVICES[service], "$O.ae_artifacts_acme.C.nuid1"), service
        assert may_publish(SERVICES[service], "$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_acme"), service
        assert not may_publish(SERVICES[service], "$JS.API.STREAM.DELETE.OBJ_ae_artifacts_acme"), service
    assert not may_publish(SERVICES["guardrails"], "$JS.API.STREAM.PURGE.KV_ae_workflows")
    # only the output gate deletes one (an unredacted output it stored again redacted)
    assert [s for s in SERVICES if may_publish(SERVICES[s], "$JS.API.STREAM.PURGE.OBJ_ae_artifacts_acme")] == [
        "guardrails"]
    assert not may_publish(SERVICES["router"], "$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_acme")  # never fetches
    for service in ("agent-runner", "tool-runner", "guardrails", "dashboard"):  # a tenant not served: nothing
        for subject in ("$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_gamma", "$JS.API.STREAM.INFO.OBJ_ae_artifacts_gamma",
                        "$O.ae_artifacts_gamma.C.nuid1", "$JS.API.STREAM.PURGE.OBJ_ae_artifacts_gamma"):
            assert not may_publish(SERVICES[service], subject), (service, subject)


def test_the_dashboard_decides_under_its_operators_names_only_on_the_bare_subject() -> None:
    """The dashboard sends node.approval_decided as `dashboard:<operator>` (no subject token, so the bare
    subject): it may never send under a tenant credential's name, nor any other request or event."""
    rights = SERVICES["dashboard"]
    assert may_publish(rights, type_subject("node.approval_decided", "acme"))
    assert not may_publish(rights, f"{type_subject('node.approval_decided', 'acme')}.alice")
    for t in ("task.requested", "task.cancel_requested", "node.completed", "task.succeeded"):
        assert not may_publish(rights, type_subject(t, "acme")), t
    assert may_publish(rights, rpc_subject(ROUTER_RPC, "task.show"))
    for action in ("ledger.rebuild", "task.replay", "tenant.forget"):  # only what it reads with
        assert not may_publish(rights, rpc_subject(TELEMETRY_RPC, action))
        assert not may_publish(rights, rpc_subject(ROUTER_RPC, action))
    assert may_subscribe(rights, "ae.acme.task.succeeded") and not may_subscribe(rights, "_INBOX.acme.alice.x")


def test_the_dashboard_reads_artifacts_by_message_get_only_and_no_engine_stream() -> None:
    """The dashboard shows any tenant's task, so it reads every artifact bucket; by message get only (what
    ArtifactStore.get uses): never the event, dead-letter or audit stream nor a bucket's by that right, never
    a write, a delete, a consumer or a direct get."""
    rights = SERVICES["dashboard"]
    for tenant in ("acme", "beta"):
        assert may_publish(rights, f"$JS.API.STREAM.MSG.GET.OBJ_ae_artifacts_{tenant}")
    for stream in (STREAM, DLQ_STREAM, AUDIT_STREAM, "KV_ae_workflows", "KV_ae_tool_calls", "KV_ae_rate_limits",
                   "KV_ae_mcp_tools"):
        assert not may_publish(rights, f"$JS.API.STREAM.MSG.GET.{stream}"), stream
    for subject in ("$O.ae_artifacts_acme.C.nuid1", "$O.ae_artifacts_acme.M.x",
                    "$JS.API.STREAM.CREATE.OBJ_ae_artifacts_acme", "$JS.API.STREAM.DELETE.OBJ_ae_artifacts_acme",
                    "$JS.API.STREAM.PURGE.OBJ_ae_artifacts_acme", "$JS.API.STREAM.MSG.DELETE.OBJ_ae_artifacts_acme",
                    "$JS.API.DIRECT.GET.OBJ_ae_artifacts_acme", "$JS.API.CONSUMER.CREATE.OBJ_ae_artifacts_acme"):
        assert not may_publish(rights, subject), subject
