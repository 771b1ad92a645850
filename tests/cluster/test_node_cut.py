"""A node cut from the active instance by the fault proxy: traffic stops (a black hole, not a
clean close), heartbeats notice on both sides, the broker gives the route to the standby, and the
cut instance's links move to a live node of its ``urls``.

What the topology allows: the fault proxy is a TCP proxy, so it can cut client links to a node.
A partition between cluster nodes would need the Erlang distribution to go through it (ports found
through epmd), which this harness does not do; quorum queues' behaviour there is RabbitMQ's own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cluster.site import Load, SinkReader, role, route_table, settle, write_instance
from tests.cluster.test_failover import check
from tests.lab.faultproxy import FaultProxyServer
from tests.lab.harness import JgwProcess, unique, wait_for
from tests.lab.rabbitnode import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PREFETCH = 50


def test_a_node_cut_from_the_active_instance(cluster: Cluster, tmp_path: Path) -> None:
    from toxiproxy import Toxiproxy

    prefix = unique("cut")
    route = prefix
    table = route_table(prefix, prefetch=PREFETCH, window=PREFETCH)
    with FaultProxyServer() as proxies:
        proxies.configure_client()
        first = cluster.nodes[0]
        link = Toxiproxy().create(upstream=f"127.0.0.1:{first.amqp_port}", name=f"amqp{os.getpid()}{time.time_ns()}")
        port = int(link.listen.rsplit(":", 1)[1])
        via_proxy = [first.url.replace(f":{first.amqp_port}/", f":{port}/"), *cluster.urls[1:]]
        a = JgwProcess(write_instance(tmp_path, "gw-a", cluster, route, table, urls=via_proxy))
        b = JgwProcess(write_instance(tmp_path, "gw-b", cluster, route, table, rotate=1))
        load, reader = Load(cluster.urls, f"{prefix}.src"), SinkReader(cluster.urls[::-1], f"{prefix}.dst")
        try:
            a.start()
            reader.start()
            load.start()
            wait_for(lambda: role(a, route) == "active", timeout=30, what="gw-a active")
            b.start()
            wait_for(lambda: len(reader.got) > 300, timeout=60, what="the load flowing")
            assert role(b, route) == "standby"
            cut = time.monotonic()
            link.add_toxic(type="timeout", stream="upstream", name="hole-up", attributes={"timeout": 0})
            link.add_toxic(type="timeout", stream="downstream", name="hole-down", attributes={"timeout": 0})
            wait_for(lambda: role(b, route) == "active", timeout=60, interval=0.05, what="takeover by gw-b")
            took = time.monotonic() - cut

            def moved() -> bool:
                links = a.status()["links"]
                return all(v["up"] and f":{port}/" not in v["url"] for v in links.values())

            wait_for(moved, timeout=60, what="gw-a's links on a live node")
            assert role(a, route) == "standby"
            t = settle(load, reader)
            print(f"node cut from the active instance: takeover {took:.3f}s")
            check(t, PREFETCH)
        finally:
            load.stop()
            reader.stop()
            a.stop()
            b.stop()
            link.destroy()
