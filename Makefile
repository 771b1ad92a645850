# jgw — two commands for a fresh Debian machine: `make demo` and `make test`.
# Each does its own set-up: virtualenv, install, a RabbitMQ if none answers on 127.0.0.1:5672, and
# Debian's openssh-server for the private sshd instances of tests/files (tests/lab/sshd.py).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv broker sshd test test-fast demo cityday lint bench bundle clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,dev]'
	touch $@

venv: $(STAMP)

broker: venv
	$(BIN)/python -m tests.lab.broker

sshd: venv
	$(BIN)/python -m tests.lab.sshd --install

test: venv broker sshd
	$(BIN)/python -m pytest -q

test-fast: venv broker sshd
	$(BIN)/python -m pytest -q -m 'not slow'

demo: venv broker sshd
	$(BIN)/python -m ops.demo

cityday: venv broker sshd
	$(BIN)/python -m ops.cityday

lint: venv
	$(BIN)/ruff check gateway tests ops
	$(BIN)/mypy --explicit-package-bases gateway tests/lab

bench: venv broker
	$(BIN)/python ops/bench/relay.py

bundle: venv
	ops/bundle/build.sh --out dist --python $(BIN)/python

clean:
	rm -rf $(VENV) var demo-out cityday-out .pytest_cache .mypy_cache .ruff_cache
