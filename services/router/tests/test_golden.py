"""Golden task histories: the records under golden/ were stored by the router as it is; today's router must
agree with them three ways.

(a) replaying each task's recorded inputs reproduces its stored records exactly (what `agentctl task replay`
    checks for a stored task);
(b) folding the records reaches the final status golden/index.json names for each task;
(c) building each scenario again (golden_scenarios.py) produces exactly the committed file.

A change in what decide or evolve do fails (a) and (c) at once. When the change is intended, regenerate the
files with `python services/router/tests/golden_scenarios.py` and review the diff: each line is one record.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from golden_scenarios import GOLDEN, INDEX, SCENARIOS, from_json, index, statuses, to_json

from agent_engine.router.core import replay
from agent_engine.router.views import replay_report

FILES = sorted(path.name for path in GOLDEN.glob("*.json") if path != INDEX)


def load(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def first_difference(stored: list[dict[str, Any]], now: list[dict[str, Any]]) -> str:
    """Where two record lists part: the first record that differs, and which of its fields."""
    for i in range(max(len(stored), len(now))):
        was = stored[i] if i < len(stored) else None
        got = now[i] if i < len(now) else None
        if was != got:
            fields = sorted(k for k in {*(was or {}), *(got or {})} if (was or {}).get(k) != (got or {}).get(k))
            data = sorted(k for k in {*(was or {}).get("data", {}), *(got or {}).get("data", {})}
                          if (was or {}).get("data", {}).get(k) != (got or {}).get("data", {}).get(k))
            return (f"record {i + 1} of {len(stored)} stored / {len(now)} now: stored {was and was['type']}, "
                    f"now {got and got['type']}; fields {fields}, data fields {data}")
    return "identical"


def test_every_scenario_has_its_file_and_the_index_lists_them() -> None:
    assert FILES == sorted(s.file for s in SCENARIOS.values())
    assert json.loads(INDEX.read_text()) == index()


@pytest.mark.parametrize("name", FILES)
def test_replay_reproduces_the_stored_records(name: str) -> None:
    for task_id, records in from_json(load(name)).items():
        stored = [r.model_dump(mode="json") for r in records]
        replayed = [r.model_dump(mode="json") for r in replay(records)]
        where = f"{name} task {task_id}" if task_id else name
        assert replayed == stored, f"{where}: {first_difference(stored, replayed)}"
        report = replay_report(records)
        assert report["identical"] and report["stored"] == report["replayed"] == len(stored)


@pytest.mark.parametrize("name", FILES)
def test_fold_reaches_the_expected_status(name: str) -> None:
    expected = json.loads(INDEX.read_text())[name]["status"]
    if isinstance(expected, str):  # a file of one task's records
        expected = {"": expected}
    assert statuses(from_json(load(name))) == expected


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_scenario_built_today_is_the_committed_file(name: str) -> None:
    scenario = SCENARIOS[name]
    built = to_json(scenario.records())
    committed = load(scenario.file)
    if built != committed:
        tasks = built if isinstance(built, dict) else {"": built}
        stored = committed if isinstance(committed, dict) else {"": committed}
        assert list(tasks) == list(stored), f"{name}: tasks {list(tasks)} != {list(stored)}"
        problems = [f"{f'task {task_id}: ' if task_id else ''}{first_difference(stored[task_id], tasks[task_id])}"
                    for task_id in tasks if tasks[task_id] != stored[task_id]]
        pytest.fail(f"{name} differs from golden/{scenario.file}: " + "; ".join(problems))


def test_no_scenario_changes_a_shared_manifest_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tasks that pinned equal manifests share one parsed object (router/manifests.py), which is safe only while
    nothing changes a manifest in place. Every scenario decided and every golden file replayed must leave each
    manifest it kept as the record that pinned it wrote it."""
    from agent_engine.router import manifests

    kept: list[tuple[str, Any]] = []
    keep = manifests._keep

    def keeping(key: tuple[str, str], text: str, manifest: Any) -> None:
        kept.append((text, manifest))
        keep(key, text, manifest)

    monkeypatch.setattr(manifests, "_kept", {})
    monkeypatch.setattr(manifests, "_keep", keeping)
    for scenario in SCENARIOS.values():
        scenario.records()
    for name in FILES:
        for records in from_json(load(name)).values():
            replay(records)
    assert len(kept) > len(SCENARIOS)  # the scenarios pin many manifests, some more than once
    for text, manifest in kept:
        assert json.dumps(manifest.model_dump(mode="json", by_alias=True, exclude_none=True)) == text
