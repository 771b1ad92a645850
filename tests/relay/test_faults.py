"""Faults: brokers killed and restarted, jgw killed, a broker that is not there, a broker that blocks.

Private RabbitMQ nodes (started and destroyed here) play the second site, so they can be killed
with SIGKILL like a power cut. The invariant in every case: every message sent arrives; a message
arrives twice only if it was between source and sink at the instant of the crash, and then with
the same message id.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness import Amqp, JgwProcess, Names, NodeFactory, running, wait_for
from tests.lab.rabbitnode import PrivateNode, free_port

pytestmark = pytest.mark.slow

PREFETCH = 200


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNode]:
    node = PrivateNode(base=tmp_path_factory.mktemp("nodes")).start()
    yield node
    node.destroy()


def two_site_route(names: Names, src_broker: str, sink_broker: str, **extra: object) -> dict[str, object]:
    return {"personal_number": "allowed", "prefetch": PREFETCH,
            "source": {"broker": src_broker, "queue": f"{names.prefix}.src"},
            "sink": {"broker": sink_broker, "exchange": "jgw.in", "exchange_type": "direct",
                     "routing_key": names.prefix, "queue": f"{names.prefix}.dst"}, **extra}


def brokers(main_url: str, node: PrivateNode) -> dict[str, dict[str, object]]:
    return {"local": {"urls": [main_url]},
            "dc": {"urls": [node.url], "reconnect_min": "200ms", "reconnect_max": "2s"}}


def assert_all_arrived(sent: list[str], got: list[str], bound: int) -> None:
    counts = Counter(got)
    assert set(counts) == set(sent), f"lost: {len(set(sent) - set(counts))}, unknown: {set(counts) - set(sent)}"
    dups = sum(n - 1 for n in counts.values())
    assert dups <= bound, f"{dups} duplicates, more than the {bound} that can be in flight"


def fill_source(cfg: Path, amqp: Amqp, route: str, queue: str, n: int) -> list[str]:
    amqp.declare_source(cfg, route)
    return amqp.publish(queue, [f"msg-{i}".encode() * 20 for i in range(n)])


def declare_sink(cfg: Path) -> None:
    """Let jgw declare the sink queue, then give the broker time to persist it.

    Measured on RabbitMQ 3.10.8 (ra 2.2.0): a quorum queue killed with SIGKILL within about half a
    second of its declaration comes back empty and unavailable (its ra directory entry is saved
    by a DETS auto-save every 500 ms). A site's queues live for years, so the tests kill brokers
    whose queues are older than that, as in production."""
    with running(cfg):
        pass
    time.sleep(1.5)


def test_sink_broker_killed_and_restarted_mid_stream_loses_nothing(
        site: PrivateNode, names: Names, node_config: NodeFactory, amqp: Amqp, main_broker: str) -> None:
    cfg = node_config({names.route("r"): two_site_route(names, "local", "dc")}, brokers=brokers(main_broker, site))
    sent = fill_source(cfg, amqp, names.route("r"), f"{names.prefix}.src", 4000)
    declare_sink(cfg)
    with running(cfg) as proc, Amqp(site.url) as dc:
        wait_for(lambda: (dc.depth(f"{names.prefix}.dst") or 0) >= 500, what="some delivered")
        dc.close()
        site.kill()
        time.sleep(1.0)
        assert any(r["state"] != "running" for r in proc.status()["routes"])
        site.start()
        with Amqp(site.url) as dc2:
            got = dc2.drain(f"{names.prefix}.dst", expect=len(sent), timeout=120, idle=2.0)
        republished = proc.status()
    assert_all_arrived(sent, [m.message_id for m in got], bound=PREFETCH)
    assert republished["routes"][0]["in_flight"] == 0


def test_source_broker_killed_and_restarted_mid_stream_loses_nothing(
        site: PrivateNode, names: Names, node_config: NodeFactory, amqp: Amqp, main_broker: str) -> None:
    cfg = node_config({names.route("r"): two_site_route(names, "dc", "local")}, brokers=brokers(main_broker, site))
    with Amqp(site.url) as dc:
        sent = fill_source(cfg, dc, names.route("r"), f"{names.prefix}.src", 4000)
    time.sleep(1.5)  # see declare_sink
    names.queues.append(f"{names.prefix}.dst")
    with running(cfg):
        wait_for(lambda: (amqp.depth(f"{names.prefix}.dst") or 0) >= 500, what="some delivered")
        site.kill()
        time.sleep(1.0)
        site.start()
        got = amqp.drain(f"{names.prefix}.dst", expect=len(sent), timeout=120, idle=2.0)
    assert_all_arrived(sent, [m.message_id for m in got], bound=PREFETCH)


def test_jgw_killed_with_sigkill_and_restarted_loses_nothing(names: Names, node_config: NodeFactory,
                                                             amqp: Amqp) -> None:
    route = two_site_route(names, "local", "local")
    cfg = node_config({names.route("r"): route})
    dst = f"{names.prefix}.dst"
    names.queues.append(dst)
    sent = fill_source(cfg, amqp, names.route("r"), f"{names.prefix}.src", 5000)
    proc = JgwProcess(cfg).start()
    wait_for(lambda: (amqp.depth(dst) or 0) >= 1000, what="some delivered")
    proc.kill()
    assert 0 < (amqp.depth(dst) or 0) < len(sent), "killed mid-stream"
    with running(cfg):
        got = amqp.drain(dst, expect=len(sent), timeout=120, idle=2.0)
    # in flight at the crash: at most the prefetch window; each duplicate has the id of a sent message
    assert_all_arrived(sent, [m.message_id for m in got], bound=PREFETCH)


def test_broker_unreachable_at_start_daemon_keeps_trying_and_reports_it(
        tmp_path: Path, names: Names, node_config: NodeFactory, amqp: Amqp, main_broker: str) -> None:
    late = PrivateNode(base=tmp_path, amqp_port=free_port())
    port = free_port()
    cfg = node_config({names.route("r"): two_site_route(names, "local", "dc")}, brokers=brokers(main_broker, late),
                      metrics_listen=f"127.0.0.1:{port}")
    sent = fill_source(cfg, amqp, names.route("r"), f"{names.prefix}.src", 50)
    proc = JgwProcess(cfg).start(wait=False)
    try:
        from .test_relay import metric
        wait_for(lambda: _safe(lambda: metric(port, "jgw_broker_up", broker="dc", role="publish") == 0),
                 what="broker_up 0")
        wait_for(lambda: _safe(lambda: proc.status()["routes"][0]["state"] == "waiting for sink"),
                 what="status says waiting for sink")
        time.sleep(2.0)
        assert amqp.depth(f"{names.prefix}.src") == 0 or proc.status()["routes"][0]["in_flight"] == 50
        assert proc.proc is not None and proc.proc.poll() is None, "still running, still trying"
        late.start()
        proc.wait_running(60)
        assert metric(port, "jgw_broker_up", broker="dc", role="publish") == 1
        with Amqp(late.url) as dc:
            got = dc.drain(f"{names.prefix}.dst", expect=len(sent), timeout=60)
        assert_all_arrived(sent, [m.message_id for m in got], bound=0)
    finally:
        proc.stop()
        late.destroy()


def test_publishing_stops_while_the_sink_broker_blocks_and_resumes_after(
        site: PrivateNode, names: Names, node_config: NodeFactory, amqp: Amqp, main_broker: str) -> None:
    port = free_port()
    cfg = node_config({names.route("r"): two_site_route(names, "local", "dc")}, brokers=brokers(main_broker, site),
                      metrics_listen=f"127.0.0.1:{port}")
    from .test_relay import metric
    with running(cfg) as proc:
        site.ctl("set_vm_memory_high_watermark", "0.000001")
        try:
            # RabbitMQ blocks a connection when it next publishes during the alarm
            sent = amqp.publish(f"{names.prefix}.src", [b"held"] * 100)
            wait_for(lambda: _safe(lambda: metric(port, "jgw_broker_blocked", broker="dc") == 1), what="blocked")
            assert proc.status()["routes"][0]["state"] == "blocked by sink broker"
            time.sleep(1.5)
            with Amqp(site.url) as dc:
                assert dc.depth(f"{names.prefix}.dst") == 0, "nothing published while blocked"
        finally:
            site.ctl("set_vm_memory_high_watermark", "0.4")
        wait_for(lambda: _safe(lambda: metric(port, "jgw_broker_blocked", broker="dc") == 0), what="unblocked")
        with Amqp(site.url) as dc:
            got = dc.drain(f"{names.prefix}.dst", expect=len(sent), timeout=60)
    assert_all_arrived(sent, [m.message_id for m in got], bound=0)


def _safe(check: object) -> bool:
    try:
        return bool(check())  # type: ignore[operator]
    except Exception:
        return False
