"""The committed JSON Schemas in contracts/schemas/ must match what the models generate.

Other systems read those files to publish or consume events; a model change that is not
re-exported would silently lie to them.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent_engine.contracts.envelope import CONTRACT_VERSION
from agent_engine.contracts.events import EVENT_TYPES
from agent_engine.contracts.export import main, schemas

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"


def test_committed_schemas_match_the_models() -> None:
    expected = schemas()
    committed = {p.name: p.read_text() for p in SCHEMA_DIR.glob("*.json")}
    differ = sorted(n for n in expected.keys() & committed.keys() if expected[n] != committed[n])
    missing = sorted(expected.keys() - committed.keys())
    extra = sorted(committed.keys() - expected.keys())
    problems = [f"{label}: {', '.join(names)}" for label, names in
                (("differ", differ), ("missing", missing), ("extra", extra)) if names]
    assert not problems, (f"contracts/schemas/ is out of date with the models ({'; '.join(problems)}); "
                          "run `make schemas` and commit the result")


def test_every_event_type_and_the_envelope_have_a_schema() -> None:
    names = set(schemas())
    assert {f"{t}.json" for t in EVENT_TYPES} | {"envelope.json", "workflow-manifest.json", "asyncapi.json"} == names


def test_event_schemas_carry_a_versioned_id() -> None:
    for event_type in EVENT_TYPES:
        schema = json.loads(schemas()[f"{event_type}.json"])
        assert schema["$id"] == f"urn:agent-engine:events:{event_type}:v{CONTRACT_VERSION}"


def test_export_is_stable_across_runs() -> None:
    assert schemas() == schemas()


def test_export_cli_writes_every_schema_and_removes_stale_files(tmp_path: Path) -> None:
    (tmp_path / "removed.event.json").write_text("{}")
    assert main([str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.glob("*.json")} == schemas()


def test_export_cli_needs_exactly_one_directory(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err
