"""An unordered route shared by two instances: both consume (no single active consumer), a kill -9
of one loses nothing, and the duplicates stay within what it held unacknowledged (shared consumers
do not replicate their dedup state: two of them would race for the same ids)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.cluster.site import Load, SinkReader, role, route_status, route_table, settle, write_instance
from tests.cluster.test_failover import check
from tests.lab.harness import JgwProcess, unique, wait_for
from tests.lab.rabbitnode import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PREFETCH = 50


def test_two_instances_share_an_unordered_route(cluster: Cluster, tmp_path: Path) -> None:
    prefix = unique("sh")
    table = route_table(prefix, prefetch=PREFETCH, window=PREFETCH)
    del table["ordering"]
    table["consumers"] = "shared"
    a = JgwProcess(write_instance(tmp_path, "gw-a", cluster, prefix, table))
    b = JgwProcess(write_instance(tmp_path, "gw-b", cluster, prefix, table, rotate=2))
    load, reader = Load(cluster.urls, f"{prefix}.src", rate=300), SinkReader(cluster.urls, f"{prefix}.dst")
    try:
        a.start()
        b.start()
        reader.start()
        load.start()
        assert role(a, prefix) == role(b, prefix) == "shared"
        both = wait_for(lambda: all(route_status(p, prefix)["in_flight"] is not None for p in (a, b)) and
                        cluster.queue(f"{prefix}.src").get("consumers") == 2, timeout=30, what="two consumers")
        assert both
        assert "x-single-active-consumer" not in cluster.queue(f"{prefix}.src")["arguments"]
        wait_for(lambda: len(reader.got) > 500, timeout=60, what="the load flowing")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGKILL)
        a.proc.wait()
        t = settle(load, reader)
        # unordered: order is not promised, so only loss and duplicates are checked
        t.out_of_order = []
        check(t, PREFETCH)
    finally:
        load.stop()
        reader.stop()
        a.stop()
        b.stop()
