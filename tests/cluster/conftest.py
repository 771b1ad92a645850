"""One real 3-node RabbitMQ cluster for the whole tests/cluster run (forming one takes about 40 s on
two cores); each test leaves every node running again. Skipped when rabbitmq-server is absent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.rabbitnode import Cluster, rabbitmq_installed


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not rabbitmq_installed():
        pytest.skip("rabbitmq-server is not installed")
    kept = os.environ.get("JGW_TEST_CLUSTER")
    if kept:  # a cluster a developer keeps running between runs (Cluster.save)
        yield Cluster.attach(Path(kept))
        return
    c = Cluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield c
    finally:
        c.destroy()


@pytest.fixture(autouse=True)
def all_nodes_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test on the cluster, every node runs again (the next test starts from a whole one)."""
    if request.node.get_closest_marker("cluster") is None:
        yield
        return
    cluster: Cluster = request.getfixturevalue("cluster")
    yield
    for node in cluster.nodes:
        if node.beam_pid() is None:
            cluster.restart(node)
    cluster.wait_running(len(cluster.nodes), timeout=120)
