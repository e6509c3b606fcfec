"""`agentctl agents stats`: per agent and model, success rate, repairs, latency and cost, from telemetry's
record of every LLM call attempt (docs/observability.md, Agent scores)."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from agent_engine.cli.client import CliError, ask
from agent_engine.cli.options import Subparsers, add_json, print_json
from agent_engine.contracts.subjects import TELEMETRY_RPC

UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def register(sub: Subparsers) -> None:
    agents = sub.add_parser("agents", help="figures per agent and model from history")
    agents_sub = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    st = agents_sub.add_parser("stats", help="per agent and model: call attempts, success rate, repair turns, "
                               "latency p50/p95 and cost, from telemetry")
    st.add_argument("--tenant", help="only this tenant's calls (a tenant credential sees only its own anyway)")
    st.add_argument("--workflow", help="only calls of tasks of this workflow")
    st.add_argument("--since", metavar="WHEN", help="only calls since: a duration back from now (30m, 24h, 7d) or an "
                    "ISO 8601 time with a zone (2026-12-01T00:00:00Z)")
    add_json(st, help="the rows as JSON")
    st.set_defaults(func=cmd_stats)


def since_of(text: str, now: datetime) -> str:
    """--since as an ISO 8601 time; a CliError says what is accepted."""
    found = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if found:
        try:
            return (now - timedelta(**{UNITS[found[2]]: int(found[1])})).isoformat()
        except OverflowError:  # 99999999999d: before year 1, a named error rather than a traceback
            raise CliError(f"--since {text!r}: too far back") from None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise CliError(f"--since {text!r}: write a duration (30m, 24h, 7d) or an ISO 8601 time with a zone "
                       "(2026-12-01T00:00:00Z)")
    return when.isoformat()


def cmd_stats(args: argparse.Namespace) -> int:
    query: dict[str, Any] = {"tenant": args.tenant, "workflow": args.workflow}
    if args.since:
        query["since"] = since_of(args.since, datetime.now(UTC))
    rows: list[dict[str, Any]] = ask(TELEMETRY_RPC, "agents", query)["agents"]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no LLM calls recorded" + (" for these filters" if args.tenant or args.workflow or args.since else ""))
        return 0
    print(f"{'AGENT':<16}{'MODEL':<34}{'CALLS':>6}{'SUCCESS':>9}{'REPAIRS':>8}{'P50 MS':>9}{'P95 MS':>9}  COST USD")
    for r in rows:
        print(f"{r['agent'] or '-':<16}{r['provider'] + '/' + r['model']:<34}{r['attempts']:>6}"
              f"{r['success_rate'] * 100:>8.1f}%{r['repairs']:>8}{_ms(r['latency_ms_p50']):>9}"
              f"{_ms(r['latency_ms_p95']):>9}  {r['cost_usd']}"
              + (f" (+{r['unpriced_calls']} unpriced)" if r["unpriced_calls"] else ""))
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
