"""The ledger projection's tables (projection.py).

Tables (prefix `ae_ledger`, created at start under an advisory lock, as memory does):
`_position` the stream (its name and creation time) and the last sequence folded; `_events` the ids of the
llm.called events counted; `_calls` one row per call (the task lines, node lines and call log); `_totals` the
sums by tenant, model and day (which name no task, and so stay when a tenant is forgotten); `_budget` one row per
budget record (a task's reserved and spent, and a tenant's by day: budgets.py); `_counts` events by
type and messages by subject type; `_tasks` the task index (taskindex.py: one row per task, for `tasks.list`);
`_task_counts` the index's rows counted by status, kept in the same transactions (the `ae_tasks` gauge);
`_erased` the tasks whose lines were dropped by a forget.
"""

from __future__ import annotations

LINE_SUMS = ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd",
             "unpriced_calls", "mock_calls")
"""The figures a ledger line sums, in the order of its tables' columns."""
SUM_COLUMNS = "\n".join(f"    {c} {'numeric' if c == 'cost_usd' else 'bigint'} NOT NULL DEFAULT 0," for c in LINE_SUMS)
"""Those columns in a CREATE TABLE (`_totals`, and tenantcost.py's `_tenant_totals`)."""


def schema(p: str) -> str:
    return f"""
CREATE TABLE IF NOT EXISTS {p}_position (
    id int PRIMARY KEY CHECK (id = 1),
    stream text NOT NULL,
    sequence bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}_events (event_id text PRIMARY KEY);
CREATE TABLE IF NOT EXISTS {p}_calls (
    event_id text PRIMARY KEY,
    tenant text NOT NULL,
    task_id text NOT NULL,
    sequence bigint NOT NULL,
    node text NOT NULL,
    input_tokens bigint NOT NULL,
    output_tokens bigint NOT NULL,
    cache_read_tokens bigint NOT NULL,
    cache_write_tokens bigint NOT NULL,
    cost_usd numeric NOT NULL,
    unpriced boolean NOT NULL,
    mock boolean NOT NULL,
    entry jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS {p}_calls_task ON {p}_calls (tenant, task_id, sequence);
CREATE INDEX IF NOT EXISTS {p}_calls_task_id ON {p}_calls (task_id);
CREATE TABLE IF NOT EXISTS {p}_totals (
    kind text NOT NULL,
    key text NOT NULL,
{SUM_COLUMNS}
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS {p}_counts (
    kind text NOT NULL,
    key text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS {p}_budget (
    event_id text PRIMARY KEY,
    tenant text NOT NULL,
    task_id text NOT NULL,
    sequence bigint NOT NULL,
    day text NOT NULL,
    type text NOT NULL,
    reserved_usd numeric NOT NULL,
    spent_usd numeric NOT NULL,
    limit_usd numeric,
    entry jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS {p}_budget_task ON {p}_budget (tenant, task_id, sequence);
CREATE INDEX IF NOT EXISTS {p}_budget_day ON {p}_budget (tenant, day);
CREATE TABLE IF NOT EXISTS {p}_tasks (
    tenant text NOT NULL,
    task_id text NOT NULL,
    workflow text NOT NULL,
    revision text NOT NULL,
    status text NOT NULL,
    started_at timestamptz,
    finished_at timestamptz,
    error text NOT NULL,
    input_text text NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
CREATE INDEX IF NOT EXISTS {p}_tasks_started ON {p}_tasks (started_at DESC, task_id DESC);
CREATE INDEX IF NOT EXISTS {p}_tasks_tenant ON {p}_tasks (tenant, started_at DESC, task_id DESC);
CREATE TABLE IF NOT EXISTS {p}_task_counts (
    status text PRIMARY KEY,
    n bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {p}_erased (
    tenant text NOT NULL,
    task_id text NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
"""
