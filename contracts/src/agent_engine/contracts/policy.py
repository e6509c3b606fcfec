"""Guardrails policy a workflow and a tenant may write: the tool-call policy (what the tool gate lets a tool call
do; docs/guardrails.md, "The tool gate") and the output policy (what the output gate checks in every node output;
"Output checks").

The tool-call policy:

One model serves both places a policy is written: the `tools` section of the guardrails policy file (per
tenant, over the defaults) and a workflow manifest's `policy: {tools: ...}`, which the router copies into
every tool dispatch. The gate checks a call against both, one after the other, so a workflow's policy can
only add refusals to its tenant's, never lift one. The decision itself is guardrails' (toolpolicy.py).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

RULE_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


class HostRules(BaseModel):
    """Hosts an `http_fetch` URL may name: `host` (exactly) or `*.domain` (any subdomain, not the domain)."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] | None = None
    """When given, only these hosts (an empty list: none); absent: any host not denied."""
    deny: list[str] = Field(default_factory=list)
    """Never these hosts, whatever `allow` says."""

    @field_validator("allow", "deny")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        for host in value or []:
            if not HOST_PATTERN.match(host.lower()):
                raise ValueError(f"{host!r} is not a host name or *.domain pattern")
        return [h.lower() for h in value] if value is not None else None


class PathRules(BaseModel):
    """Globs over workspace paths, matched after the path is normalised (`./` dropped, `..` resolved); `*`
    and `?` stay within one path segment, `**` spans any number of them, and `dir/**` also matches `dir`."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] | None = None
    """When given, a path must match one of these; absent: any path not denied."""
    deny: list[str] = Field(default_factory=list)
    """A path matching one of these is refused, whatever `allow` says."""

    @field_validator("allow", "deny")
    @classmethod
    def _globs(cls, value: list[str] | None) -> list[str] | None:
        for glob in value or []:
            if not glob or glob.startswith("/") or ".." in glob.split("/"):
                raise ValueError(f"{glob!r} is not a workspace glob (relative, no '..')")
        return value


def compiles(pattern: str) -> str:
    """A pattern a policy gives, checked to be a regular expression (a model's validator)."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


class ArgRule(BaseModel):
    """Refuse a call when any string in its arguments (at any depth) matches `pattern` (a Python regex,
    searched, case-sensitive unless it says `(?i)`); only for `tools` (names in tools.yaml or built-ins)
    when given."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=RULE_ID)
    """The rule's id: a refusal names `tool.args.<id>`, never the text that matched."""
    pattern: str = Field(min_length=1, max_length=2000)
    tools: list[str] | None = None

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        return compiles(value)


class ToolPolicy(BaseModel):
    """What the tool gate refuses or holds. Every list names tools by their tools.yaml name or their
    built-in (`workspace_append`), so a tenant can speak of built-ins without knowing the workflows."""

    model_config = ConfigDict(extra="forbid")

    deny: list[str] = Field(default_factory=list)
    """Tools never to run (rule `tool.deny`)."""
    deny_destructive: bool = False
    """Refuse every destructive call (rule `tool.destructive`): a side-effecting one (a built-in that is not
    idempotent, or a tool tools.yaml declares `side_effects: true`) or one listed in `destructive`."""
    destructive: list[str] = Field(default_factory=list)
    """Tools to count as destructive besides the side-effecting ones (say `python`, which can write files)."""
    hosts: HostRules = Field(default_factory=HostRules)
    """Hosts the `url` of `http_fetch` may name (rule `tool.host`)."""
    paths: PathRules = Field(default_factory=PathRules)
    """Paths the `path` of the workspace built-ins may name (rule `tool.path`)."""
    deny_args: list[ArgRule] = Field(default_factory=list)
    """Argument patterns to refuse (rule `tool.args.<id>`)."""
    tenant_paths: bool = False
    """Confine the workspace built-ins to the tenant's own folder, `<tenant>/`, of the shared workspace (rule
    `tool.tenant`): one tenant's calls cannot read or write another's files."""
    approval: list[str] = Field(default_factory=list)
    """Tools whose calls wait for a person (`agentctl approve` / `reject`) before they run (rule
    `tool.approval`)."""

    @field_validator("deny_args")
    @classmethod
    def _unique_ids(cls, value: list[ArgRule]) -> list[ArgRule]:
        ids = [r.id for r in value]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"deny_args ids must be unique; repeated: {twice}")
        return value


class TopicRule(BaseModel):
    """A topic a node's output must not touch: a regular expression matched, case-insensitively, on the
    output's text."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    pattern: str = Field(min_length=1, max_length=1000)
    action: Literal["fail", "pause"] = "fail"


class JudgeRule(BaseModel):
    """A grounding judge: a model, asked through the agent-runner's gateway, scores whether an agent node's output
    is grounded in the node's inputs (rule `judge.grounding`)."""

    model_config = ConfigDict(extra="forbid")

    provider: Literal["auto", "mock", "anthropic", "openai"]
    model: str = Field(min_length=1, max_length=128)
    prompt: str = Field(default="", max_length=4000)
    """Added to the judge's fixed instruction."""
    below: float = Field(default=0.5, gt=0, le=1)
    """A grounding score under this (or `grounded: false`) is ungrounded."""
    action: Literal["fail", "pause"] = "fail"
    """What an ungrounded output does: fails the node, or waits for a person."""
    on_error: Literal["allow", "pause", "fail"] = "pause"
    """What an output gets when the judge gives no usable answer (timeout, failure, a reply off its schema)."""
    timeout_s: float = Field(default=20.0, gt=0, le=300)
    max_tokens: int = Field(default=256, ge=16, le=4096)
    mock_responses: list[dict[str, Any]] = Field(default_factory=list, max_length=16)
    """For `provider: mock` (tests, demos): the scripted reply, e.g. [{grounded: false, score: 0.1, reason: x}]."""


class OutputPolicy(BaseModel):
    """Checks guardrails makes on every node output of a workflow before the router uses it (its `output`
    section of the tenant policy adds to these: the stricter wins)."""

    model_config = ConfigDict(extra="forbid")

    pii: Literal["off", "redact", "pause", "fail"] = "redact"
    """What personal data in an output does: replaced by `[redacted:<kind>]`, held for a person, or fails."""
    kinds: list[str] | None = None
    """Which kinds of personal data (guardrails' names); default: those guardrails redacts at ingress."""
    topics: list[TopicRule] = Field(default_factory=list, max_length=50)
    judge: JudgeRule | None = Field(default=None, exclude_if=lambda v: v is None)
    """A grounding judge for agent nodes' outputs (absent: none; left out of dumps, so dispatches of workflows
    without one are unchanged)."""


class WorkflowPolicy(BaseModel):
    """A workflow manifest's `policy`: the sections a workflow may tighten for its own tasks."""

    model_config = ConfigDict(extra="forbid")

    tools: ToolPolicy | None = None
    output: OutputPolicy | None = None
    """Set (even `{}`): every node output passes guardrails' output gate before the router uses it."""
