# The two commands of the README: `make run` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck browser rabbitmq bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("docingest needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/docingest up

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check docingest tests scripts benchmarks
	$(BIN)/ruff format --check docingest tests scripts benchmarks

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

test: lint typecheck browser rabbitmq
	$(BIN)/pytest

# The dashboard's browser test drives Debian's chromium; as root, install it when missing
# (otherwise that test skips and says why).
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# The RabbitMQ tests start a node of their own from Debian's rabbitmq-server; as root, install it
# when missing, with a policy-rc.d that forbids starting the system's RabbitMQ service (otherwise
# those tests skip and say why).
rabbitmq:
	@[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || [ "$$(id -u)" != 0 ] || { \
		[ ! -e /usr/sbin/policy-rc.d ] || { echo "/usr/sbin/policy-rc.d exists: install rabbitmq-server yourself"; exit 1; }; \
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT; \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server; }

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
