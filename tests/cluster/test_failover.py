"""Two jgw instances on one ordered route of a real 3-node cluster, under continuous load, every id
counted: the active one killed (-9), paused (SIGSTOP) and resumed; the node holding the source
queue's leader killed; all three nodes restarted one by one.

After each: nothing lost, per-key order kept at the sink, duplicates within the bound of
``gateway.cluster.replication`` (at most the deliveries the old active held unacknowledged, only
those it had already published: ``prefetch`` per takeover), counts reconcile (every confirmed id
arrived; the queues are empty).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster.site import (
    Load,
    SinkReader,
    Tally,
    role,
    route_status,
    route_table,
    settle,
    write_instance,
)
from tests.lab.harness import JgwProcess, scrape_metric, unique, wait_for
from tests.lab.rabbitnode import Cluster, free_port

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PREFETCH = 50


@dataclass
class Site:
    route: str
    queue: str
    sink: str
    a: JgwProcess
    b: JgwProcess
    load: Load
    reader: SinkReader
    ports: dict[str, int]

    def active(self) -> tuple[JgwProcess, JgwProcess]:
        """(active, standby), once exactly one of them consumes."""
        def one() -> tuple[JgwProcess, JgwProcess] | None:
            ra, rb = role(self.a, self.route), role(self.b, self.route)
            if ra == "active" and rb == "standby":
                return self.a, self.b
            if rb == "active" and ra == "standby":
                return self.b, self.a
            return None
        found: tuple[JgwProcess, JgwProcess] = wait_for(one, timeout=30, interval=0.05, what="one active instance")
        return found


@pytest.fixture
def site(cluster: Cluster, tmp_path: Path) -> Iterator[Site]:
    prefix = unique("ha")
    route = prefix  # the route names its delivered-ids stream: one per test
    table = route_table(prefix, prefetch=PREFETCH, window=PREFETCH)
    ports = {"gw-a": free_port(), "gw-b": free_port()}
    a = JgwProcess(write_instance(tmp_path, "gw-a", cluster, route, table, rotate=0, metrics_port=ports["gw-a"]))
    b = JgwProcess(write_instance(tmp_path, "gw-b", cluster, route, table, rotate=1, metrics_port=ports["gw-b"]))
    a.start()
    b.start()
    s = Site(route, f"{prefix}.src", f"{prefix}.dst", a, b, Load(cluster.urls, f"{prefix}.src"),
             SinkReader(cluster.urls[::-1], f"{prefix}.dst"), ports)
    try:
        s.reader.start()
        s.load.start()
        wait_for(lambda: len(s.reader.got) > 200, timeout=60, what="the load flowing")
        yield s
    finally:
        s.load.stop()
        s.reader.stop()
        for p in (a, b):
            if p.proc is not None and p.proc.poll() is None:
                os.kill(p.proc.pid, signal.SIGCONT)
            p.stop()


def jgw_status(proc: JgwProcess) -> str:
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "status", str(proc.config)], capture_output=True,
                       text=True, timeout=60)
    return r.stdout + r.stderr


def check(t: Tally, bound: int) -> None:
    print(t)
    assert not t.lost, f"lost {len(t.lost)}: {t.lost[:10]}"
    assert not t.out_of_order, f"out of order: {t.out_of_order[:10]}"
    assert t.duplicates <= bound, f"{t.duplicates} duplicates, more than the bound {bound}"


def test_replicas_members_leader_and_active_instance_in_status(site: Site, cluster: Cluster) -> None:
    active, standby = site.active()
    st = route_status(active, site.route)
    assert st["role"] == "active"
    assert route_status(standby, site.route)["role"] == "standby"
    reps = wait_for(lambda: route_status(active, site.route)["replicas"] or None, timeout=15, what="replicas")
    assert len(reps["members"]) == 3 and len(reps["online"]) == 3 and reps["expected"] == 3
    assert reps["leader"] in {n.nodename for n in cluster.nodes}
    info = cluster.queue(site.queue)
    assert info["arguments"]["x-single-active-consumer"] is True
    assert info["arguments"]["x-quorum-initial-group-size"] == 3
    stream = wait_for(lambda: cluster.queue(f"jgw.delivered.{site.route}").get("members") and
                      cluster.queue(f"jgw.delivered.{site.route}"), timeout=15, what="the stream's members")
    assert stream["arguments"]["x-queue-type"] == "stream" and len(stream["members"]) == 3
    name = {id(site.a): "gw-a", id(site.b): "gw-b"}
    metric = {p: lambda p=p: scrape_metric(site.ports[name[id(p)]], "jgw_route_active", route=site.route)
              for p in (active, standby)}
    assert metric[active]() == 1 and metric[standby]() == 0
    wait_for(lambda: scrape_metric(site.ports[name[id(active)]], "jgw_queue_members_online", route=site.route) == 3,
             timeout=15, what="members online in the metrics")
    out = jgw_status(active)
    assert "instance: active (single-active consumers)" in out
    assert "replicas: 3/3 online, leader " in out and "WARNING" not in out
    assert "instance: standby" in jgw_status(standby)
    check(settle(site.load, site.reader), 0)


def test_kill_9_of_the_active_instance(site: Site) -> None:
    active, standby = site.active()
    time.sleep(1.0)
    assert active.proc is not None
    killed = time.monotonic()
    os.kill(active.proc.pid, signal.SIGKILL)
    active.proc.wait()
    wait_for(lambda: role(standby, site.route) == "active", timeout=30, interval=0.01, what="takeover")
    took = time.monotonic() - killed
    time.sleep(2.0)
    t = settle(site.load, site.reader)
    print(f"kill -9 of the active instance: takeover {took:.3f}s")
    check(t, PREFETCH)
    assert took < 2 + 3


def test_sigstop_of_the_active_instance(site: Site) -> None:
    active, standby = site.active()
    time.sleep(1.0)
    assert active.proc is not None
    stopped = time.monotonic()
    os.kill(active.proc.pid, signal.SIGSTOP)
    wait_for(lambda: role(standby, site.route) == "active", timeout=60, interval=0.05, what="takeover")
    took = time.monotonic() - stopped
    time.sleep(3.0)
    os.kill(active.proc.pid, signal.SIGCONT)  # the fence: it must give its deliveries back, not publish
    wait_for(lambda: role(active, site.route) == "standby", timeout=30, what="the old one standing by")
    time.sleep(2.0)
    t = settle(site.load, site.reader)
    print(f"SIGSTOP of the active instance: takeover {took:.3f}s")
    check(t, PREFETCH)
    assert took < 2 * 2 + 8
    assert active.log().count("process was paused") >= 1  # the fence, on resume
    assert "process was paused" not in standby.log()  # never at start-up or under load
    port = site.ports["gw-a" if active is site.a else "gw-b"]
    assert scrape_metric(port, "jgw_fence_trips_total", route=site.route) >= 1


def test_kill_9_of_the_node_holding_the_leader(site: Site, cluster: Cluster) -> None:
    site.active()
    leader = cluster.leader(site.queue)
    time.sleep(1.0)
    killed = time.monotonic()
    leader.kill()
    wait_for(lambda: cluster.queue(site.queue).get("leader") not in (None, leader.nodename), timeout=30,
             interval=0.1, what="a new leader")
    before = len(site.reader.got)
    wait_for(lambda: len(site.reader.got) > before + 100, timeout=60, interval=0.05, what="delivering again")
    took = time.monotonic() - killed
    wait_for(lambda: "WARNING: fewer online members than the 3 configured" in jgw_status(site.a), timeout=30,
             interval=0.5, what="jgw status warning of a missing replica")
    active, _standby = site.active()
    cluster.restart(leader)
    t = settle(site.load, site.reader)
    print(f"kill -9 of the leader's node: deliveries again after {took:.3f}s")
    check(t, 2 * PREFETCH)
    assert route_status(active, site.route)["state"] == "running"


def test_rolling_restart_of_all_three_nodes(site: Site, cluster: Cluster) -> None:
    site.active()
    started = time.monotonic()
    for node in cluster.nodes:
        node.stop()
        cluster.wait_running(2, timeout=60)
        time.sleep(2.0)
        cluster.restart(node)
        cluster.wait_running(3, timeout=120)
        wait_for(lambda: len(cluster.queue(site.queue).get("online") or []) == 3, timeout=60,
                 what="every member online")
    took = time.monotonic() - started
    site.active()
    t = settle(site.load, site.reader, timeout=120)
    print(f"rolling restart of three nodes: {took:.1f}s")
    check(t, 3 * 2 * PREFETCH)
