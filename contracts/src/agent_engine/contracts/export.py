"""Generate JSON Schema for the envelope and every event type: `python -m agent_engine.contracts.export DIR`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent_engine.contracts.envelope import Envelope
from agent_engine.contracts.events import EVENT_TYPES
from agent_engine.contracts.manifest import WorkflowManifest


def schemas() -> dict[str, str]:
    """File name -> JSON text, stable across runs."""
    out = {"envelope.json": Envelope.model_json_schema(),
           "workflow-manifest.json": WorkflowManifest.model_json_schema()}
    for event_type, model in sorted(EVENT_TYPES.items()):
        schema = model.model_json_schema()
        schema["$id"] = f"agent-engine/events/{event_type}/v1"
        out[f"{event_type}.json"] = schema
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
