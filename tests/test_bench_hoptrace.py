"""bench/hoptrace.py's split of a hop into its legs, on sightings made up for it (the script itself runs a whole
engine; its arithmetic is what a reader of its figures relies on)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from agent_engine.contracts.envelope import Envelope

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def seen(at: float, type_: str) -> tuple[float, Envelope]:
    return at, Envelope(id=f"{type_}-{at}", source="test", type=type_, time=datetime.now(UTC), tenant="acme",
                        task_id="t1", correlation_id="t1", data={})


def test_a_hop_is_split_into_dispatch_runner_and_router_legs() -> None:
    import hoptrace  # bench/hoptrace.py

    sightings = [seen(0.0, "task.started"), seen(0.0, "node.dispatched"), seen(0.5, "llm.called"),
                 seen(0.6, "node.completed"), seen(1.0, "node.succeeded"),  # no hop yet: nothing before it
                 seen(1.01, "node.dispatched"), seen(1.2, "node.completed"), seen(1.9, "node.succeeded"),
                 seen(2.0, "node.dispatched"), seen(2.1, "node.completed"), seen(2.15, "node.succeeded")]
    hops = hoptrace.legs(sightings)
    assert [round(h, 3) for h, _ in hops] == [0.9, 0.25]
    first = {leg: round(s, 3) for leg, s in hops[0][1].items()}
    assert first == {"dispatch": 0.01, "runner": 0.19, "router": 0.7}
    assert all(abs(sum(parts.values()) - hop) < 1e-9 for hop, parts in hops)  # the legs make up the hop
    assert "router 700 ms" in hoptrace.report(hops[:1], "one")


def test_a_hop_with_a_sighting_missing_is_left_out() -> None:
    import hoptrace

    no_dispatch = [seen(0.0, "node.succeeded"), seen(0.3, "node.completed"), seen(0.5, "node.succeeded")]
    assert hoptrace.legs(no_dispatch) == []
