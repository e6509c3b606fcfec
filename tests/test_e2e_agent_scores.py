"""Agent scores end to end (issue 16, item 7): an agent whose own model is retired and whose first fallback is
down, answered by its second fallback. `agentctl agents stats` shows each model's figures, and with
`fallback_order: by_score` the next task tries the fallback with the better figures first, which the task's
history records (so replay and fork read the choice, never re-make it).

The models are a local server speaking the Messages API (the one fake: the LLM), on a stack of its own.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent_engine.contracts.envelope import Envelope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services" / "agent-runner" / "tests"))
from fake_llm import FakeServer, Reply, anthropic_error, anthropic_message, fake_anthropic_server, serve

pytestmark = pytest.mark.e2e
RETIRED, DOWN, GOOD = "claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"
WORKFLOW = """name: scored
nodes:
  - {id: write, role: START, kind: agent, agent: writer}
  - {id: done, role: EXIT, status: succeeded}
edges:
  - {from: write, to: done}
"""
AGENTS = f"""agents:
  writer:
    provider: anthropic
    model: {RETIRED}
    system: You write one-line notes.
    prompt: Write the note.
    output_schema: note
    fallbacks:
      - {{provider: anthropic, model: {DOWN}}}
      - {{provider: anthropic, model: {GOOD}}}
    fallback_order: by_score
"""


def respond(request: dict[str, Any]) -> Reply:
    model = request["json"]["model"]
    if model == RETIRED:
        return anthropic_error(404, "not_found_error", f"model: {model}")
    if model == DOWN:
        return anthropic_error(500, "api_error", "Internal server error")
    return Reply(200, anthropic_message(json.dumps({"note": "ok"}), model=model, input_tokens=400, output_tokens=20))


@pytest.fixture(scope="module")
def model_server() -> Any:
    server = fake_anthropic_server()
    server.respond = respond
    with serve(server) as running:
        yield running


@pytest.fixture(scope="module")
def scored_engine(model_server: FakeServer, own_stack: Any) -> Any:
    # AE_SCORES_TTL_S=0: the runner reads the figures afresh for every call, so the second task sees the first's
    return own_stack(AE_PROVIDER=None, ANTHROPIC_BASE_URL=model_server.url, NO_PROXY="127.0.0.1,localhost",
                     AE_LLM_MAX_RETRIES="0", AE_SCORES_TTL_S="0")


def workflow_dir(tmp_path: Path) -> Path:
    root = tmp_path / "scored"
    (root / "schemas").mkdir(parents=True)
    (root / "workflow.yaml").write_text(WORKFLOW)
    (root / "agents.yaml").write_text(AGENTS)
    (root / "schemas" / "note.json").write_text(json.dumps({"type": "object", "required": ["note"]}))
    return root


def calls_of(engine: Any, task_id: str) -> list[tuple[str, str]]:
    history = [Envelope.model_validate(e) for e in json.loads(engine.agentctl("task", "history", task_id,
                                                                              "--json").stdout)]
    [completed] = [r.data["input"]["data"] for r in history if r.type == "router.input"
                   and r.data["input"]["type"] == "node.completed"]
    return [(c["model"], c["outcome"]) for c in completed["llm_calls"]]


def stats_when(engine: Any, tenant: str, ready: Any) -> list[dict[str, Any]]:
    """`agents stats --json` once telemetry has folded what `ready` waits for (it reads the stream after us)."""
    rows: list[dict[str, Any]] = []
    for _ in range(100):
        ran = engine.agentctl("agents", "stats", "--tenant", tenant, "--workflow", "scored", "--json")
        assert ran.returncode == 0, ran.stderr
        rows = json.loads(ran.stdout)
        if ready(rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"telemetry never showed the expected figures: {rows}")


def test_stats_show_each_models_figures_and_by_score_tries_the_better_fallback_first(scored_engine, model_server,
                                                                                      tenant, tmp_path):
    root = workflow_dir(tmp_path)
    first = scored_engine.agentctl("run", str(root), "--tenant", tenant)
    assert first.returncode == 0, first.stdout + first.stderr
    first_id = first.stdout.strip().splitlines()[-1].split()[1]
    # no figures yet: the declared order, so the fallback that is down is tried before the one that answers
    assert calls_of(scored_engine, first_id) == [(RETIRED, "failed"), (DOWN, "failed"), (GOOD, "valid")]

    rows = {r["model"]: r for r in stats_when(scored_engine, tenant, lambda rows: len(rows) == 3)}
    assert {r["agent"] for r in rows.values()} == {"writer"}
    assert (rows[RETIRED]["attempts"], rows[RETIRED]["success_rate"]) == (1, 0.0)
    assert (rows[DOWN]["attempts"], rows[DOWN]["failed"], rows[DOWN]["success_rate"]) == (1, 1, 0.0)
    good = rows[GOOD]
    assert (good["attempts"], good["success_rate"], good["repairs"]) == (1, 1.0, 0)
    assert good["latency_ms_p50"] is not None and good["latency_ms_p95"] >= good["latency_ms_p50"]
    assert float(good["cost_usd"]) > 0 and rows[DOWN]["cost_usd"] == "0"
    table = scored_engine.agentctl("agents", "stats", "--tenant", tenant).stdout
    assert f"anthropic/{GOOD}" in table and "100.0%" in table and "0.0%" in table

    second = scored_engine.agentctl("run", str(root), "--tenant", tenant)
    assert second.returncode == 0, second.stdout + second.stderr
    second_id = second.stdout.strip().splitlines()[-1].split()[1]
    # by score: the fallback that answered goes before the one that was down, which is not asked at all
    assert calls_of(scored_engine, second_id) == [(RETIRED, "failed"), (GOOD, "valid")]
    assert sum(1 for r in model_server.calls() if r["model"] == DOWN) == 1
    shown = json.loads(scored_engine.agentctl("task", "show", second_id, "--json").stdout)
    assert shown["nodes"][0]["model"] == GOOD
    replayed = scored_engine.agentctl("task", "replay", second_id)
    assert replayed.returncode == 0 and "identical" in replayed.stdout, replayed.stdout

    rows = {r["model"]: r for r in stats_when(scored_engine, tenant,
                                              lambda rows: sum(r["attempts"] for r in rows) == 5)}
    assert rows[GOOD]["attempts"] == 2 and rows[RETIRED]["attempts"] == 2 and rows[DOWN]["attempts"] == 1
