# The two commands of the README: `make run` and `make test`. Each sets up .venv first, from uv.lock.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv installs .venv from uv.lock. It lives in a venv of its own, made from the only thing a fresh
# machine needs (Python 3.11+), so that syncing .venv exactly never removes it.
UV_VERSION := $(shell sed -n 's/^required-version = "==\(.*\)"$$/\1/p' pyproject.toml)
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_INSTALLED := $(TOOLS)/.uv-$(UV_VERSION)
# Python keeps compiled modules (__pycache__, ignored by git) even where the environment says
# not to: without them every process the tests start compiles its imports again (a worker's
# took 6-7 s of CPU instead of 2).
unexport PYTHONDONTWRITEBYTECODE
# The Python that make checked, never one uv would download.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: run check test lint typecheck lock lock-upgrade lock-check browser rabbitmq prometheus bench clean reference chaos

$(UV_INSTALLED):
	@$(PYTHON) -c 'import sys; sys.exit("docingest needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	[ -x $(TOOLS)/bin/python ] || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check 'uv==$(UV_VERSION)'
	touch $@

# `--locked`: the versions and hashes of uv.lock, and an error instead of an install when the
# lock no longer matches pyproject.toml (then `make lock`). `run` adds what it needs to a .venv
# that `test` may have filled (`--inexact`); `test` gets every extra and removes anything else.
$(VENV)/.run-installed: pyproject.toml uv.lock | $(UV_INSTALLED)
	$(UV) sync --locked --inexact
	touch $@

$(VENV)/.dev-installed: pyproject.toml uv.lock | $(UV_INSTALLED)
	$(UV) sync --locked --all-extras
	touch $@ $(VENV)/.run-installed

# After editing pyproject.toml (or merging a branch that did): uv.lock follows it, keeping every
# version it can. `lock-upgrade` moves every package to its newest release within the bounds.
lock: | $(UV_INSTALLED)
	$(UV) lock

lock-upgrade: | $(UV_INSTALLED)
	$(UV) lock --upgrade

# Fails when uv.lock is out of date with pyproject.toml.
lock-check: | $(UV_INSTALLED)
	$(UV) lock --check

run: $(VENV)/.run-installed
	$(BIN)/docingest up

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check docingest tests scripts benchmarks clients/python
	$(BIN)/ruff format --check docingest tests scripts benchmarks clients/python

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

# The tests in four folders (tiers), each slower than the one before:
#   tests/unit         no server at all
#   tests/integration  the in-process app over the suite's real Redis, PostgreSQL, SQLite, RabbitMQ
#   tests/system       API and worker processes of the test's own, servers stopped or cut off
#   tests/multihost    hosts in network namespaces (root), on a test network per xdist worker,
#                      which each test's module holds per broker
# `make check` is the fast loop: lint, types and the first two tiers but the RabbitMQ ones (a
# node start-up is 7 s; the default stack is Redis). `make test` (CI) is all.
# PYTEST_WORKERS: pytest-xdist workers for the fast tiers, each with servers of its own; three
# on two cores, as a third of their time is spent waiting on servers and subprocesses;
# PYTEST_ARGS: any more options.
FAST_TESTS := tests/unit tests/integration
PYTEST_WORKERS ?= 3
# The slow tiers wait more than they compute (servers stopped, hosts cut off, faults timed): two
# workers per core. Each worker builds its multi-host tests a network of its own
# (tests/hosts.py), so those run beside the system tests; they come first, being the longest
# (the fault campaigns, 1.5-2 min each), so that none starts last and alone.
SLOW_WORKERS ?= 4
PYTEST := $(BIN)/pytest $(PYTEST_ARGS)

check: lint typecheck
	$(PYTEST) -n $(PYTEST_WORKERS) $(FAST_TESTS) --ignore=tests/integration/test_rabbitmq.py

test: lock-check lint typecheck browser rabbitmq prometheus
	$(PYTEST) -n $(PYTEST_WORKERS) $(FAST_TESTS)
	$(PYTEST) -n $(SLOW_WORKERS) tests/multihost tests/system

# A randomized fault campaign on hosts in network namespaces (root), checked against its history
# (tests/chaos, docs/reliability.md "The fault campaign"); exit status 0 only without anomaly.
DURATION ?= 90
SEED ?= 1
BROKER ?= redis

chaos: $(VENV)/.dev-installed
	$(BIN)/python -m tests.chaos --duration $(DURATION) --seed $(SEED) --broker $(BROKER)

# The pages of docs/reference/, generated from the code (tests/unit/test_reference.py checks them).
reference: $(VENV)/.dev-installed
	$(BIN)/python scripts/reference.py

# The dashboard's browser test drives Debian's chromium; as root, install it when missing
# (otherwise that test skips and says why).
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# As root, apt-get install Debian's package $(1) (options $(3)) when $(2) is missing, under a
# policy-rc.d (only for the install, unless one already exists) that keeps the package from
# starting its daemon system-wide. Otherwise the tests that need it skip and say why.
define install-without-daemon
	@[ -x $(2) ] || [ "$$(id -u)" != 0 ] || { \
		policy=/usr/sbin/policy-rc.d; ours=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy; chmod 755 $$policy; ours=1; fi; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(3) $(1); \
		status=$$?; [ -z "$$ours" ] || rm -f $$policy; exit $$status; }
endef

# The RabbitMQ tests (tests/*/test_rabbitmq.py, and tests/multihost/test_multihost.py inside network
# namespaces) start nodes of their own from Debian's rabbitmq-server.
rabbitmq:
	$(call install-without-daemon,rabbitmq-server,/usr/lib/rabbitmq/bin/rabbitmq-server)

# tests/*/test_grafana.py checks every query of deploy/ with promtool, from Debian's prometheus
# (the server stays stopped; its recommended exporters are left out).
prometheus:
	$(call install-without-daemon,prometheus,/usr/bin/promtool,--no-install-recommends)

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) var .pytest_cache .mypy_cache .ruff_cache
