# Floodgate: every target that needs the environment runs `setup` first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make test: pytest-xdist workers, each with its own embedded store. Most tests wait on
# sockets and timers, not on a CPU: measured on a 2-core host (README, "Tests").
TEST_WORKERS ?= 4
# make check: the in-process lane (tests/support/lanes.py marks the others).
IN_PROCESS := not process and not browser and not bench and not postfix

.PHONY: setup install run check test lint bench flood clean

setup: $(STAMP)

# Reinstall only when the project definition changes: `make setup` is fast when done.
# uv (a package installer, into the venv only) installs the same packages as pip in about a
# quarter of the time; pip does it wherever uv cannot be had. UV_NATIVE_TLS: the host's
# certificate store, as pip uses it.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv; then \
		echo "uv pip install -e '.[dev]'"; \
		UV_NATIVE_TLS=1 $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'; \
	else \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e '.[dev]'; \
	fi
	@touch $(STAMP)

# Production hosts (deploy/README.md): the project and its runtime dependencies only, no
# test, lint or browser tools. Rerun after a `git pull`; restart the services afterwards.
install:
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet .
	@$(BIN)/floodgate --help > /dev/null && echo "installed: $(BIN)/floodgate"

run: setup
	$(BIN)/floodgate run

# The in-process lane: tests that start no process, browser, bench suite or Postfix.
check: setup
	$(BIN)/python -m pytest -m "$(IN_PROCESS)" $(PYTEST_ARGS)

# test/bench change nothing outside the repository unless asked: with CI=true or
# FLOODGATE_INSTALL_TOOLS=1 they apt-install HAProxy and chromium (test) or Postfix (bench);
# otherwise a missing tool is one line of output and its tests or bench suite skip.
# Every test: in parallel, then the bench smoke runs alone (tests/suite.sh).
test: setup
	@sh tests/install-tools.sh
	@sh tests/suite.sh $(BIN)/python $(TEST_WORKERS) $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	@sh bench/install-postfix.sh
	$(BIN)/python -m bench

# Against `make run`'s receiver and API wherever the settings put them (`floodgate flood`
# reads FLOODGATE_SMTP_LISTEN, FLOODGATE_API_LISTEN, FLOODGATE_DOMAINS, FLOODGATE_DATA_DIR);
# FLOOD_ARGS adds options, e.g. FLOOD_ARGS='--duration 20 --idle 500'.
flood: setup
	$(BIN)/floodgate flood --preset incident --cleanup $(FLOOD_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
