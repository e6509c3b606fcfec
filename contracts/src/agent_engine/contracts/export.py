"""Generate JSON Schema for the envelope and every event type, and the AsyncAPI document of the bus
(`asyncapi.json`, see asyncapi.py): `python -m agent_engine.contracts.export DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from agent_engine.contracts.envelope import CONTRACT_VERSION, SCHEMA_URN, Envelope, schema_uri
from agent_engine.contracts.events import EVENT_TYPES
from agent_engine.contracts.manifest import WorkflowManifest

ALWAYS_WRITTEN = ("specversion", "datacontenttype", "schemaversion")
"""Attributes with a default that the engine nevertheless writes on every event."""


def envelope_schema() -> dict[str, Any]:
    """The envelope as the engine writes it (version CONTRACT_VERSION): the model's attributes under their
    wire names, no null (an absent optional attribute is left out), `dataschema` naming the payload's schema.
    Readers also accept version 1 (see upcasting.py), which this schema does not describe."""
    schema = Envelope.model_json_schema(mode="validation", by_alias=True)
    for prop in schema["properties"].values():
        branches = [b for b in prop.pop("anyOf", []) if b != {"type": "null"}]
        if branches:
            prop.update(branches[0])
            prop.pop("default", None)
    schema["properties"]["schemaversion"] = {"const": CONTRACT_VERSION, "title": "Schemaversion", "type": "integer"}
    schema["properties"]["dataschema"] = {
        "type": "string", "format": "uri", "title": "Dataschema",
        "description": f"the `$id` of the payload's JSON Schema: {schema_uri('<type>')}; "
                       "written for every event type of the contract"}
    schema["required"] = sorted({*schema["required"], *ALWAYS_WRITTEN})
    schema["$id"] = f"{SCHEMA_URN}:envelope:v{CONTRACT_VERSION}"
    return schema


def event_schemas() -> dict[str, dict[str, Any]]:
    """Event type -> JSON Schema of its payload, `$id` what its events name in `dataschema`."""
    out = {}
    for event_type, model in sorted(EVENT_TYPES.items()):
        schema = model.model_json_schema()
        schema["$id"] = schema_uri(event_type)
        out[event_type] = schema
    return out


def schemas() -> dict[str, str]:
    """File name -> JSON text, stable across runs."""
    from agent_engine.contracts.asyncapi import document  # it builds on the schemas below

    out: dict[str, Any] = {"envelope.json": envelope_schema(),
                           "workflow-manifest.json": WorkflowManifest.model_json_schema()}
    out.update({f"{event_type}.json": schema for event_type, schema in event_schemas().items()})
    out["asyncapi.json"] = document()
    return {name: json.dumps(s, indent=2, sort_keys=True) + "\n" for name, s in out.items()}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m agent_engine.contracts.export DIR", file=sys.stderr)
        return 2
    target = Path(argv[0])
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("*.json"):
        stale.unlink()
    for name, text in schemas().items():
        (target / name).write_text(text)
    print(f"wrote {len(schemas())} schemas to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
