"""MCP tools: how a workflow names a tool of an MCP server, and what the tool-runner tells the router about it.

The servers themselves are declared by whoever deploys the tool-runner (`AE_MCP_SERVERS`), never by a
workflow, so a tenant cannot make the tool-runner start a command of its choosing; a workflow's tools.yaml
only names `{mcp: {server, tool}}`. At start the tool-runner lists each server's tools and puts one
`McpToolEntry` per tool in the NATS KV bucket `ae_mcp_tools` (key `<server>.<tool>`); when the router pins
a task's manifest it writes each MCP tool's description, argument schema and side effects into it from
there, as it does the built-ins' from their catalogue.

A server the deployment keeps to some tenants (`tenants: [...]` in AE_MCP_SERVERS) says so in each of its
tools' entries; the router rejects a task of any other tenant whose workflow names one of them, and the
tool-runner refuses such a call whatever reaches it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MCP_TOOLS_BUCKET = "ae_mcp_tools"
SERVER_NAME = r"^[a-z][a-z0-9_-]{0,63}$"
TOOL_NAME = r"^[A-Za-z0-9_.-]{1,128}$"
"""What an MCP tool name may be here: also the tail of its KV key, whose server part holds no dot."""
RUNS_AS_PREFIX = "mcp:"


class McpRef(BaseModel):
    """`mcp: {server: notes, tool: add_note}` in tools.yaml: tool `add_note` of the deployment's server `notes`."""

    model_config = ConfigDict(extra="forbid")

    server: str = Field(pattern=SERVER_NAME)
    tool: str = Field(pattern=TOOL_NAME)

    @property
    def key(self) -> str:
        return catalogue_key(self.server, self.tool)

    @property
    def runs_as(self) -> str:
        """The name the tool-runner's registry knows it by (a dispatch's `tool.builtin`)."""
        return f"{RUNS_AS_PREFIX}{self.server}/{self.tool}"


def catalogue_key(server: str, tool: str) -> str:
    return f"{server}.{tool}"


class McpToolEntry(BaseModel):
    """One tool as its server listed it when a tool-runner started."""

    model_config = ConfigDict(extra="forbid")

    server: str
    tool: str
    description: str = ""
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None
    """The server's hints as it sent them (camelCase keys, e.g. readOnlyHint), None when it sent none."""
    tenants: list[str] | None = Field(default=None, exclude_if=lambda v: v is None)
    """The only tenants that may use the tool (its server's `tenants`); None: every tenant. Left out of the entry
    when None, so a router from before the field still reads the entries of servers open to every tenant."""

    def allows(self, tenant: str) -> bool:
        return self.tenants is None or tenant in self.tenants

    @property
    def side_effects(self) -> bool | None:
        """What the annotations say (None: the server gave none, tools.yaml decides)."""
        return side_effects_from(self.annotations)


def side_effects_from(annotations: dict[str, Any] | None) -> bool | None:
    """A tool has side effects unless its server says it only reads (`readOnlyHint`; MCP's default is false). An
    idempotent tool that writes still has them: a delete is idempotent, and it is just what the tool gate's
    `deny_destructive` and an analysis-only agent must keep out (and running it once is no loss)."""
    if not annotations:
        return None
    return annotations.get("readOnlyHint") is not True
