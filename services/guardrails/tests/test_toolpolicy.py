"""The tool gate's pure decision: each rule of a tool policy, that a workflow's policy only tightens its
tenant's, that approval comes after refusals, and that no refusal summary carries an argument value."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from agent_engine.contracts.envelope import command
from agent_engine.contracts.events import DispatchedTool, NodeDispatched
from agent_engine.contracts.policy import ToolPolicy
from agent_engine.guardrails.policy import PolicyError, PolicyFile
from agent_engine.guardrails.toolgate import ToolPolicies, answer
from agent_engine.guardrails.toolpolicy import Layer, decide, glob_matches, normalise


def call(builtin: str = "workspace_read", name: str = "", **args: Any) -> DispatchedTool:
    return DispatchedTool(name=name or builtin, builtin=builtin, args=args)


def tenant(**policy: Any) -> list[Layer]:
    return [Layer("tenant policy", ToolPolicy.model_validate(policy))]


def test_an_empty_policy_allows_everything_and_checks_nothing() -> None:
    decision = decide(call(path="../../etc/passwd"), "acme", tenant())
    assert decision.outcome == "allowed" and decision.checked == ()


def test_deny_names_a_tool_by_its_tools_yaml_name_or_its_builtin() -> None:
    assert decide(call(name="reader", path="a"), "acme", tenant(deny=["reader"])).rule == "tool.deny"
    assert decide(call(name="reader", path="a"), "acme", tenant(deny=["workspace_read"])).rule == "tool.deny"
    assert decide(call(name="reader", path="a"), "acme", tenant(deny=["other"])).outcome == "allowed"


def test_deny_destructive_refuses_side_effecting_calls_and_the_ones_listed() -> None:
    policy = tenant(deny_destructive=True, destructive=["python"])
    assert decide(call("workspace_append", path="a", text="x"), "acme", policy).rule == "tool.destructive"
    flagged = DispatchedTool(name="note", builtin="text_stats", args={"text": "x"}, side_effects=True)
    assert decide(flagged, "acme", policy).rule == "tool.destructive"
    assert decide(call("python", code="1"), "acme", policy).rule == "tool.destructive"
    assert decide(call("workspace_read", path="a"), "acme", policy).outcome == "allowed"


def test_hosts_deny_wins_and_allow_is_a_closed_list() -> None:
    policy = tenant(hosts={"allow": ["*.example.com", "api.test"], "deny": ["evil.example.com"]})
    fetch = lambda url: decide(call("http_fetch", url=url), "acme", policy)  # noqa: E731
    assert fetch("https://docs.example.com/x").outcome == "allowed"
    assert fetch("https://API.test:8443/x").outcome == "allowed"
    assert fetch("https://evil.example.com/").rule == "tool.host"
    assert fetch("https://example.com/").rule == "tool.host"  # *.domain is subdomains only
    assert fetch("https://other.org/").reason == ("tenant policy allows only hosts ['*.example.com', 'api.test']; "
                                                  "the host argument 'url' names is not one of them")
    assert fetch("https://evil.example.com/").reason == "tenant policy denies the host argument 'url' names"
    assert fetch("not a url").rule == "tool.host"


def test_paths_are_normalised_before_the_globs_and_cannot_leave_the_workspace() -> None:
    policy = tenant(paths={"allow": ["docs/**"], "deny": ["docs/private/**"]})
    read = lambda path: decide(call(path=path), "acme", policy)  # noqa: E731
    assert read("docs/intro.md").outcome == "allowed"
    assert read("./docs/a/../b.md").outcome == "allowed"
    assert read("docs/../secrets.txt").reason == ("tenant policy allows only paths matching ['docs/**']; "
                                                  "argument 'path' matches none")
    assert read("docs/private/../private/key").rule == "tool.path"
    assert read("../outside").rule == "tool.path"
    assert read("/etc/passwd").rule == "tool.path"
    # workspace_list's default path is the workspace itself, which docs/** does not allow
    assert decide(call("workspace_list"), "acme", policy).rule == "tool.path"


@pytest.mark.parametrize(("glob", "path", "matches"), [
    ("docs/**", "docs", True), ("docs/**", "docs/a/b.md", True), ("docs/**", "docsx/a", False),
    ("**/*.md", "a/b/c.md", True), ("**/*.md", "c.md", True), ("*.md", "a/c.md", False),
    ("a/**/b", "a/b", True), ("a/**/b", "a/x/y/b", True), ("**", "x/y", True), ("a?c", "abc", True),
])
def test_globs(glob: str, path: str, matches: bool) -> None:
    assert glob_matches(glob, path) is matches


def test_normalise() -> None:
    assert normalise("./a/../b") == "b" and normalise("docs/./x/") == "docs/x"
    assert normalise("a/../../x") is None and normalise("/etc") is None and normalise("C:/x") is None


def test_deny_args_names_the_rule_and_the_argument_never_the_text() -> None:
    policy = tenant(deny_args=[{"id": "aws-key", "pattern": r"AKIA[0-9A-Z]{16}"},
                               {"id": "drop", "pattern": "(?i)drop table", "tools": ["python"]}])
    secret = "AKIAABCDEFGHIJKLMNOP"
    refused = decide(call("http_fetch", url="https://x.test", headers={"X-Key": secret}), "acme", policy)
    assert refused.rule == "tool.args.aws-key"
    assert "headers.X-Key" in refused.reason
    assert secret not in refused.reason and secret not in refused.summary and "headers" not in refused.summary
    assert decide(call("text_stats", text="DROP TABLE x"), "acme", policy).outcome == "allowed"  # not for it
    assert decide(call("python", code="drop table x"), "acme", policy).rule == "tool.args.drop"


def test_tenant_paths_confine_workspace_calls_to_the_tenants_folder() -> None:
    policy = tenant(tenant_paths=True)
    assert decide(call(path="acme/notes.md"), "acme", policy).outcome == "allowed"
    refused = decide(call(path="globex/notes.md"), "acme", policy)
    assert refused.rule == "tool.tenant" and "'acme/'" in refused.reason
    assert decide(call(path="acme/../globex/x"), "acme", policy).rule == "tool.tenant"
    assert decide(call("workspace_list", path="."), "acme", policy).rule == "tool.tenant"


def test_approval_holds_a_call_unless_approved_and_only_after_every_refusal_rule() -> None:
    policy = tenant(approval=["workspace_append"], paths={"deny": ["locked/**"]})
    append = DispatchedTool(name="write", builtin="workspace_append", args={"path": "notes.md", "text": "x"})
    held = decide(append, "acme", policy)
    assert (held.outcome, held.rule) == ("approval_required", "tool.approval")
    approved = append.model_copy(update={"approved": True})
    assert decide(approved, "acme", policy).outcome == "allowed"
    denied = approved.model_copy(update={"args": {"path": "locked/x", "text": "x"}})
    assert decide(denied, "acme", policy).rule == "tool.path"  # approval never lifts a refusal
    assert decide(append.model_copy(update={"args": {"path": "locked/x", "text": "x"}}), "acme",
                  policy).outcome == "refused"  # nobody is asked about a call that would be refused


def test_a_workflow_policy_only_tightens_its_tenants() -> None:
    layers = [Layer("tenant policy", ToolPolicy(paths={"deny": ["secret/**"]})),  # type: ignore[arg-type]
              Layer("workflow policy", ToolPolicy(paths={"allow": ["secret/**", "docs/**"]}))]  # type: ignore[arg-type]
    refused = decide(call(path="secret/x"), "acme", layers)
    assert refused.rule == "tool.path" and refused.reason.startswith("tenant policy denies")
    assert decide(call(path="docs/x"), "acme", layers).outcome == "allowed"
    assert decide(call(path="other/x"), "acme", layers).reason.startswith("workflow policy allows only")
    assert decide(call(path="docs/x"), "acme", layers).checked == ("tool.path",)


def test_bad_policies_are_refused_with_the_field() -> None:
    for bad, field in (({"deny_args": [{"id": "x", "pattern": "("}]}, "pattern"),
                       ({"hosts": {"allow": ["https://x"]}}, "hosts.allow"),
                       ({"paths": {"deny": ["../x"]}}, "paths.deny"), ({"approve": ["x"]}, "approve"),
                       ({"deny_args": [{"id": "a", "pattern": "x"}, {"id": "a", "pattern": "y"}]}, "deny_args")):
        with pytest.raises(ValidationError, match=field.split(".")[0]):
            ToolPolicy.model_validate(bad)


def test_the_policy_file_is_checked_at_start_naming_where_the_mistake_is() -> None:
    raw = {"defaults": {"tools": {"deny": ["python"]}},
           "tenants": {"acme": {"tools": {"paths": {"allow": ["docs/**"]}}},
                       "globex": {"tools": {"hosts": {"deny": ["not a host"]}}}}}
    with pytest.raises(PolicyError, match=r"p.yaml: tenants.globex.tools: hosts.deny"):
        ToolPolicies(PolicyFile.parse(raw, "p.yaml"))
    del raw["tenants"]["globex"]  # type: ignore[attr-defined]
    policies = ToolPolicies(PolicyFile.parse(raw, "p.yaml"))
    acme = policies.tenants["acme"]
    assert acme.deny == ["python"] and acme.paths.allow == ["docs/**"]  # the tenant's keys over the defaults'
    assert policies.default.deny == ["python"] and "initech" not in policies.tenants


def _dispatch(tool: DispatchedTool) -> tuple[Any, NodeDispatched]:
    data = NodeDispatched(dispatch_id="d-1", node="editor", kind="tool", attempt=1,
                          deadline="2026-03-01T12:01:00Z", tool=tool)  # type: ignore[arg-type]
    return command(data, tenant="acme", task_id="t-1", source="router"), data


def test_the_gate_clears_a_call_with_the_dispatch_and_its_event_id() -> None:
    env, data = _dispatch(DispatchedTool(name="read", builtin="workspace_read", args={"path": "docs/a"},
                                         policy=ToolPolicy(paths={"allow": ["docs/**"]})))  # type: ignore[arg-type]
    _, [cleared] = answer(env, data, ToolPolicies(PolicyFile()))
    assert cleared.type == "tool.call_cleared" and cleared.causation_id == env.id
    assert cleared.data["dispatch_event"] == env.id and cleared.data["rules"] == ["tool.path"]
    assert cleared.data["dispatch_id"] == "d-1" and cleared.data["tool"]["args"] == {"path": "docs/a"}
    _, [again] = answer(env, data, ToolPolicies(PolicyFile()))
    assert again.id == cleared.id  # a redelivered dispatch gets the same answer


def test_the_gate_refuses_with_a_structured_error_and_a_verdict_that_names_no_value() -> None:
    env, data = _dispatch(DispatchedTool(name="read", builtin="workspace_read", args={"path": "private/k.pem"}))
    policies = ToolPolicies(PolicyFile.parse({"tenants": {"acme": {"tools": {"paths": {"deny": ["private/**"]}}}}}))
    _, [errored, verdict] = answer(env, data, policies)
    assert errored.type == "node.errored" and errored.data["retryable"] is False
    assert errored.data["error"] == ("refused by policy (rule tool.path): tenant policy denies argument 'path': it "
                                     "matches the denied glob 'private/**'")
    assert errored.data["refusal"] == {"rule": "tool.path", "reason": errored.data["error"].split(": ", 1)[1]}
    assert verdict.type == "guardrail.verdict" and verdict.data["gate"] == "tool"
    assert verdict.data["outcome"] == "refused" and verdict.data["rules"] == [{"rule": "tool.path", "count": 1}]
    assert "k.pem" not in verdict.to_bytes().decode() and verdict.data["dispatch_id"] == "d-1"
    assert "k.pem" not in errored.to_bytes().decode()  # the recorded refusal neither


def test_the_gate_holds_a_call_for_approval() -> None:
    env, data = _dispatch(DispatchedTool(name="write", builtin="workspace_append", args={"path": "a", "text": "b"},
                                         policy=ToolPolicy(approval=["write"])))
    _, [errored, verdict] = answer(env, data, ToolPolicies(PolicyFile()))
    assert errored.data["refusal"]["approval"] is True and errored.data["error"].startswith("held for approval")
    assert verdict.data["outcome"] == "approval_required"


def test_guardrails_will_not_start_with_a_tool_policy_it_cannot_use(tmp_path: Any) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("tenants:\n  acme:\n    tools:\n      hosts: {deny: ['https://x']}\n")
    env = {**os.environ, "AE_GUARDRAILS_POLICY": str(bad), "AE_NATS_URL": "nats://127.0.0.1:1"}
    ran = subprocess.run([sys.executable, "-m", "agent_engine.guardrails"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 1
    assert (f"guardrails policy {bad}: tenants.acme.tools: hosts.deny: Value error, 'https://x' is not a host name "
            "or *.domain pattern") in ran.stderr


@pytest.mark.parametrize(("args", "policy"), [
    ({"path": "jane.doe@example.com/notes.md"}, {"paths": {"allow": ["docs/**"]}}),
    ({"path": "private/jane.doe@example.com.md"}, {"paths": {"deny": ["private/**"]}}),
    ({"path": "/home/jane.doe@example.com/x"}, {"paths": {"deny": ["private/**"]}}),
    ({"path": "globex/jane.doe@example.com.md"}, {"tenant_paths": True}),
    ({"url": "https://jane.doe@example.com.evil.test/x"}, {"hosts": {"allow": ["*.acme.test"]}}),
    ({"url": "https://jane.doe@example.com.evil.test/x"}, {"hosts": {"deny": ["*.evil.test"]}}),
    ({"url": "mailto:jane.doe@example.com"}, {"hosts": {"allow": ["*.acme.test"]}}),
])
def test_no_refusal_names_the_value_the_model_sent(args: dict[str, Any], policy: dict[str, Any]) -> None:
    """What a path or url holds may be personal data: the reason recorded as the call's result names the rule, the
    argument and what the policy allows; the model knows what it sent."""
    builtin = "http_fetch" if "url" in args else "workspace_read"
    refused = decide(call(builtin, **args), "acme", tenant(**policy))
    assert refused.outcome == "refused" and refused.rule in ("tool.path", "tool.tenant", "tool.host")
    argument = "url" if "url" in args else "path"
    assert f"argument '{argument}'" in refused.reason
    for text in (refused.reason, refused.summary):
        assert "jane" not in text and "example.com" not in text, text
