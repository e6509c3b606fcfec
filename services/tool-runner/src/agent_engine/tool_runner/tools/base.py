"""What every built-in tool is: an argument schema, a result schema, whether it is idempotent, and a
function from validated arguments (and the run's context) to a JSON object."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from agent_engine.contracts.builtins import BUILTINS
from agent_engine.tool_runner.config import ToolConfig


class ToolError(Exception):
    """A tool refused or failed; the message goes back to the task as the node's error.
    `retryable`: another attempt may succeed (a timeout, a refused connection), if the tool is idempotent."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Scope:
    """Whose call this is: tools that keep data per tenant, task or project (memory) read it from here."""

    tenant: str
    task_id: str
    node: str
    project: str | None = None


@dataclass(frozen=True)
class Context:
    """What one run may use: the workspace, the configured limits, its time budget and whose call it is."""

    config: ToolConfig
    time_limit_s: float
    started: float = field(default_factory=time.monotonic)
    scope: Scope | None = None
    written: list[str] = field(default_factory=list)
    """Workspace paths the run wrote: the runner stores each as an artifact after it (node.completed `files`)."""

    @property
    def workspace(self) -> Path:
        return self.config.workspace

    def remaining_s(self) -> float:
        return self.time_limit_s - (time.monotonic() - self.started)


def context(workspace: Path, time_limit_s: float = 30.0, **limits: Any) -> Context:
    """A context for a workspace with default limits (for calling a tool directly)."""
    return Context(ToolConfig(workspace=workspace.resolve(), **limits), time_limit_s)


def _problems(schema: dict[str, Any], value: Any) -> str:
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=str)
    return "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:10])


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_schema: dict[str, Any]
    run: Callable[[dict[str, Any], Context], dict[str, Any]]
    idempotent: bool = True
    """False: running it twice has a different effect than once (an append); never run twice per call."""
    result_schema: dict[str, Any] | None = None
    """What `run` promises to return; the runner checks it before publishing."""

    def check(self, args: dict[str, Any]) -> None:
        detail = _problems(self.args_schema, args)
        if detail:
            raise ToolError(f"invalid arguments for tool '{self.name}': {detail}")

    def check_result(self, output: dict[str, Any]) -> None:
        if self.result_schema is None:
            return
        detail = _problems(self.result_schema, output)
        if detail:
            raise ToolError(f"tool '{self.name}' returned a result that does not match its result schema "
                            f"(a bug in the tool, not in the call): {detail}")


def builtin(name: str, run: Callable[[dict[str, Any], Context], dict[str, Any]],
            result_schema: dict[str, Any] | None = None) -> Tool:
    """A tool whose interface (description, argument schema, idempotency) is the contracts' catalogue entry."""
    spec = BUILTINS[name]
    return Tool(name, spec.description, spec.args_schema, run, idempotent=spec.idempotent, result_schema=result_schema)
