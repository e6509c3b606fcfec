#!/usr/bin/env bash
# `make demo`: bring up the whole stack, run the research-review workflow offline, show the task, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${AE_PATH_BIN:-.venv/bin}
export AE_HOME=${AE_HOME:-$PWD/.agent-engine/demo}
# Offline by default. AE_PROVIDER=auto with ANTHROPIC_API_KEY set sends the agent nodes to Claude.
export AE_PROVIDER=${AE_PROVIDER:-mock}
export AE_MOCK_DELAY_S=${AE_MOCK_DELAY_S:-0.2}
export AE_TRACE_FILE=${AE_TRACE_FILE:-$AE_HOME/traces.jsonl}  # every process appends its spans (docs/observability.md)

trap 'AE_NATS_CREDENTIAL= "$BIN/agentctl" down >/dev/null 2>&1 || true' EXIT
echo "== agentctl up --detach (embedded NATS + PostgreSQL, the five services, the dashboard and the credential authority as processes; state in $AE_HOME)"
"$BIN/agentctl" up --detach
dashboard=$("$BIN/agentctl" ps --json | "$BIN/python" -c 'import json, sys; print(next((r.get("url") or "" for r in json.load(sys.stdin) if r["name"] == "dashboard"), ""))')
echo "the dashboard, while the demo runs: $dashboard (log in as admin with the token in $AE_HOME/dashboard-operators; docs/observability.md)"
echo
echo "== agentctl tenant add demo --user demo --role admin (authorization is on: every connection needs a credential)"
cred="$AE_HOME/credentials/tenants/demo/demo.json"
[ -f "$cred" ] || "$BIN/agentctl" tenant add demo --user demo --role admin >/dev/null
echo "the demo tenant's credential: $cred (docs/security.md says how another system connects with it)"
export AE_NATS_CREDENTIAL="$cred"  # from here on agentctl acts as demo/demo, for tenant demo only
echo
echo "== agentctl workflow validate examples/research-review"
"$BIN/agentctl" workflow validate examples/research-review
echo
echo "== agentctl run examples/research-review --input @examples/research-review/input.json"
out=$(mktemp)
"$BIN/agentctl" run examples/research-review --input @examples/research-review/input.json | tee "$out"
task_id=$(tail -n 1 "$out" | awk '{print $2}')
rm -f "$out"
echo
echo "== agentctl task show $task_id"
"$BIN/agentctl" task show "$task_id"
echo
echo "== agentctl tail --task $task_id --type 'task.*' --no-follow"
"$BIN/agentctl" tail --task "$task_id" --type 'task.*' --no-follow
echo
echo "traces (OpenTelemetry spans, one JSON object a line; task $task_id is one trace): $AE_TRACE_FILE"
echo "demo done: task $task_id succeeded. The stack is stopped; its data stays in $AE_HOME."
echo "to browse it in the dashboard: AE_HOME=$AE_HOME $BIN/agentctl up --detach, then open the dashboard URL that"
echo "AE_HOME=$AE_HOME $BIN/agentctl ps shows, task $task_id (stop with: AE_HOME=$AE_HOME $BIN/agentctl down)"
