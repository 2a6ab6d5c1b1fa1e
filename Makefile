# The two commands a new user needs: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DAYS ?= 14
export FLYWHEEL_DATA_DIR ?= $(CURDIR)/data
export DAGSTER_HOME ?= $(FLYWHEEL_DATA_DIR)/dagster_home
UI_HOST ?= 127.0.0.1
UI_PORT ?= 3000

.PHONY: install install-deploy browser postgres demo benchmark-backfill ui test test-fast benchmark-signal benchmark-loops benchmark-gate benchmark-compounding benchmark-profiles benchmark-rotation benchmark-poisoning drill clean label-studio-install label-studio

# Re-install only when the dependency list changes.
$(BIN)/flywheel: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) (Python 3.11); set PYTHON=..."; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $@

install: $(BIN)/flywheel

# The deploy environment (the user-code image's dependencies): the warehouse as a
# DuckLake, whose extension packages are built for DuckDB 1.5.5 only, so it is a venv of
# its own; `make demo` and the rest of the tests keep the DuckDB of `make install`.
DEPLOY_VENV := .venv-deploy
$(DEPLOY_VENV)/bin/flywheel: pyproject.toml
	@test -x $(DEPLOY_VENV)/bin/python || $(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/python -m pip install --quiet -e ".[deploy,test]"
	@touch $@

install-deploy: $(DEPLOY_VENV)/bin/flywheel

demo: install
	$(BIN)/flywheel demo --days $(DAYS)

ui: install
	@mkdir -p $(DAGSTER_HOME)
	@$(BIN)/python -c "import sys; from flywheel_assets.settings import ensure_instance_config; ensure_instance_config(sys.argv[1])" "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml -h $(UI_HOST) -p $(UI_PORT)

# A Debian package the tests need, installed with apt-get (as root, or through sudo)
# unless $(1) finds it: $(1) the check, $(2) the package, $(3) what needs it.
define apt_install
	@$(1) >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "$(3) need Debian's '$(2)' package; install it and run make again"; exit 1; }; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "$(3) need Debian's $(2): run 'apt-get install $(2)' as root, then make again"; exit 1; fi; \
	  echo "installing Debian's $(2) ($(3))"; \
	  $$SUDO apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(2); }
endef

# The browser tests drive Debian's Chromium through Playwright; Playwright's own browser
# download is never used (it needs the internet).
browser:
	$(call apt_install,test -x /usr/bin/chromium,chromium,the browser tests)
	@/usr/bin/chromium --version

