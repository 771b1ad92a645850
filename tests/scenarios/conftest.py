"""Fixtures for the seed scenarios: two private RabbitMQ nodes and a dev PKI for the whole package
(started once, destroyed after the last scenario), and a ``World`` per test for its sites."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.rabbitnode import rabbitmq_installed
from tests.scenarios.sites import Brokers, World


@pytest.fixture(scope="package")
def brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    if not rabbitmq_installed():
        pytest.fail("rabbitmq-server is not installed: the scenarios need private RabbitMQ nodes")
    b = Brokers.start(tmp_path_factory.mktemp("scenario-sites"))
    yield b
    b.destroy()


@pytest.fixture
def world(brokers: Brokers, tmp_path: Path) -> Iterator[World]:
    w = World(brokers, tmp_path)
    yield w
    w.stop()
