"""The tool gate's decision, pure: may this tool call run, must it be refused, or wait for a person?

A call is checked against each policy in turn (the tenant's, then the workflow's the router copied into the
dispatch); the first refusal wins, so a workflow's policy can add refusals but never lift its tenant's. Only
when no policy refuses does an approval rule hold the call, unless a person already approved it: a person is
never asked about a call that would be refused anyway. Rule ids and every field: docs/guardrails.md.

Two reasons come out of a refusal: `reason`, which the model sees as the call's result and the router records
(`node.tool_returned`), and `summary`, for the `guardrail.verdict` event and the logs. Neither carries a value the
model sent (a path or url may hold personal data): `reason` names the rule, the argument and what the policy
allows, so the model, which knows what it sent, can correct its call; `summary` names the rule and the policy.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from agent_engine.contracts.builtins import NON_IDEMPOTENT_BUILTINS
from agent_engine.contracts.events import DispatchedTool
from agent_engine.contracts.policy import PathRules, ToolPolicy

WORKSPACE_BUILTINS = frozenset({"workspace_list", "workspace_read", "workspace_append"})
"""Built-ins whose `path` argument is a workspace path (the path rules and `tenant_paths` apply)."""
URL_BUILTINS = frozenset({"http_fetch"})
"""Built-ins whose `url` argument names a host (the host rules apply)."""


@dataclass(frozen=True)
class Decision:
    outcome: Literal["allowed", "refused", "approval_required"]
    rule: str = ""
    """The rule that refused or held the call."""
    reason: str = ""
    """For the model (the call's result): the rule, the argument and what the policy allows; never the value."""
    summary: str = ""
    """For the verdict event and logs: names the rule and the policy, no argument value."""
    checked: tuple[str, ...] = ()
    """The rule ids the policies configure, all checked for an allowed call."""


@dataclass(frozen=True)
class Layer:
    """One policy a call must pass, and what to call it in a reason ("tenant policy", "workflow policy")."""

    name: str
    policy: ToolPolicy


class Refused(Exception):
    def __init__(self, rule: str, reason: str, summary: str) -> None:
        super().__init__(reason)
        self.rule, self.reason, self.summary = rule, reason, summary


def decide(call: DispatchedTool, tenant: str, layers: list[Layer]) -> Decision:
    """The gate's decision on one call."""
    checked = sorted({rule for layer in layers for rule in configured(layer.policy)})
    try:
        for layer in layers:
            _check(call, tenant, layer)
    except Refused as refused:
        return Decision("refused", refused.rule, refused.reason, refused.summary, tuple(checked))
    if not call.approved:
        for layer in layers:
            if _names(call, layer.policy.approval):
                why = f"{layer.name} requires a person's approval for tool '{call.name}'"
                return Decision("approval_required", "tool.approval",
                                f"{why}; the call waits for `agentctl approve` (or `reject`)", why, tuple(checked))
    return Decision("allowed", checked=tuple(checked))


def configured(policy: ToolPolicy) -> list[str]:
    """The rule ids a policy sets up (what an allowed call was checked against)."""
    rules = [("tool.deny", bool(policy.deny)), ("tool.destructive", policy.deny_destructive),
             ("tool.host", policy.hosts.allow is not None or bool(policy.hosts.deny)),
             ("tool.path", policy.paths.allow is not None or bool(policy.paths.deny)),
             ("tool.tenant", policy.tenant_paths), ("tool.approval", bool(policy.approval))]
    return [r for r, on in rules if on] + [f"tool.args.{a.id}" for a in policy.deny_args]


def _names(call: DispatchedTool, names: list[str]) -> bool:
    """Whether a list of tools names this call's tool (by its tools.yaml name or its built-in)."""
    return call.name in names or call.builtin in names


def _check(call: DispatchedTool, tenant: str, layer: Layer) -> None:
    policy, where = layer.policy, layer.name
    if _names(call, policy.deny):
        raise Refused("tool.deny", f"{where} denies tool '{call.name}'", f"{where} denies the tool")
    if policy.deny_destructive and (call.builtin in NON_IDEMPOTENT_BUILTINS or call.side_effects
                                    or _names(call, policy.destructive)):
        why = f"{where} denies destructive operations and tool '{call.name}' " + (
            "has side effects" if call.builtin in NON_IDEMPOTENT_BUILTINS or call.side_effects
            else "is listed as destructive")
        raise Refused("tool.destructive", why, why)
    if call.builtin in URL_BUILTINS:
        _check_host(call.args.get("url"), where, policy)
    if call.builtin in WORKSPACE_BUILTINS:
        _check_path(call.args.get("path", "."), tenant, where, policy)
    for rule in policy.deny_args:
        if rule.tools is not None and not _names(call, rule.tools):
            continue
        for key in _matching_strings(call.args, _regex(rule.pattern)):
            raise Refused(f"tool.args.{rule.id}",
                          f"{where} refuses argument '{key}' of tool '{call.name}' (it matches rule '{rule.id}')",
                          f"{where} refuses an argument of the call (rule '{rule.id}')")


def _check_host(url: Any, where: str, policy: ToolPolicy) -> None:
    rules = policy.hosts
    if rules.allow is None and not rules.deny:
        return
    host = (urlsplit(url).hostname or "") if isinstance(url, str) else ""
    if not host:
        raise Refused("tool.host", f"{where} checks hosts and argument 'url' names none",
                      f"{where}: the url names no host")
    if any(_host_matches(host, p) for p in rules.deny):
        raise Refused("tool.host", f"{where} denies the host argument 'url' names", f"{where} denies the url's host")
    if rules.allow is not None and not any(_host_matches(host, p) for p in rules.allow):
        raise Refused("tool.host", f"{where} allows only hosts {rules.allow}; the host argument 'url' names is "
                      "not one of them", f"{where}: the url's host is not on its allowlist")


def _host_matches(host: str, pattern: str) -> bool:
    host = canonical_host(host)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host != pattern[2:]
    return host == canonical_host(pattern)


def canonical_host(host: str) -> str:
    """A host as the rules compare it: lower case without a trailing dot, and an IP address in its one usual
    spelling, whichever the url used (`2852039166`, `0xa9fea9fe`, `0251.0376.0251.0376`, `[::ffff:169.254.169.254]`
    all name 169.254.169.254, and resolvers and HTTP clients take each of them)."""
    host = host.lower().rstrip(".").strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[0-9a-fx.]+", host) or not host[:1].isdigit():
            return host
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))  # the forms C's inet_aton takes
        except (OSError, ValueError):
            return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def normalise(path: str) -> str | None:
    """A workspace path as the rules see it: relative, `./` dropped, `..` resolved; None when it is absolute or
    leaves the workspace (the tool-runner refuses those too, but the gate never matches globs against them)."""
    if not path or path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path):
        return None
    clean = posixpath.normpath(path.replace("\\", "/"))
    if clean == ".." or clean.startswith("../"):
        return None
    return clean


