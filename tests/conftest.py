"""Shared fixtures: the machine's RabbitMQ, unique names, and node configs written for a test.

Every test that talks to RabbitMQ uses the real broker at 127.0.0.1:5672 (``make test`` makes
sure one answers) or private nodes it starts and destroys itself. Nothing here imitates a broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.amqp.amqplib import node_with_amqplib
from tests.lab.harness import MAIN_URL, Amqp, Names, NodeFactory, render_config
from tests.lab.rabbitnode import port_open


@pytest.fixture(scope="session")
def main_broker() -> str:
    if not port_open(5672):
        pytest.fail("no RabbitMQ on 127.0.0.1:5672: run `make broker` (make test does it for you)")
    return MAIN_URL


@pytest.fixture
def amqp(main_broker: str) -> Iterator[Amqp]:
    client = Amqp(main_broker)
    yield client
    client.close()


@pytest.fixture
def names(amqp: Amqp) -> Iterator[Names]:
    n = Names()
    yield n
    with Amqp(amqp.url) as cleanup:
        cleanup.delete(*n.queues, exchanges=n.exchanges)
        cleanup.delete(*_route_queues(n.configs))


def _route_queues(configs: list[Path]) -> list[str]:
    """Queues jgw declared on the main broker for these configs' routes (retry tiers, sources)."""
    from gateway import config as config_mod
    from gateway.amqp.topology import retry_queue

    out: list[str] = []
    for path in configs:
        try:
            cfg = config_mod.load(path)
        except Exception:
            continue
        for route in cfg.routes.values():
            if route.source.is_file:
                continue
            out.append(route.source.queue)
            out += [retry_queue(route, i) for i in range(len(route.retry))]
            if route.sink.queue:
                out.append(route.sink.queue)
    return out


@pytest.fixture
def node_config(tmp_path: Path, main_broker: str, names: Names) -> NodeFactory:
    """Write a node config: node_config(routes={...}, brokers=..., node_id=..., **node_keys) -> path."""
    counter = [0]

    def make(routes: dict[str, dict[str, Any]], *, brokers: dict[str, dict[str, Any]] | None = None,
             node_id: str = "test-node", defaults: dict[str, Any] | None = None,
             tables: dict[str, dict[str, Any]] | None = None, **node: Any) -> Path:
        counter[0] += 1
        base = tmp_path / f"{node_id}-{counter[0]}"
        base.mkdir(parents=True, exist_ok=True)
        node_table = {"id": node_id, "state_dir": str(base / "state"), **node}
        text = render_config(node_table, brokers or {"local": {"urls": [main_broker]}}, routes, defaults,
                             tables=tables)
        path = base / "jgw.toml"
        path.write_text(text)
        names.configs.append(path)
        return path

    return make


@pytest.fixture(scope="session")
def node() -> str:
    """Node.js with amqplib: a client that is not pika (skipped only when node is not installed)."""
    return node_with_amqplib()
