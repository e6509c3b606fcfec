"""A workflow's input JSON Schema (the manifest's `input_schema`), checked at ingress.

The problems name the path and the rule broken, never the value: jsonschema's own messages quote the value
("'4111…' is not of type 'integer'"), and a request's input may be the personal data the gate is there to keep.
The schema is checked on the input as sent, before redaction: it describes what a sender must send, and a
placeholder such as `[redacted:phone]` would break the `pattern` of the very fields that hold personal data.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jsonschema
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from agent_engine.contracts.manifest import WorkflowManifest
from agent_engine.runtime import workflows

MAX_PROBLEMS = 5
PATH_PART_MAX = 64


@dataclass(frozen=True)
class Problems:
    """What broke the schema: readable lines and each rule's count (`schema.<keyword>`)."""

    lines: list[str]
    rules: Counter[str]


def validator(manifest: WorkflowManifest) -> jsonschema.Draft202012Validator | None:
    """The workflow's input validator; None when it declares no input schema (or names one it lacks, which
    `agentctl workflow validate` and the router refuse)."""
    schema = manifest.schemas.get(manifest.input_schema or "")
    return jsonschema.Draft202012Validator(schema) if schema is not None else None


def problems(check: jsonschema.Draft202012Validator, value: dict[str, Any]) -> Problems | None:
    errors = sorted(check.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), str(e.validator)))
    if not errors:
        return None
    lines = [_line(e) for e in errors[:MAX_PROBLEMS]]
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"and {len(errors) - MAX_PROBLEMS} more")
    return Problems(lines, Counter(f"schema.{e.validator}" for e in errors))


def _line(error: jsonschema.ValidationError) -> str:
    path = "input" + "".join(f"[{p}]" if isinstance(p, int) else f".{str(p)[:PATH_PART_MAX]}"
                             for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [p for p in error.validator_value if p not in error.instance]
        return f"{path}: missing required {', '.join(repr(p) for p in missing)}"
    if error.validator == "additionalProperties":
        return f"{path}: has properties the schema does not allow (additionalProperties)"
    expected = json.dumps(error.validator_value)  # the schema's own value: never the sender's
    expected = expected if len(expected) <= 80 else expected[:77] + "..."
    return f"{path}: breaks '{error.validator}' ({expected})"


def reason(workflow: str, found: Problems) -> str:
    return (f"the input does not match workflow '{workflow}''s input schema: {'; '.join(found.lines)}; "
            "the request was not run")


class WorkflowSchemas:
    """Workflows' input validators, read from the registry (NATS KV `ae_workflows`, as the router reads it) for
    every request, so a push takes effect at once; parsed again only when the entry changed."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv
        self._parsed: dict[tuple[str, str], tuple[bytes, jsonschema.Draft202012Validator | None]] = {}

    @classmethod
    async def open(cls, js: JetStreamContext) -> WorkflowSchemas:
        return cls(await workflows.bucket(js))

    async def validator(self, tenant: str, workflow: str) -> jsonschema.Draft202012Validator | None:
        """None: no such workflow (the router answers that) or no input schema."""
        entry = await workflows.current_entry(self.kv, tenant, workflow)
        if entry is None:
            return None
        cached = self._parsed.get((tenant, workflow))
        if cached is not None and cached[0] == entry:
            return cached[1]
        try:
            check = validator(workflows.parse_entry(entry)[1])
        except (ValueError, KeyError, jsonschema.SchemaError):  # a broken entry: the router refuses it, saying why
            check = None
        if len(self._parsed) >= CACHE_MAX:
            self._parsed.pop(next(iter(self._parsed)))
        self._parsed[(tenant, workflow)] = (entry, check)
        return check


CACHE_MAX = 512
