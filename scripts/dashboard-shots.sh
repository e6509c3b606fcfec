#!/usr/bin/env bash
# Refresh the dashboard screenshots in docs/img (docs/observability.md): runs the dashboard's browser test
# (tests/test_e2e_dashboard.py, headless Debian chromium) and the tenants test's task page with its trace link
# (tests/test_e2e_dashboard_tenants.py) with AE_DASHBOARD_SCREENSHOTS set, which copies them.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory install chromium
# a basetemp of its own: pytest's default one under /tmp is shared with anyone else's run on the machine
AE_DASHBOARD_SCREENSHOTS="$PWD/docs/img" .venv/bin/pytest --basetemp="/tmp/dashboard-shots-$(id -un)" \
    -p no:cacheprovider -q \
    tests/test_e2e_dashboard.py::test_a_task_runs_live_in_the_browser_and_is_approved_from_it \
    tests/test_e2e_dashboard.py::test_a_tasks_large_output_is_listed_on_its_page_shown_and_downloaded_exact \
    tests/test_e2e_dashboard_tenants.py
ls -l docs/img/dashboard-*.png
