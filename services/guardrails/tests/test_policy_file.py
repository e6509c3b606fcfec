"""The guardrails policy file: defaults, per-tenant sections merged over them, and readable mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_engine.guardrails.policy import PolicyError, PolicyFile


def test_a_tenants_section_overrides_the_defaults_key_by_key(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("defaults:\n  tools: {deny_tools: [shell], approve_tools: []}\n"
                    "tenants:\n  acme:\n    tools: {approve_tools: [write]}\n")
    policy = PolicyFile.load(path)
    assert policy.section("tools", "acme") == {"deny_tools": ["shell"], "approve_tools": ["write"]}
    assert policy.section("tools", "beta") == {"deny_tools": ["shell"], "approve_tools": []}
    assert policy.section("input", "acme") == {}
    assert policy.where("tools", "acme") == f"{path}: tenants.acme.tools"
    assert policy.where("tools", "beta") == f"{path}: defaults.tools"


def test_no_file_is_an_empty_policy() -> None:
    assert PolicyFile().section("rate_limits", "acme") == {}


@pytest.mark.parametrize(("text", "says"), [
    ("[1, 2]", "top level must be a mapping"),
    ("default: {}", "unknown top-level keys ['default']"),
    ("defaults: {tool: {}}", "unknown sections ['tool']"),
    ("tenants: {Acme!: {}}", "'Acme!' is not a tenant name"),
    ("defaults: {tools: [1]}", "defaults.tools must be a mapping"),
    ("defaults: {tools: {a: [}", "not valid YAML"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_mistake(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as caught:
        PolicyFile.load(path)
    assert str(path) in str(caught.value) and says in str(caught.value)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(PolicyError, match="nowhere.yaml: cannot read it"):
        PolicyFile.load("/nowhere.yaml")
