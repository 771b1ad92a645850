"""The relay against the machine's RabbitMQ: delivery, set-aside, retries, dedup, order, status.

Each test runs a real ``jgw run`` process and checks what a user can observe: what reached which
queue (bytes and ids), what the CLI says, what the metrics say.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from gateway.cli import main
from tests.lab.harness import (
    Amqp,
    JgwProcess,
    Names,
    NodeFactory,
    purge_set_aside,
    running,
    scrape_metric,
    wait_for,
)
from tests.lab.rabbitnode import free_port


def metric(port: int, name: str, **labels: str) -> float:
    return scrape_metric(port, name, **labels)


def route(names: Names, *, sink_queue: str | None = None, **extra: object) -> dict[str, object]:
    """A route from queue ``<prefix>.src`` to exchange ``<prefix>.out`` (key "k") on the main broker."""
    r: dict[str, object] = {"personal_number": "allowed",
                            "source": {"broker": "local", "queue": src(names)},
                            "sink": {"broker": "local", "exchange": names.x("out"), "exchange_type": "direct",
                                     "routing_key": "k", **({"queue": sink_queue} if sink_queue else {})}}
    r.update(extra)
    return r


def src(names: Names) -> str:
    return f"{names.prefix}.src"


def test_messages_are_relayed_byte_for_byte_with_ids_and_headers(names: Names, node_config: NodeFactory,
                                                                 amqp: Amqp) -> None:
    dst = names.q("dst")
    port = free_port()
    cfg = node_config({names.route("r"): route(names, sink_queue=dst)}, metrics_listen=f"127.0.0.1:{port}")
    bodies = [bytes([i % 256]) * (i + 1) for i in range(300)] + [b"", "住民異動 ｱｲｳ".encode("cp932"), b"\x00\xff\r\n"]
    with running(cfg):
        ids = amqp.publish(src(names), bodies, headers={"x-business": "kizon-juki"})
        got = amqp.drain(dst, expect=len(bodies))
        assert [m.message_id for m in got] == ids, "ids and order preserved"
        assert [m.body for m in got] == bodies, "bytes identical"
        assert all(m.headers["x-business"] == "kizon-juki" for m in got)
        assert all(m.properties.delivery_mode == 2 for m in got)
        wait_for(lambda: metric(port, "jgw_messages_total", route=names.route("r"), outcome="delivered")
                 == len(bodies), what="delivered counter")
        assert metric(port, "jgw_received_messages_total", route=names.route("r")) == len(bodies)
        assert metric(port, "jgw_broker_up", broker="local", role="publish") == 1
        assert metric(port, "jgw_end_to_end_latency_seconds_count", route=names.route("r")) == len(bodies)
    assert amqp.depth(src(names)) == 0


def test_oversized_message_is_quarantined_with_reason_and_original_bytes(names: Names, node_config: NodeFactory,
                                                                         amqp: Amqp,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    dst = names.q("dst")
    r = names.route("r")
    cfg = node_config({r: route(names, sink_queue=dst, max_size=100)})
    big = b"B" * 101
    with running(cfg):
        [big_id, ok_id] = amqp.publish(src(names), [big, b"small"])
        got = amqp.drain(dst, expect=1)
        assert [m.message_id for m in got] == [ok_id]
        assert main(["quarantine", "list", str(cfg), "--json"]) == 0
        rows = [row for row in json.loads(capsys.readouterr().out) if row["id"] == big_id]
        assert len(rows) == 1
        assert rows[0]["route"] == r and rows[0]["reason"] == "too-large" and rows[0]["size"] == 101
        assert "101 bytes is over max_size 100" in rows[0]["detail"]
        assert main(["quarantine", "show", str(cfg), big_id, "--payload"]) == 0
        assert capsys.readouterr().out == big.decode()
    _purge_set_aside(amqp, big_id)


def test_unroutable_is_retried_then_dead_lettered_and_replay_delivers_exactly_once(
        names: Names, node_config: NodeFactory, amqp: Amqp, capsys: pytest.CaptureFixture[str]) -> None:
    r = names.route("r")
    exchange = names.x("out")
    cfg = node_config({r: route(names, retry=["200ms", "200ms"])})
    with running(cfg) as proc:
        ids = amqp.publish(src(names), [f"m{i}".encode() for i in range(5)])
        # nothing is bound to the sink exchange: each publish is returned as unroutable
        wait_for(lambda: {row["id"] for row in _dlq(cfg, capsys)} >= set(ids), timeout=30, what="dead letters")
        rows = {row["id"]: row for row in _dlq(cfg, capsys)}
        for mid in ids:
            assert rows[mid]["reason"] == "unroutable" and rows[mid]["route"] == r
            assert rows[mid]["attempt"] == 3, "two retry tiers, then dead-lettered"
        assert proc.status()["routes"][0]["in_flight"] == 0
        # the cause is fixed: a queue is bound; replay puts them back on the route
        dst = names.q("dst")
        amqp.declare_queue(dst)
        amqp.bind(dst, exchange, "k")
        assert main(["dlq", "replay", str(cfg), *ids]) == 0
        assert "replayed 5, failed 0" in capsys.readouterr().out
        got = amqp.drain(dst, expect=5)
        assert sorted(m.message_id for m in got) == sorted(ids)
        assert all(m.headers.get("x-jgw-replayed") == 1 for m in got)
        # each replay is recorded in the node's audit trail (written by the running daemon)
        from gateway import config as config_mod
        from gateway.audit import records
        trail = config_mod.load(cfg).audit
        assert trail is not None
        replays = [r for _, _, r in records(trail.directory) if r["ev"] == "replay"]
        assert sorted(r["msg"] for r in replays) == sorted(ids)
        assert all(rec["route"] == r and rec["reason"] == "unroutable" and rec["actor"] for rec in replays)
        assert not any(k in m.headers for m in got for k in ("x-jgw-reason", "x-jgw-attempt"))
        # a second copy of a delivered id (say an operator replays from a backup) is suppressed
        amqp.publish(src(names), [b"m0"], ids=[ids[0]])
        assert amqp.drain(dst, timeout=3, idle=1.5) == []
        assert main(["dlq", "replay", str(cfg), ids[0]]) == 1
        assert "not found in jgw.dead-letter" in capsys.readouterr().err


def test_a_nacked_publish_is_retried_on_a_new_channel(names: Names, node_config: NodeFactory, amqp: Amqp) -> None:
    """The sink queue (classic: exact about its limit) refuses what does not fit (``x-overflow:
    reject-publish``): the broker nacks the second message. jgw replaces the nacked channel (RabbitMQ
    3.10 may keep nacking a channel after a quorum queue's leader election: tests/cluster) and retries
    the message; once there is room it arrives, once, and the first is not sent twice: the first is
    large, so the broker acks it (once written) after it has nacked the second (at once), and the
    nacked channel must stay until that ack has come."""
    r = names.route("r")
    dst = names.q("dst")
    amqp.declare_exchange(names.x("out"))
    amqp._channel().queue_declare(dst, durable=True, arguments={
        "x-max-length": 1, "x-overflow": "reject-publish"})
    amqp.bind(dst, names.x("out"), "k")
    cfg = node_config({r: route(names, retry=["1s", "1s", "1s", "1s", "1s"])})
    with running(cfg) as proc:
        first = os.urandom(4 << 20)
        ids = amqp.publish(src(names), [first, b"second"])
        wait_for(lambda: "publish channel replaced after a nack" in proc.log(), timeout=30, what="the nack")
        got = amqp.drain(dst, expect=2, timeout=60, idle=2.0)
        assert [m.message_id for m in got] == ids and [m.body for m in got] == [first, b"second"]
        wait_for(lambda: proc.status()["routes"][0]["in_flight"] == 0, what="settled")
    assert amqp.depth(src(names)) == 0


def test_duplicates_from_upstream_are_suppressed_also_after_a_restart(names: Names, node_config: NodeFactory,
                                                                       amqp: Amqp) -> None:
    dst = names.q("dst")
    port = free_port()
    r = names.route("r")
    cfg = node_config({r: route(names, sink_queue=dst)}, metrics_listen=f"127.0.0.1:{port}")
    with running(cfg):
        amqp.publish(src(names), [b"a", b"a-again", b"b"], ids=["id-a", "id-a", "id-b"])
        got = amqp.drain(dst, expect=2)
        assert [(m.message_id, m.body) for m in got] == [("id-a", b"a"), ("id-b", b"b")]
        wait_for(lambda: metric(port, "jgw_dedup_hits_total", route=r) == 1, what="dedup hit")
    with running(cfg):  # the store is on disk: a restart remembers
        amqp.publish(src(names), [b"a-late", b"c"], ids=["id-a", "id-c"])
        got = amqp.drain(dst, expect=1)
        assert [m.message_id for m in got] == ["id-c"]
        wait_for(lambda: metric(port, "jgw_messages_total", route=r, outcome="duplicate") == 1, what="dup")


def test_ordered_route_keeps_per_key_order_across_retries(names: Names, node_config: NodeFactory,
                                                         amqp: Amqp) -> None:
    """異動 order per person: a message that must be retried is not overtaken by the next one of its key."""
    r = names.route("r")
    exchange = names.x("out")
    cfg = node_config({r: route(names, retry=["300ms"] * 20, ordering={"header": "x-person"})})
    with running(cfg):
        sent: list[tuple[str, str]] = []
        for i in range(30):
            person = f"p{i % 3}"
            [mid] = amqp.publish(src(names), [f"{person}-{i}".encode()], headers={"x-person": person})
            sent.append((person, mid))
        import time
        time.sleep(1.0)  # everything is failing as unroutable and waiting to be retried in place
        dst = names.q("dst")
        amqp.declare_queue(dst)
        amqp.bind(dst, exchange, "k")
        got = amqp.drain(dst, expect=30, timeout=60)
    assert sorted(m.message_id for m in got) == sorted(mid for _, mid in sent)
    for person in ("p0", "p1", "p2"):
        want = [mid for p, mid in sent if p == person]
        assert [m.message_id for m in got if m.headers["x-person"] == person] == want


def test_message_without_its_ordering_key_is_quarantined(names: Names, node_config: NodeFactory, amqp: Amqp,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    dst = names.q("dst")
    cfg = node_config({names.route("r"): route(names, sink_queue=dst, ordering={"header": "x-person"})})
    with running(cfg):
        [keyless] = amqp.publish(src(names), [b"no key"])
        [keyed] = amqp.publish(src(names), [b"key"], headers={"x-person": "p1"})
        assert [m.message_id for m in amqp.drain(dst, expect=1)] == [keyed]
        assert main(["quarantine", "list", str(cfg), "--json"]) == 0
        reasons = {row["id"]: row["reason"] for row in json.loads(capsys.readouterr().out)}
        assert reasons[keyless] == "order-key-missing"
    _purge_set_aside(amqp, keyless)


def test_status_shows_routes_links_depth_and_exit_codes(names: Names, node_config: NodeFactory, amqp: Amqp,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    r = names.route("r")
    cfg = node_config({r: route(names, sink_queue=names.q("dst"), seed="jimu:1-⑥")})
    assert main(["status", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "daemon NOT running" in out
    with running(cfg):
        assert main(["status", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "daemon running" in out and "link local/publish" in out
        line = next(ln for ln in out.splitlines() if ln.startswith(r))
        assert "running" in line and "jimu:1-⑥" in line
        assert main(["status", str(cfg), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["routes"][0]["depth"] == 0 and info["routes"][0]["state"] == "running"


def test_send_injects_payloads_as_the_source_system_would(names: Names, node_config: NodeFactory, amqp: Amqp,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dst = names.q("dst")
    r = names.route("r")
    cfg = node_config({r: route(names, sink_queue=dst)})
    payload = tmp_path / "ido.bin"
    payload.write_bytes("転入届".encode("euc_jp"))
    with running(cfg):
        assert main(["send", str(cfg), "--route", r, "hello", f"@{payload}", "--correlation-id", "SHORI-0001",
                     "--header", "x-kind=test", "--repeat", "2"]) == 0
        ids = capsys.readouterr().out.split()
        got = amqp.drain(dst, expect=4)
    assert [m.message_id for m in got] == ids and len(set(ids)) == 4
    assert [m.body for m in got] == [b"hello", b"hello", "転入届".encode("euc_jp"), "転入届".encode("euc_jp")]
    assert all(m.properties.correlation_id == "SHORI-0001" and m.headers["x-kind"] == "test" for m in got)
    assert main(["send", str(cfg), "--route", "nope", "x"]) == 66
    assert main(["send", str(cfg), "--route", r, "--header", "novalue", "x"]) == 64


def test_sigterm_drains_and_exits_zero_with_nothing_lost(names: Names, node_config: NodeFactory, amqp: Amqp) -> None:
    dst = names.q("dst")
    cfg = node_config({names.route("r"): route(names, sink_queue=dst)})
    with running(cfg):
        pass  # declares the topology
    ids = amqp.publish(src(names), [b"x" * 512] * 3000)
    proc = JgwProcess(cfg).start()
    wait_for(lambda: (amqp.depth(dst) or 0) > 200, what="some delivered")
    assert proc.stop() == 0
    assert "draining" in proc.log()
    with running(cfg):
        got = amqp.drain(dst, expect=len(ids), timeout=60)
    counts = Counter(m.message_id for m in got)
    assert set(counts) == set(ids), "nothing lost"
    assert all(n == 1 for n in counts.values()), "a drained stop leaves no duplicate"


def _dlq(cfg: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["dlq", "list", str(cfg), "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def _purge_set_aside(amqp: Amqp, *ids: str) -> None:
    purge_set_aside(amqp.url, ids)


def test_an_upgrade_keeps_an_ordered_queue_and_single_active_is_explained(names: Names, node_config: NodeFactory,
                                                                           amqp: Amqp) -> None:
    """An upgrade: the ordered route's source queue exists, declared as before (no single-active
    argument), with a message waiting. By default ('one') jgw takes the queue as it is and delivers
    the message. Configured for standby instances ('single-active'), RabbitMQ refuses the changed
    declaration; status and log say what to do about it, and the message stays in the queue."""
    r = names.route("ordered")
    ordered = route(names, ordering={"header": "x-person"}, sink_queue=f"{names.prefix}.dst")
    cfg = node_config({r: ordered})
    amqp.declare_source(cfg, r)  # as the version before declared it
    first = amqp.publish(src(names), [b"from before the upgrade"], headers={"x-person": "p1"})
    with JgwProcess(cfg):
        assert [m.message_id for m in amqp.drain(f"{names.prefix}.dst", expect=1, timeout=30)] == first

    waiting = amqp.publish(src(names), [b"waiting"], headers={"x-person": "p1"})
    cfg = node_config({r: {**ordered, "consumers": "single-active"}})
    proc = JgwProcess(cfg).start(wait=False)
    try:
        def problem() -> str:
            with contextlib.suppress(Exception):
                for rt in proc.status()["routes"]:
                    if rt["route"] == r and "inequivalent arg" in json.dumps(rt, ensure_ascii=False):
                        return json.dumps(rt, ensure_ascii=False)
            return ""

        try:
            said = wait_for(problem, timeout=30, what="the route's problem in status")
        except TimeoutError:
            raise AssertionError(f"{proc.status()}\n{proc.log()}") from None
        assert "x-single-active-consumer" in said and "let it drain, delete it" in said
        assert "let it drain, delete it" in proc.log()
    finally:
        proc.stop()
    assert [m.message_id for m in amqp.drain(src(names), expect=1, timeout=10)] == waiting
