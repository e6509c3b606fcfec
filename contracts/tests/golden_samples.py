"""Golden samples of the current contract version, written from the version 1 ones.

`python contracts/tests/golden_samples.py` rewrites `golden/v2/` from `golden/v1/`: each v2 sample is its
v1 sample read by the current models (the upcaster) and written as the engine writes events. A test
(`test_cloudevents.py`) checks the committed files are exactly that, so they are never edited by hand.
An event type added after version 1 gets its v2 sample by hand, in `golden/v2/` only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent_engine.contracts.envelope import Envelope

GOLDEN = Path(__file__).parent / "golden"
V1, V2 = GOLDEN / "v1", GOLDEN / "v2"


def text(envelope: Envelope) -> str:
    """A sample file's text: the wire form, indented for review."""
    return json.dumps(envelope.to_wire(), indent=2, ensure_ascii=False) + "\n"


def from_v1() -> dict[str, str]:
    """File name -> the v2 sample its v1 sample upcasts to."""
    return {p.name: text(Envelope.from_bytes(p.read_bytes())) for p in sorted(V1.glob("*.json"))}


def main() -> int:
    V2.mkdir(exist_ok=True)
    for name, body in from_v1().items():
        (V2 / name).write_text(body)
    print(f"wrote {len(from_v1())} samples to {V2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
