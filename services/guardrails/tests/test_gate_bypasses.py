"""Ways around a gate that a review of issue #15 found, each closed: a workflow's output policy loosening the tenant's,
another spelling of a denied IP address, an idempotent but destructive MCP tool."""

from __future__ import annotations

from agent_engine.contracts.events import DispatchedTool
from agent_engine.contracts.policy import OutputPolicy, ToolPolicy, TopicRule
from agent_engine.guardrails.outputs import check_output, combined
from agent_engine.guardrails.toolpolicy import Layer, decide

INGRESS_KINDS = ("email", "phone", "card", "iban")


def test_a_workflow_topic_cannot_replace_the_tenants_topic_of_the_same_id() -> None:
    """outputs.combined: topics are merged by id with the workflow's last, so a workflow's rule named like the
    tenant's replaces it (docs: the union of topics, the stricter wins)."""
    tenant = OutputPolicy(topics=[TopicRule(id="medical", pattern=r"diagnos\w*", action="fail")])
    workflow = OutputPolicy(topics=[TopicRule(id="medical", pattern="zzz-never", action="pause")])
    verdict = check_output({"text": "the diagnosis is flu"}, combined(workflow, tenant), INGRESS_KINDS)
    assert verdict.outcome == "refused", f"tenant's fail rule lifted by the workflow: {verdict.outcome}"


def test_a_workflows_kinds_cannot_narrow_the_tenants_default_kinds() -> None:
    """outputs.combined: a tenant section without `kinds` means guardrails' ingress kinds; a workflow naming
    `kinds: [email]` turns that into just email, so phone numbers, cards and IBANs pass unredacted."""
    tenant = OutputPolicy(pii="redact")
    workflow = OutputPolicy(pii="redact", kinds=["email"])
    verdict = check_output({"text": "call +44 20 7946 0958"}, combined(workflow, tenant), INGRESS_KINDS)
    assert verdict.output != {"text": "call +44 20 7946 0958"}, "the tenant's phone redaction was lifted"


def _fetch(url: str) -> DispatchedTool:
    return DispatchedTool(name="fetch", builtin="http_fetch", args={"url": url})


def test_a_denied_ip_host_cannot_be_reached_by_another_spelling_of_the_same_address() -> None:
    """toolpolicy._check_host compares the host string: the docs' own example denies 169.254.169.254, but the
    decimal, hex and IPv4-mapped IPv6 spellings of that address (which the OS resolver and httpx accept) pass."""
    policy = ToolPolicy.model_validate({"hosts": {"deny": ["metadata.google.internal", "169.254.169.254"]}})
    layers = [Layer("tenant policy", policy)]
    assert decide(_fetch("http://169.254.169.254/latest"), "acme", layers).outcome == "refused"
    for url in ("http://2852039166/latest", "http://0xa9fea9fe/latest", "http://[::ffff:169.254.169.254]/latest",
                "http://metadata.google.internal./x"):
        assert decide(_fetch(url), "acme", layers).outcome == "refused", url


def test_an_idempotent_but_destructive_mcp_tool_is_refused_under_deny_destructive() -> None:
    """contracts/mcp.side_effects_from treats `idempotentHint: true` as "no side effects", and that one flag is
    all the gate's deny_destructive (and the analysis-only mode) look at: an MCP `delete_note` the server
    annotates destructiveHint true, idempotentHint true (a delete is idempotent) runs under deny_destructive."""
    from agent_engine.contracts.mcp import side_effects_from
    flag = side_effects_from({"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True})
    call = DispatchedTool(name="delete_note", builtin="mcp:notes/delete_note", args={"id": "n1"},
                          side_effects=flag or None)
    layers = [Layer("tenant policy", ToolPolicy(deny_destructive=True))]
    assert decide(call, "acme", layers).outcome == "refused"