def _check_path(path: Any, tenant: str, where: str, policy: ToolPolicy) -> None:
    rules = policy.paths
    if not policy.tenant_paths and rules.allow is None and not rules.deny:
        return
    clean = normalise(path) if isinstance(path, str) else None
    if clean is None:
        raise Refused("tool.path", f"{where}: argument 'path' is absolute or outside the workspace (a path "
                      "relative to the workspace, without leaving it, is required)",
                      f"{where}: the path is absolute or outside the workspace")
    if policy.tenant_paths and not glob_matches(f"{tenant}/**", clean):
        raise Refused("tool.tenant", f"{where} confines tenant '{tenant}' to its own folder '{tenant}/' of the "
                      "workspace; argument 'path' is outside it", f"{where}: the path is outside the tenant's folder")
    _check_globs(clean, where, rules)


def _check_globs(clean: str, where: str, rules: PathRules) -> None:
    for glob in rules.deny:
        if glob_matches(glob, clean):
            raise Refused("tool.path", f"{where} denies argument 'path': it matches the denied glob '{glob}'",
                          f"{where}: the path matches a denied glob")
    if rules.allow is not None and not any(glob_matches(g, clean) for g in rules.allow):
        raise Refused("tool.path", f"{where} allows only paths matching {rules.allow}; argument 'path' matches "
                      "none", f"{where}: the path matches no allowed glob")


def glob_matches(glob: str, path: str) -> bool:
    """`*` and `?` within one segment, `**` across segments; `dir/**` matches `dir` itself too."""
    return _glob_regex(glob).fullmatch(path) is not None


@lru_cache(maxsize=1024)
def _glob_regex(glob: str) -> re.Pattern[str]:
    segments = posixpath.normpath(glob).split("/")
    out = ""
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            if last:  # `dir/**`: dir itself, or anything under it; `**` alone: anything
                out = out[:-1] + "(/.*)?" if out else ".*"
            else:
                out += "(.*/)?"
            continue
        out += "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in segment)
        out += "" if last else "/"
    return re.compile(out)


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)  # validated when the policy was read


def _matching_strings(value: Any, regex: re.Pattern[str], key: str = "") -> Iterator[str]:
    """The key paths (`headers.Authorization`, `items.2`) of the strings in `value` that `regex` finds."""
    if isinstance(value, str):
        if regex.search(value):
            yield key or "(value)"
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _matching_strings(v, regex, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _matching_strings(v, regex, f"{key}.{i}" if key else str(i))