# The live instance's tests run it on a real PostgreSQL server (Debian's package, started
# by the tests in a temporary directory on 127.0.0.1; no service is set up here).
postgres:
	$(call apt_install,ls /usr/lib/postgresql/*/bin/initdb,postgresql,the Postgres-backed instance's tests)
	@ls /usr/lib/postgresql/*/bin/initdb

# Everything (what CI runs): the live Dagster instance, the browser and the end-to-end
# demo included.
# Two pytest-xdist workers (the machine's two cores), a module per worker at a time
# (flywheel_assets_tests/conftest.py schedules them).
XDIST ?= -n 2
# Then the tests marked `lake` in the deploy environment (exit 5: PYTEST_ARGS chose none).
test: install browser label-studio-install postgres install-deploy
	$(BIN)/python -m pytest -m "not lake" $(XDIST) $(PYTEST_ARGS)
	$(DEPLOY_VENV)/bin/python -m pytest -m lake -p no:logging $(PYTEST_ARGS) || test $$? = 5

# The inner loop: every test but those marked slow (live instance, browser, demo).
test-fast: install
	$(BIN)/python -m pytest -m "not slow and not lake" $(XDIST) $(PYTEST_ARGS)

# The same landed days rotated one after another and by `flywheel backfill --parallel P`,
# each on a lake catalogued in a PostgreSQL server the benchmark starts: wall times,
# their ratio, whether the tables are the same (the deploy environment: DuckLake).
PARALLEL ?= 2
BACKFILL_DAYS ?= 4
benchmark-backfill: install-deploy postgres
	$(DEPLOY_VENV)/bin/flywheel benchmark backfill --days $(BACKFILL_DAYS) --parallel $(PARALLEL)

# Full loop vs the naive loop (--no-ips --no-filters) on the same world, side by side.
benchmark-signal: install
	$(BIN)/flywheel benchmark signal --days $(DAYS) --jobs 2

# A bot ring of 5% of the users pushing five items, bot_attack on the second half of the
# days: where the champion ranks its targets, bot defences on vs off, side by side.
benchmark-poisoning: install
	$(BIN)/flywheel benchmark poisoning --days $(DAYS) --jobs 2

# Guarded loop (exploration + diversity re-ranking) vs the greedy loop in the responsive
# world, 28 days each, side by side.
benchmark-loops: install
	$(BIN)/flywheel benchmark loops --days 28 --jobs 2

# What the loop's memory is worth: profiles from feedback vs --no-profiles, side by side.
benchmark-compounding: install
	$(BIN)/flywheel benchmark compounding --days $(DAYS) --jobs 2

# Seconds and peak memory of one day's profiles at 1M curated rows a day (synthetic).
benchmark-profiles: install
	$(BIN)/flywheel benchmark profiles --impressions-per-day 1000000

# One full rotation of a day of IMPRESSIONS (default 1M; 10M on request) through Dagster
# and from a plain loop of the same steps: seconds per stage, rows/s, peak memory, ratio.
IMPRESSIONS ?= 1000000
benchmark-rotation: install
	$(BIN)/flywheel benchmark rotation --impressions $(IMPRESSIONS)

# The gate's error rates against the world's truth: 4 worlds x 20 seeds x 7 days,
# two processes; prints aa_false_promotions_per_365=<x> coverage=<y> power_2pct=<z> last.
benchmark-gate: install
	$(BIN)/flywheel benchmark gate --seeds 20 --jobs 2

# On-call fire drill: real webserver + daemon on a temporary instance, a drifted day,
# prints drift_to_decision_seconds=<N> last.
drill: install
	$(BIN)/flywheel drill drift

# Label Studio (the labelling tool) in its own venv: its dependencies clash with ours, so
# it never goes into $(VENV). Pinned: the integration test checks this version's API.
LS_VENV := .venv-label-studio

$(LS_VENV)/bin/label-studio:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "needs $(PYTHON) (Python 3.11); set PYTHON=..."; exit 1; }
	@test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LS_VENV)/bin/python -m pip install --quiet "label-studio==1.23.2"
	@touch $@

label-studio-install: $(LS_VENV)/bin/label-studio

# A local Label Studio at http://127.0.0.1:8080 (data in $(FLYWHEEL_DATA_DIR)/label_studio).
# LABEL_STUDIO_TOKEN (6-40 characters, your own secret) becomes the admin's API token on
# the first start of that data dir; log in to the UI as admin@example.com with it as password
# (or set LABEL_STUDIO_USERNAME / LABEL_STUDIO_PASSWORD).
#   export LABEL_STUDIO_TOKEN=...; make label-studio                          # terminal 1
# Then, in another terminal with the same LABEL_STUDIO_TOKEN and FLYWHEEL_DATA_DIR:
#   $(BIN)/flywheel label-studio push --date 2026-01-05     # the day's queue -> project
#   ... annotate in the browser ...
#   $(BIN)/flywheel label-studio pull                       # export -> data/labeling/inbox/
# The next rotation's human_labels imports the inbox.
label-studio: install label-studio-install
	@test -n "$$LABEL_STUDIO_TOKEN" || { echo "set LABEL_STUDIO_TOKEN (6-40 characters; the API token of Label Studio's admin) and run make label-studio again"; exit 1; }
	$(BIN)/flywheel label-studio serve

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) *.egg-info .pytest_cache
