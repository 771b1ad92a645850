# jgw — two commands for a fresh Debian machine: `make demo` and `make test`.
# Each does its own set-up: virtualenv, install, and a RabbitMQ if none answers on 127.0.0.1:5672.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv broker test test-fast demo lint bench bundle clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	touch $@

venv: $(STAMP)

broker: venv
	$(BIN)/python -m gateway.testing.broker

test: venv broker
	$(BIN)/python -m pytest -q

test-fast: venv broker
	$(BIN)/python -m pytest -q -m 'not slow'

demo: venv broker
	$(BIN)/python -m ops.demo

lint: venv
	$(BIN)/ruff check gateway tests ops
	$(BIN)/mypy gateway

bench: venv broker
	$(BIN)/python ops/bench/relay.py

bundle: venv
	ops/bundle/build.sh --out dist --python $(BIN)/python

clean:
	rm -rf $(VENV) var demo-out .pytest_cache .mypy_cache .ruff_cache
