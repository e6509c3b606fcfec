"""The MCP servers whoever deploys the tool-runner declares (`AE_MCP_SERVERS`, never a workflow: a tenant must
not be able to make the tool-runner start a command): the file's shape, what each declaration may say, and the
errors that stop the start naming the server and field (docs/tools.md, "MCP servers per tenant")."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_engine.contracts.envelope import TENANT_PATTERN
from agent_engine.contracts.mcp import SERVER_NAME

TENANT = "{tenant}"
LISTING_TENANT = ".catalogue"
"""What a per-tenant server is started as to list its tools at start: no tenant's name (a tenant's may not hold
a dot), so the listing process never holds or sees a tenant's data. It is stopped once it has listed them."""
DEFAULT_MAX_PROCESSES = 16
DEFAULT_IDLE_STOP_S = 600.0


class ServerSpec(BaseModel):
    """One server of the deployment's file: how to start it, and for which tenants."""

    model_config = ConfigDict(extra="forbid")

    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Added to the small environment the `mcp` package gives a server (PATH, HOME, ...): never the
    tool-runner's own, which holds its NATS credential."""
    cwd: str | None = None
    start_timeout_s: float = Field(default=30.0, gt=0)
    tenants: list[Annotated[str, Field(pattern=TENANT_PATTERN)]] | None = Field(default=None, min_length=1)
    """The only tenants whose calls may reach the server (None: every tenant); others do not see its tools."""
    per_tenant: bool = False
    """One process per tenant that calls it, started on its first call, with AE_TENANT and `{tenant}` in args,
    cwd and env values set to that tenant: a stateful server never holds two tenants' data in one process."""
    max_processes: int = Field(default=DEFAULT_MAX_PROCESSES, ge=1)
    """per_tenant: at most this many at once; a new tenant's call stops the longest-idle one, or is refused
    (retryably, `NotReached`: even a side-effecting call is tried again) when every one is running a call."""
    idle_stop_s: float = Field(default=DEFAULT_IDLE_STOP_S, gt=0)
    """per_tenant: a tenant's process that ran no call for this long is stopped (its next call starts it again)."""

    @model_validator(mode="after")
    def _tenant_fields(self) -> ServerSpec:
        if TENANT in self.command:
            raise ValueError(f"command may not hold {TENANT} (only args, cwd and env values may)")
        if not self.per_tenant:
            used = self.tenant_placeholders()
            if used:
                raise ValueError(f"{TENANT} in {', '.join(used)}: only a server with per_tenant: true may use it "
                                 "(a shared server serves every tenant from one process)")
            only = sorted({"max_processes", "idle_stop_s"} & self.model_fields_set)
            if only:
                raise ValueError(f"{', '.join(only)} apply only to a server with per_tenant: true")
        return self

    def tenant_placeholders(self) -> list[str]:
        """The fields that hold `{tenant}`, by name (`args[1]`, `cwd`, `env.ROOT`)."""
        used = [f"args[{i}]" for i, arg in enumerate(self.args) if TENANT in arg]
        used += ["cwd"] if self.cwd is not None and TENANT in self.cwd else []
        return used + [f"env.{name}" for name, value in self.env.items() if TENANT in value]

    def allows(self, tenant: str | None) -> bool:
        return self.tenants is None or tenant in self.tenants

    def for_tenant(self, tenant: str) -> ServerSpec:
        """How to start this tenant's process: `{tenant}` replaced, AE_TENANT set."""
        return self.model_copy(update={
            "args": [arg.replace(TENANT, tenant) for arg in self.args],
            "cwd": self.cwd.replace(TENANT, tenant) if self.cwd is not None else None,
            "env": {**{k: v.replace(TENANT, tenant) for k, v in self.env.items()}, "AE_TENANT": tenant}})


class ServersFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mcp_servers: dict[str, ServerSpec] = Field(default_factory=dict)


def load_servers(path: Path) -> dict[str, ServerSpec]:
    """AE_MCP_SERVERS's file (YAML or JSON); ValueError naming the file and what is wrong."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"AE_MCP_SERVERS: cannot read {path}: {exc}") from None
    try:
        servers = ServersFile.model_validate(raw or {}).mcp_servers
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"AE_MCP_SERVERS: {path}: {problems}") from None
    bad = [name for name in servers if not re.fullmatch(SERVER_NAME, name)]
    if bad:
        raise ValueError(f"AE_MCP_SERVERS: {path}: server names {bad} must match {SERVER_NAME}")
    return servers


def servers_from_env() -> dict[str, ServerSpec]:
    path = os.environ.get("AE_MCP_SERVERS", "")
    return load_servers(Path(path)) if path else {}


def scope_of(spec: ServerSpec) -> str:
    """Whose calls a server takes, and in which processes (for the log)."""
    who = "every tenant" if spec.tenants is None else "tenants " + ", ".join(spec.tenants)
    return f"{who}; one process per tenant, at most {spec.max_processes}" if spec.per_tenant else f"{who}; shared"
