"""Output checks for every workflow of a tenant (`AE_OUTPUT_CHECKS`), not only those that ask for them.

A workflow asks with `policy.output`; for a tenant listed here the router pins every new task's manifest with
`policy.output: {pii: off}` when it has none, so every node output of the task passes guardrails' output gate,
where the tenant's own `output` section decides (the stricter wins, and `off` asks for nothing). The choice is
recorded with the task's pinned manifest, so a replay decides the same whatever the setting is by then.
"""

from __future__ import annotations

import re

from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.contracts.policy import OutputPolicy, WorkflowPolicy

ENV = "AE_OUTPUT_CHECKS"
ALL = "*"


def parse(raw: str) -> frozenset[str]:
    """`acme,beta` (those tenants), `*` (every tenant), or empty (none)."""
    tenants = frozenset(t.strip() for t in raw.split(",") if t.strip())
    wrong = sorted(t for t in tenants if t != ALL and not re.fullmatch(TENANT_PATTERN, t))
    if wrong:
        raise SystemExit(f"{ENV}={raw!r} names {wrong}, which are not tenant names; give tenants separated by "
                         "commas, or * for every tenant")
    return tenants


def checked(manifest: WorkflowManifest, tenant: str, tenants: frozenset[str]) -> WorkflowManifest:
    """The manifest a new task of `tenant` pins: with an output policy of its own when the tenant's outputs are
    all checked and the workflow asks for none."""
    if not (ALL in tenants or tenant in tenants) or (manifest.policy is not None and manifest.policy.output):
        return manifest
    policy = (manifest.policy or WorkflowPolicy()).model_copy(update={"output": OutputPolicy(pii="off")})
    return manifest.model_copy(update={"policy": policy})
