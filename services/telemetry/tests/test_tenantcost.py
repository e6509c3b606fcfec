"""Cost by model and by day per tenant (tenantcost.py): the sums of a tenant's calls, as a person or credential
limited to some tenants is shown them. In memory and in PostgreSQL they are equal, a rebuild folds them again
to the same figures, a forget takes the forgotten calls out, and a ledger from a version without them is
filled at start from its call log."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from agent_engine.contracts.envelope import Envelope
from agent_engine.telemetry import tenantcost
from agent_engine.telemetry.ledger import Ledger, call_of
from agent_engine.telemetry.projection import PgLedger
from agent_engine.testkit.events import llm_called

from .test_projection import history, messages

TENANTS = ["acme", "globex", "initech"]


def expected(events: list[Envelope], tenants: list[str], erased: set[tuple[str, str]] = frozenset()  # type: ignore[assignment]
             ) -> dict[str, dict[str, tuple[int, Decimal, int]]]:
    """Calls, cost and input tokens by model and by day of those tenants, counted here from the events
    themselves (each event id once, an erased task's calls not at all)."""
    seen: set[str] = set()
    sums: dict[str, dict[str, list[Any]]] = {"models": defaultdict(lambda: [0, Decimal(0), 0]),
                                             "days": defaultdict(lambda: [0, Decimal(0), 0])}
    for e in events:
        call = call_of(e)
        if call is None or e.id in seen or e.tenant not in tenants or (e.tenant, e.task_id) in erased:
            continue
        seen.add(e.id)
        for kind, key in (("models", f"{call.provider}/{call.model}"), ("days", e.time.date().isoformat())):
            line = sums[kind][key]
            line[0] += 1
            line[1] += Decimal(0) if call.cost_usd == "unpriced" else Decimal(call.cost_usd)
            line[2] += call.usage.input_tokens
    return {kind: {k: (v[0], v[1], v[2]) for k, v in lines.items()} for kind, lines in sums.items()}


def shown(answer: dict[str, Any]) -> dict[str, dict[str, tuple[int, Decimal, int]]]:
    return {kind: {k: (v["calls"], Decimal(v["cost_usd"]), v["input_tokens"]) for k, v in answer[kind].items()}
            for kind in ("models", "days")}


def every_answer(ledger: Ledger | PgLedger) -> dict[str, Any]:
    asks = [[t] for t in TENANTS] + [TENANTS[:2], TENANTS, ["nobody"]]
    return {" ".join(ask): ledger.tenants_summary(ask) for ask in asks}


def in_memory(events: list[Envelope]) -> Ledger:
    ledger = Ledger()
    ledger.apply(messages(events))
    return ledger


# pure


def test_the_tenants_a_query_names() -> None:
    assert tenantcost.read_tenants({}, None) is None
    assert tenantcost.read_tenants({"tenants": "acme"}, None) == ["acme"]
    assert tenantcost.read_tenants({"tenants": ["b", "a", "b"]}, None) == ["a", "b"]
    for bad in ([], [""], [1], {"a": 1}, 7):
        with pytest.raises(ValueError, match="tenants must be a tenant name or a list of tenant names"):
            tenantcost.read_tenants({"tenants": bad}, None)
    with pytest.raises(ValueError, match="at most 1000"):
        tenantcost.read_tenants({"tenants": [f"t{i}" for i in range(1001)]}, None)


def test_a_tenant_credential_gets_its_own_tenant_whatever_it_names() -> None:
    assert tenantcost.read_tenants({"tenants": ["globex", "initech"]}, "acme") == ["acme"]


def test_a_call_log_entry_names_its_model_and_day() -> None:
    event = llm_called(provider="mock", model="m1", day=3)
    call = call_of(event)
    assert call is not None
    entry = Ledger.entry(event, call)
    assert (tenantcost.key_of(entry, "model"), tenantcost.key_of(entry, "day")) == ("mock/m1", "2026-03-03")


# in memory


def test_in_memory_sums_are_each_tenants_calls_only() -> None:
    events = history(400)
    ledger = in_memory(events)
    for ask in ([t] for t in TENANTS):
        answer = ledger.tenants_summary(ask)
        assert shown(answer) == expected(events, ask)
        assert list(answer["tenants"]) == ask
        # the tenant's own line (`agentctl cost --tenant`) carries the same sums
        assert ledger.query(tenant=ask[0]) == {"tenant": ask[0], **answer["tenants"][ask[0]],
                                               "models": answer["models"], "days": answer["days"]}
    assert shown(ledger.tenants_summary(TENANTS)) == expected(events, TENANTS)
    everyone = ledger.query()
    assert ledger.tenants_summary(TENANTS)["models"] == everyone["models"]  # nothing forgotten: the same sums
    assert ledger.tenants_summary(TENANTS)["days"] == everyone["days"]
    empty = {k: v for k, v in Ledger().query(tenant="nobody").items() if k != "tenant"}
    assert ledger.tenants_summary(["nobody"]) == {"tenants": {"nobody": empty}, "models": {}, "days": {}}


def forget_some(ledger: Ledger | PgLedger) -> set[tuple[str, str]]:
    """A data subject's two tasks of acme, then the whole of globex: the tasks erased."""
    ledger.forget("acme", ["task1", "task2"])
    ledger.forget("globex", None)
    return {("acme", "task1"), ("acme", "task2"), *(("globex", f"task{i}") for i in range(6))}


def test_a_forget_takes_the_forgotten_calls_out_and_a_rebuild_does_not_bring_them_back() -> None:
    events = history(400)
    ledger = in_memory(events)
    platform = ledger.query()
    erased = forget_some(ledger)
    assert shown(ledger.tenants_summary(["acme"])) == expected(events, ["acme"], erased)
    assert ledger.tenants_summary(["globex"])["models"] == {} and ledger.tenants_summary(["globex"])["days"] == {}
    assert shown(ledger.tenants_summary(["initech"])) == expected(events, ["initech"])
    assert ledger.query()["models"] == platform["models"]  # the platform's sums name no task, and keep them
    after_forget = every_answer(ledger)
    ledger.reset()  # agentctl cost rebuild: empty, then fold the stream again
    ledger.apply(messages(events))
    assert every_answer(ledger) == after_forget


# PostgreSQL

pg_only = pytest.mark.integration


@pg_only
def test_postgresql_answers_as_memory_does(pg: PgLedger) -> None:
    events = history(400)
    for start in range(0, len(events), 37):
        pg.apply(messages(events[start:start + 37], first=start + 1))
    memory = in_memory(events)
    assert every_answer(pg) == every_answer(memory)
    assert shown(pg.tenants_summary(["acme"])) == expected(events, ["acme"])


@pg_only
def test_postgresql_forget_and_rebuild_answer_as_memory_does(pg: PgLedger, postgres_url: str) -> None:
    events = history(400)
    pg.apply(messages(events))
    memory = in_memory(events)
    erased = forget_some(pg)
    forget_some(memory)
    assert every_answer(pg) == every_answer(memory)
    assert shown(pg.tenants_summary(["acme"])) == expected(events, ["acme"], erased)
    with psycopg.connect(postgres_url) as conn:  # no row of the forgotten tenant is left
        assert conn.execute(f"SELECT count(*) FROM {pg.p}_tenant_totals WHERE tenant = 'globex'").fetchone() == (0,)
    after_forget = every_answer(pg)
    pg.reset()
    pg.apply(messages(events))
    assert every_answer(pg) == after_forget


@pg_only
def test_a_ledger_from_a_version_without_the_sums_is_filled_at_start(pg: PgLedger, postgres_url: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    events = history(300)
    pg.apply(messages(events))
    pg.forget("acme", ["task3"])
    before = every_answer(pg)
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as the older version left it
        conn.execute(f"DROP TABLE {pg.p}_tenant_totals")
    with caplog.at_level("INFO", logger="telemetry"):
        upgraded = PgLedger(postgres_url, pg.p)
        try:
            assert every_answer(upgraded) == before
        finally:
            upgraded.close()
    assert f"new ledger table {pg.p}_tenant_totals (cost by model and by day per tenant) filled" in caplog.text


@pg_only
def test_a_call_in_a_batch_counts_once_in_the_tenants_sums(pg: PgLedger) -> None:
    call = llm_called(tenant="acme", cost="0.25", event_id="same")
    pg.apply(messages([call, call]))
    pg.apply(messages([call], first=3))
    assert pg.tenants_summary(["acme"])["models"]["anthropic/claude-sonnet-4-5"]["cost_usd"] == "0.25"
