"""What several commands share: their argument helpers and how they read `--input`-style JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeAlias

from agent_engine.cli.client import DEFAULT_TENANT, CliError

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What a command module's `register(subparsers)` adds its commands to."""

def add_tenant(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--tenant", help=f"tenant (default: a tenant credential's own, else {DEFAULT_TENANT})")


def add_json(cmd: argparse.ArgumentParser, help: str | None = None) -> None:
    cmd.add_argument("--json", action="store_true", help=help)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def parse_input(raw: str | None) -> dict[str, Any]:
    """A JSON object given inline or as @FILE (`--input`, `--edit`); absent, an empty one."""
    if raw is None:
        return {}
    text = raw
    if raw.startswith("@"):
        path = Path(raw[1:])
        if not path.is_file():
            raise CliError(f"--input {raw}: no such file")
        text = path.read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--input is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError("--input must be a JSON object")
    return value
