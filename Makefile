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
	$(BIN)/python -m pip install --quiet -e '.[dev,otel]'
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

# The RabbitMQ tests (tests/test_rabbitmq.py, and tests/test_multihost.py inside network
# namespaces) start nodes of their own from Debian's rabbitmq-server; as root, install it when
# missing, under a policy-rc.d (only for the install, unless one already exists) that keeps the
# package from starting a system-wide RabbitMQ. Otherwise those tests skip and say why.
rabbitmq:
	@[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || [ "$$(id -u)" != 0 ] || { \
		policy=/usr/sbin/policy-rc.d; ours=; \
		if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' >$$policy; chmod 755 $$policy; ours=1; fi; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server; \
		status=$$?; [ -z "$$ours" ] || rm -f $$policy; exit $$status; }

bench: $(VENV)/.dev-installed
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
