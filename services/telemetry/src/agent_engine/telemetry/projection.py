"""The ledger as a PostgreSQL projection: every batch of stream messages and the stream sequence it reaches are
written in one transaction, so a crash never counts a message twice nor skips one, and a restart resumes after
that sequence instead of re-reading the stream. Each llm.called is kept once by its event id (a second copy,
or a re-read after the position was lost, adds nothing). Nothing of the history is held in memory: queries are
answered from the tables.

Its tables are in ledger_schema.py; its call lines and sums are written by calllines.py.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from agent_engine.contracts.envelope import Envelope
from agent_engine.telemetry import calllines, rebuild, scores, taskindex, tenantcost
from agent_engine.telemetry.budgets import BudgetLine, row_of, usd
from agent_engine.telemetry.ledger import Line, Message, TaskKey, subject_kind
from agent_engine.telemetry.ledger_schema import LINE_SUMS, schema
from agent_engine.telemetry.taskindex import TaskFilter, TaskRow

log = logging.getLogger("telemetry")

PREFIX = "ae_ledger"


class PgLedger:
    def __init__(self, url: str, prefix: str = PREFIX, *, max_connections: int = 3) -> None:
        self.p = prefix
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url, min_size=1, max_size=max_connections, open=True, name="ledger",
            kwargs={"autocommit": True, "connect_timeout": 5}, check=ConnectionPool.check_connection)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def close(self) -> None:
        self.pool.close()

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection(timeout=30) as conn:
            if not self._schema_ready:
                with self._schema_lock, conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"{self.p} schema",))
                    new = {str(r[0]).removeprefix(f"{self.p}_") for r in conn.execute(
                        "SELECT t FROM unnest(%s::text[]) t WHERE to_regclass(t) IS NULL",
                        ([f"{self.p}_{t}" for t in rebuild.BACKFILLED],))}
                    conn.execute(schema(self.p) + scores.schema(self.p))
                    filled = tenantcost.create(conn, self.p)
                    if filled is not None:  # after an upgrade: summed from the call log, exactly, once
                        log.info("new ledger table %s_tenant_totals (cost by model and by day per tenant) filled "
                                 "from the %d call(s) in %s_calls", self.p, filled, self.p)
                    folded = conn.execute(f"SELECT sequence FROM {self.p}_position WHERE id = 1 FOR UPDATE").fetchone()
                    self._recount_tasks(conn)
                    hint = rebuild.backfill_hint(new, int(folded[0]) if folded else 0, self.p)
                    if hint:
                        log.warning("%s", hint)
                    self._schema_ready = True
            yield conn

    def resume(self, stream: str, last_sequence: int) -> int:
        """The sequence to resume after, for the stream `stream` (its name and creation time) whose last message
        is `last_sequence`. A position of another stream (recreated since), or beyond its end, starts again from
        the first message: the event ids keep every call counted once."""
        with self._conn() as conn, conn.transaction():
            row = conn.execute(f"SELECT stream, sequence FROM {self.p}_position WHERE id = 1 FOR UPDATE").fetchone()
            if row is not None and row[0] == stream and int(row[1]) <= last_sequence:
                return int(row[1])
            if row is not None:
                log.warning("the ledger's position (%s, sequence %d) is not of this stream (%s, last sequence %d): "
                            "reading it from the start; calls already counted are not counted again",
                            row[0], row[1], stream, last_sequence)
            conn.execute(f"INSERT INTO {self.p}_position (id, stream, sequence) VALUES (1, %s, 0) "
                         "ON CONFLICT (id) DO UPDATE SET stream = excluded.stream, sequence = 0", (stream,))
            return 0

    def position(self) -> int:
        with self._conn() as conn:
            row = conn.execute(f"SELECT sequence FROM {self.p}_position WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def apply(self, batch: Sequence[Message]) -> int:
        """Fold `batch` and move the position to its last sequence, in one transaction. Messages at or before
        the position (another replica's, or a redelivery) are passed over. Returns how many were folded.
        A batch PostgreSQL refuses for its data (a NUL in a string, a number out of range: a forgery) is
        folded message by message, the one refused counted by subject only, so it cannot stop the ledger."""
        try:
            return self._apply(batch)
        except psycopg.DataError as exc:
            if len(batch) > 1:
                return sum(self.apply([m]) for m in batch)
            log.warning("skipped an llm.called on %s that PostgreSQL refuses: %s", batch[0].subject,
                        str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            return self._apply([Message(batch[0].sequence, batch[0].subject)])

    def _apply(self, batch: Sequence[Message]) -> int:
        if not batch:
            return 0
        with self._conn() as conn, conn.transaction():
            row = conn.execute(f"SELECT sequence FROM {self.p}_position WHERE id = 1 FOR UPDATE").fetchone()
            if row is None:
                raise RuntimeError("the ledger has no position: resume() first")
            fresh = [m for m in batch if m.sequence > int(row[0])]
            counts: Counter[tuple[str, str]] = Counter(("subject", subject_kind(m.subject)) for m in fresh)
            erased = self._erased(conn, fresh)
            events = [m.event for m in fresh if m.event is not None]
            scores.insert(conn, self.p, [e for e in events if (e.tenant, e.task_id) not in erased])
            counts.update(("event", kind) for kind in calllines.insert(conn, self.p, fresh, erased))
            for m in fresh:
                if m.event is not None and m.call is None and self._insert_budget(conn, m.sequence, m.event, erased):
                    counts[("event", m.event.type)] += 1
            self._fold_tasks(conn, [m.event for m in fresh if m.event is not None
                                    and m.event.type in taskindex.LIFECYCLE], erased)
            if counts:
                conn.cursor().executemany(
                    f"INSERT INTO {self.p}_counts (kind, key, n) VALUES (%s, %s, %s) "
                    "ON CONFLICT (kind, key) DO UPDATE SET n = {0}_counts.n + excluded.n".format(self.p),
                    [(kind, key, n) for (kind, key), n in counts.items()])
            if fresh:
                conn.execute(f"UPDATE {self.p}_position SET sequence = %s WHERE id = 1",
                             (max(m.sequence for m in fresh),))
        return len(fresh)

    def _fold_tasks(self, conn: psycopg.Connection[Any], events: list[Envelope], erased: set[TaskKey]) -> None:
        """Fold a batch's lifecycle events into the task index: read the rows they touch, fold in order, write
        them back (in the batch's transaction). Erased tasks get no row again."""
        if not events:
            return
        keys = sorted({(e.tenant, e.task_id) for e in events})
        pairs = ([k[0] for k in keys], [k[1] for k in keys])
        rows: dict[TaskKey, TaskRow | None] = {
            (str(r[0]), str(r[1])): TaskRow(*r) for r in conn.execute(
                f"SELECT {TASK_COLUMNS} FROM {self.p}_tasks WHERE (tenant, task_id) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[])) FOR UPDATE", pairs)}
        before = {key: row.status for key, row in rows.items() if row is not None}
        for event in events:
            key = (event.tenant, event.task_id)
            if key not in erased:
                rows[key] = taskindex.fold(rows.get(key), event)
        self._count_tasks(conn, taskindex.status_changes(
            before, {key: row.status for key, row in rows.items() if row is not None}))
        written = [r for r in rows.values() if r is not None]
        if written:
            updates = ", ".join(f"{c} = excluded.{c}" for c in TASK_COLUMNS.split(", ")[2:])
            conn.cursor().executemany(
                f"INSERT INTO {self.p}_tasks ({TASK_COLUMNS}) VALUES ({', '.join(['%s'] * 9)}) "
                f"ON CONFLICT (tenant, task_id) DO UPDATE SET {updates}",
                [(r.tenant, r.task_id, r.workflow, r.revision, r.status, r.started_at, r.finished_at, r.error,
                  r.input_text) for r in written])

    def _count_tasks(self, conn: psycopg.Connection[Any], moves: Counter[str]) -> None:
        """Move the task counts by `moves` (taskindex.status_changes), in the caller's transaction: the counts
        table then always equals the index counted by status, and the gauge reads a handful of rows however
        many tasks there are."""
        if moves:
            conn.cursor().executemany(
                f"INSERT INTO {self.p}_task_counts (status, n) VALUES (%s, %s) "
                f"ON CONFLICT (status) DO UPDATE SET n = {self.p}_task_counts.n + excluded.n",
                sorted(moves.items()))  # in one order, whoever writes

    def _recount_tasks(self, conn: psycopg.Connection[Any]) -> None:
        """Count the index afresh (at start, the position locked so no batch is folded meanwhile): fills the
        counts table the first time (over an index from a version without it), and puts right any drift (a
        replica of that version still folding during a rolling upgrade, a hand edit). Reads every row once:
        about 3 ms at 20,000 tasks."""
        conn.execute(f"DELETE FROM {self.p}_task_counts")
        conn.execute(f"INSERT INTO {self.p}_task_counts (status, n) "
                     f"SELECT status, count(*) FROM {self.p}_tasks GROUP BY status")

    def task_counts(self) -> dict[str, int]:
        """Tasks by status in the index (the `ae_tasks` gauge): every status, 0 when none."""
        with self._conn() as conn:
            return taskindex.by_status((str(r[0]), int(r[1])) for r in conn.execute(
                f"SELECT status, n FROM {self.p}_task_counts WHERE n <> 0"))

    def list_tasks(self, wanted: TaskFilter) -> dict[str, Any]:
        """`tasks.list`, as the in-memory Ledger answers it."""
        where: list[str] = ["true"]
        params: list[Any] = []
        for column, value in (("tenant", wanted.tenant), ("status", wanted.status), ("workflow", wanted.workflow)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if wanted.since is not None:
            where.append("started_at >= %s")
            params.append(wanted.since)
        if wanted.search:
            like = wanted.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(task_id LIKE %s OR workflow ILIKE %s OR input_text ILIKE %s OR error ILIKE %s)")
            params += [like + "%", f"%{like}%", f"%{like}%", f"%{like}%"]
        with self._conn() as conn:
            rows = [TaskRow(*r) for r in conn.execute(
                f"SELECT {TASK_COLUMNS} FROM {self.p}_tasks WHERE {' AND '.join(where)} "
                "ORDER BY started_at DESC NULLS LAST, task_id DESC LIMIT %s", [*params, wanted.limit])]
            costs = {(str(r[0]), str(r[1])): Decimal(r[2]) for r in conn.execute(
                f"SELECT tenant, task_id, sum(cost_usd) FROM {self.p}_calls WHERE (tenant, task_id) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[])) GROUP BY tenant, task_id",
                ([r.tenant for r in rows], [r.task_id for r in rows]))} if rows else {}
        return {"tasks": [r.as_json(str(costs.get((r.tenant, r.task_id), Decimal(0)))) for r in rows]}

    def reset(self) -> None:
        """Empty every table but `_erased` and set the position to 0, in one transaction: the fold then reads the
        stream from its first message again (`agentctl cost rebuild`)."""
        with self._conn() as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {self.p}_position IN ACCESS EXCLUSIVE MODE")
            tables = ", ".join(f"{self.p}_{t}" for t in (
                "events", "calls", "totals", "counts", "budget", "tasks", "task_counts",
                "attempts", "task_workflows", "tenant_totals"))  # scores.py's too: a rebuild backfills the agent scores
            conn.execute(f"TRUNCATE {tables}")
            conn.execute(f"UPDATE {self.p}_position SET sequence = 0 WHERE id = 1")

    def _erased(self, conn: psycopg.Connection[Any], batch: Sequence[Message]) -> set[TaskKey]:
        """The erased tasks among a batch's parsed events (one query for the batch)."""
        keys = sorted({(m.event.tenant, m.event.task_id) for m in batch if m.event is not None})
        if not keys:
            return set()
        return {(str(r[0]), str(r[1])) for r in conn.execute(
            f"SELECT tenant, task_id FROM {self.p}_erased WHERE (tenant, task_id) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))", ([k[0] for k in keys], [k[1] for k in keys]))}

    def _insert_budget(self, conn: psycopg.Connection[Any], sequence: int, event: Envelope,
                       erased: set[TaskKey]) -> bool:
        """A budget record, once by its event id (budgets.py); any other event, or an erased task's record, adds
        nothing."""
        row = row_of(event)
        if row is None or (event.tenant, event.task_id) in erased:
            return False
        new = conn.execute(
            f"INSERT INTO {self.p}_budget (event_id, tenant, task_id, sequence, day, type, reserved_usd, spent_usd, "
            "limit_usd, entry) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (event.id, event.tenant, event.task_id, sequence, row.day, row.type, row.reserved, row.spent, row.limit,
             Jsonb(row.entry or {}))).rowcount
        return bool(new == 1)

    def forget(self, tenant: str, task_ids: list[str] | None) -> int:
        """Drop the per-task lines and call logs of the tenant (or of `task_ids` of it), remembering the tasks
        as erased; totals by tenant, model and day keep their sums. Then rewrite the calls table (VACUUM FULL)
        so no deleted line stays in its files. Tasks named in `task_ids` are remembered as erased even when no
        line of theirs was noted yet (this process still behind on the stream): what comes of them later is not
        noted either. Returns how many tasks had lines dropped."""
        with self._conn() as conn:
            with conn.transaction():
                params: list[Any]
                where, params = "tenant = %s", [tenant]
                if task_ids is not None:
                    where, params = "tenant = %s AND task_id = ANY(%s)", [tenant, task_ids]
                rows = conn.execute(f"DELETE FROM {self.p}_calls WHERE {where} RETURNING task_id", params).fetchall()
                rows += conn.execute(f"DELETE FROM {self.p}_budget WHERE {where} RETURNING task_id", params).fetchall()
                dropped = conn.execute(f"DELETE FROM {self.p}_tasks WHERE {where} RETURNING task_id, status",
                                       params).fetchall()
                self._count_tasks(conn, taskindex.status_changes({(tenant, str(t)): str(s) for t, s in dropped}, {}))
                rows += [(t,) for t, _ in dropped]
                conn.execute(f"DELETE FROM {self.p}_attempts WHERE {where}", params)
                conn.execute(f"DELETE FROM {self.p}_task_workflows WHERE {where}", params)  # scores.py's per task
                tenantcost.recount(conn, self.p, tenant)  # what is left of the tenant's calls
                gone = sorted({str(r[0]) for r in rows})
                named = sorted(set(gone) | set(task_ids or ()))  # a task whose events are still to be read too
                conn.cursor().executemany(f"INSERT INTO {self.p}_erased (tenant, task_id) VALUES (%s, %s) "
                                          "ON CONFLICT DO NOTHING", [(tenant, t) for t in named])
            if gone:  # the task index holds the accepted input's text: its old row versions must go too
                conn.execute(f"VACUUM FULL {self.p}_calls")
                conn.execute(f"VACUUM FULL {self.p}_tasks")
        return len(gone)

    def query(self, task_id: str | None = None, tenant: str | None = None) -> dict[str, Any]:
        """The same answers as the in-memory Ledger's."""
        with self._conn() as conn:
            if task_id:
                return self._task_line(conn, task_id, tenant)
            if tenant:
                days = {str(r[0]): _budget(r[1:]) for r in conn.execute(
                    f"SELECT day, {BUDGET_SUMS} FROM {self.p}_budget WHERE tenant = %s AND NOT entry ? 'subtask' "
                    "GROUP BY day ORDER BY day",  # a subtask's share: its own records count its spend
                    (tenant,))}
                return {"tenant": tenant, **self._total(conn, "tenant", tenant),
                        **({"budget_days": days} if days else {}),
                        **tenantcost.breakdown(self._tenants_summary(conn, [tenant]))}
            totals: dict[str, dict[str, Any]] = {"tenant": {}, "model": {}, "day": {}}
            for row in conn.execute(f"SELECT kind, key, {', '.join(LINE_SUMS)} FROM {self.p}_totals "
                                    "ORDER BY kind, key").fetchall():
                totals[row[0]][row[1]] = _line(row[2:])
            counts: dict[str, dict[str, int]] = {"event": {}, "subject": {}}
            for kind, key, n in conn.execute(f"SELECT kind, key, n FROM {self.p}_counts ORDER BY kind, key"):
                counts[kind][key] = int(n)
        return {"tenants": totals["tenant"], "models": totals["model"], "days": totals["day"],
                "events_by_type": counts["event"], "messages_by_subject": counts["subject"]}

    def tenants_summary(self, tenants: list[str]) -> dict[str, Any]:
        """As the in-memory Ledger's: those tenants' lines, and their calls summed by model and by day."""
        with self._conn() as conn:
            return self._tenants_summary(conn, tenants)

    def _tenants_summary(self, conn: psycopg.Connection[Any], tenants: list[str]) -> dict[str, Any]:
        lines = {t: self._total(conn, "tenant", t) for t in tenants}
        sums: dict[str, dict[str, Any]] = {kind: {} for kind in tenantcost.KINDS}
        for row in conn.execute(
                f"SELECT kind, key, {', '.join(f'sum({c})' for c in LINE_SUMS)} FROM {self.p}_tenant_totals "
                "WHERE tenant = ANY(%s) GROUP BY kind, key HAVING sum(calls) > 0", (tenants,)):
            sums[row[0]][row[1]] = _line(row[2:])
        return tenantcost.summary(tenants, lines, sums["model"], sums["day"])

    def agents(self, f: scores.Filter) -> list[dict[str, Any]]:
        """Agent scores (scores.py), as the in-memory ledger's `scores.query` gives them."""
        with self._conn() as conn:
            return scores.select(conn, self.p, f)

    def _total(self, conn: psycopg.Connection[Any], kind: str, key: str) -> dict[str, Any]:
        row = conn.execute(f"SELECT {', '.join(LINE_SUMS)} FROM {self.p}_totals WHERE kind = %s AND key = %s",
                           (kind, key)).fetchone()
        return _line(row) if row else Line().as_json()

    def _task_line(self, conn: psycopg.Connection[Any], task_id: str, tenant: str | None) -> dict[str, Any]:
        if tenant is None:
            claimed = [str(r[0]) for r in conn.execute(
                f"SELECT DISTINCT tenant FROM {self.p}_calls WHERE task_id = %s ORDER BY tenant", (task_id,))]
            if len(claimed) > 1:
                return {"error": f"task '{task_id}' has calls under several tenants ({', '.join(claimed)}); "
                                 "ask with the task's tenant"}
            if claimed:
                tenant = claimed[0]
            else:
                row = conn.execute(f"SELECT tenant FROM {self.p}_erased WHERE task_id = %s ORDER BY tenant LIMIT 1",
                                   (task_id,)).fetchone()
                tenant = str(row[0]) if row else ""
            if not tenant:  # a task with a budget but no call yet
                row = conn.execute(f"SELECT tenant FROM {self.p}_budget WHERE task_id = %s ORDER BY tenant LIMIT 1",
                                   (task_id,)).fetchone()
                tenant = str(row[0]) if row else ""
        sums = ("count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
                "coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), "
                "coalesce(sum(cost_usd), 0), count(*) FILTER (WHERE unpriced), count(*) FILTER (WHERE mock)")
        where = "tenant = %s AND task_id = %s"
        budget = self._budget_line(conn, tenant, task_id)
        total = conn.execute(f"SELECT {sums} FROM {self.p}_calls WHERE {where}", (tenant, task_id)).fetchone()
        if (total is None or int(total[0]) == 0) and budget:
            return {"task_id": task_id, **Line().as_json(), "nodes": {}, "call_log": [], **budget}
        if total is None or int(total[0]) == 0:
            erased = conn.execute(f"SELECT 1 FROM {self.p}_erased WHERE {where}", (tenant, task_id)).fetchone()
            if erased:
                return {"error": f"task '{task_id}' was erased: its tenant or data subject was forgotten",
                        "erased": True, "task_id": task_id}
            return {"task_id": task_id, **Line().as_json(), "nodes": {}, "call_log": []}
        nodes = {str(r[0]): _line(r[1:]) for r in conn.execute(
            f"SELECT node, {sums} FROM {self.p}_calls WHERE {where} GROUP BY node ORDER BY min(sequence)",
            (tenant, task_id))}
        log_rows = conn.execute(f"SELECT entry FROM {self.p}_calls WHERE {where} ORDER BY sequence",
                                (tenant, task_id)).fetchall()
        return {"task_id": task_id, **_line(total), "nodes": nodes, "call_log": [r[0] for r in log_rows], **budget}

    def _budget_line(self, conn: psycopg.Connection[Any], tenant: str, task_id: str) -> dict[str, Any]:
        """{"budget": the task's budget line and log}, or {} for a task without a budget."""
        where = "tenant = %s AND task_id = %s"
        rows = conn.execute(f"SELECT type, limit_usd, entry FROM {self.p}_budget WHERE {where} ORDER BY sequence",
                            (tenant, task_id)).fetchall()
        if not rows:
            return {}
        sums = conn.execute(f"SELECT {BUDGET_SUMS} FROM {self.p}_budget WHERE {where}", (tenant, task_id)).fetchone()
        assert sums is not None
        limits = [r[1] for r in rows if r[1] is not None]
        line = _budget(sums)
        if limits:
            line["limit_usd"] = usd(Decimal(limits[-1]))
        return {"budget": {**line, "log": [r[2] for r in rows]}}


TASK_COLUMNS = "tenant, task_id, workflow, revision, status, started_at, finished_at, error, input_text"
"""The task index's columns, in TaskRow's order."""

BUDGET_SUMS = ("coalesce(sum(reserved_usd), 0), coalesce(sum(spent_usd), 0), count(*) FILTER (WHERE type = "
               "'budget.reserved'), count(*) FILTER (WHERE type = 'budget.settled'), count(*) FILTER (WHERE type = "
               "'budget.exceeded'), count(*) FILTER (WHERE type = 'budget.alert')")


def _budget(row: Sequence[Any]) -> dict[str, Any]:
    """A budget line as BudgetLine.as_json writes it (without the limit)."""
    line = BudgetLine(reserved=Decimal(row[0]), spent=Decimal(row[1]), reservations=int(row[2]),
                      settlements=int(row[3]), exceeded=int(row[4]), alerts=int(row[5]))
    return line.as_json()


def _line(row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(LINE_SUMS, row, strict=True))
    return {k: str(v) if k == "cost_usd" else int(v) for k, v in values.items()}

