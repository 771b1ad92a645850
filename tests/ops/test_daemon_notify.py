"""``jgw run`` under a real notify socket, as systemd runs it (Type=notify, WatchdogSec=, ExecReload=).

Each test starts a real ``jgw run CONFIG`` child with ``$NOTIFY_SOCKET`` naming a real AF_UNIX
datagram socket (the path form and the abstract ``@`` form), ``$WATCHDOG_USEC`` = 2 s and
``$WATCHDOG_PID`` = the child's pid, relaying a sealed route on the machine's RabbitMQ (dev PKI from
``init_dev`` in a temporary directory). What systemd would see is read from the socket, with the
sender's pid from the kernel (``NotifyAccess=main`` accepts only the main pid); what the users see is
read from the brokers: every message id sent arrives, exactly once.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki.devinit import DevPki, init_dev, stage_generation
from gateway.pki.layout import CertsDir
from gateway.route.runner import STALL_SECONDS
from tests.lab.harness import Amqp, Names, NodeFactory
from tests.ops.daemon import (
    Daemon,
    NotifyRecorder,
    Publisher,
    freeze_helpers_keeping_loop_alive,
    has,
    log_lines,
)
from tests.ops.notify_socket import NotifySocket

REPO = Path(__file__).resolve().parents[2]
WATCHDOG_USEC = 2_000_000  # WatchdogSec=2s: jgw must ping every second while it makes progress
WATCHDOG_SEC = WATCHDOG_USEC / 1e6


@pytest.fixture
def pki(tmp_path: Path) -> DevPki:
    return init_dev(tmp_path / "pki", ["cityhall", "datacenter"], dt.datetime.now(dt.UTC))


def sealed_route(names: Names) -> dict[str, object]:
    """住基 → data centre, sealed to ``datacenter``; jgw declares the source and the sink queue."""
    return {"personal_number": "allowed",
            "source": {"broker": "local", "queue": f"{names.prefix}.src"},
            "sink": {"broker": "local", "exchange": names.x("out"), "exchange_type": "direct",
                     "routing_key": "ido", "queue": names.q("dst")},
            "seal": {"recipients": ["datacenter"]}}


def start(cfg: Path, sock: NotifySocket, tmp: Path) -> tuple[Daemon, NotifyRecorder]:
    recorder = NotifyRecorder(sock)
    daemon = Daemon(cfg, tmp / "jgw.log", notify=sock.env_value, watchdog_usec=WATCHDOG_USEC,
                    control_socket=cfg.parent / "state" / "control.sock")
    return daemon, recorder


@pytest.fixture
def recorders() -> Iterator[list[NotifyRecorder]]:
    made: list[NotifyRecorder] = []
    yield made
    for r in made:
        r.close()


def exec_reload(cfg: Path) -> list[str]:
    """The ExecReload= line of systemd/jgw.service, for this venv's jgw and this config."""
    unit = (REPO / "systemd" / "jgw.service").read_text()
    line = next(x for x in unit.splitlines() if x.startswith("ExecReload="))
    words = shlex.split(line.removeprefix("ExecReload="))
    assert words[0] == "/opt/jgw/venv/bin/jgw" and words[-1] == "/etc/jgw/jgw.toml", words
    return [str(Path(sys.executable).parent / "jgw"), *words[1:-1], str(cfg)]


def exactly_once(sent: list[str], got: list[str]) -> None:
    counts = Counter(got)
    lost = set(sent) - set(counts)
    assert not lost, f"{len(lost)} of {len(sent)} messages lost"
    assert set(counts) == set(sent), f"unknown ids arrived: {set(counts) - set(sent)}"
    assert max(counts.values()) == 1, f"duplicates: {[m for m, n in counts.items() if n > 1][:5]}"


def test_ready_watchdog_reload_and_stop_as_systemd_sees_them(
        tmp_path: Path, names: Names, node_config: NodeFactory, amqp: Amqp, main_broker: str,
        pki: DevPki, recorders: list[NotifyRecorder]) -> None:
    """READY only once the route's queues exist; WATCHDOG=1 every WatchdogSec/2 while messages flow;
    none while the process is frozen (SIGSTOP) and not on the first wake-up after it either;
    RELOADING=1 then READY=1 when `jgw certs rotate` sends SIGHUP, with traffic flowing and no message
    lost; the unit's ExecReload= command exits 0 after a reload and 1 after a refused one; STOPPING=1 on
    SIGTERM, then exit 0 once in-flight messages are settled. Filesystem socket path."""
    route = names.route("ido")
    cfg = node_config({route: sealed_route(names)}, node_id="cityhall", certs_dir=str(pki.nodes["cityhall"]))
    src, dst = f"{names.prefix}.src", f"{names.prefix}.dst"
    assert amqp.depth(src) is None and amqp.depth(dst) is None, "jgw, not the test, declares the topology"

    sock = NotifySocket(tmp_path)
    daemon, rec = start(cfg, sock, tmp_path)
    recorders.append(rec)
    try:
        ready = rec.wait_for(has("READY"), timeout=60, what="READY=1")
        # checked the moment READY=1 is read: the route's topology is in place, the route runs
        assert amqp.depth(src) == 0 and amqp.depth(dst) == 0
        assert ready.fields["STATUS"] == "1/1 routes running"
        assert daemon.status()["routes"][0]["state"] == "running"
        assert {n.datagram.pid for n in rec.snapshot()} == {daemon.pid}, "every datagram from the main pid"

        # traffic flows: a ping at least every WatchdogSec/2 (+ scheduling slack), never a gap of WatchdogSec
        publisher = Publisher(main_broker, src, batch=2).start()
        t0 = time.monotonic()
        time.sleep(3.0)
        t1 = time.monotonic()
        pings = rec.watchdog_times(since=t0, until=t1)
        assert len(pings) >= 2, pings
        marks = [t0, *pings, t1]
        gaps = [b - a for a, b in itertools.pairwise(marks)]
        assert max(gaps) < WATCHDOG_SEC, f"gap of {max(gaps):.2f}s between pings: systemd would kill jgw"

        # the process frozen (SIGSTOP: nothing of it runs, not even the watchdog task) for 1.5 WatchdogSec
        daemon.signal(signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(1.5 * WATCHDOG_SEC)
        resumed = time.monotonic()
        daemon.signal(signal.SIGCONT)
        assert rec.watchdog_times(since=stopped + 0.05, until=resumed) == []
        # the first tick after the pause sees its loop woke late and does not vouch for it
        first = rec.wait_for(has("WATCHDOG"), since=resumed, timeout=10, what="WATCHDOG=1 after SIGCONT")
        assert first.at - resumed >= 0.5 * WATCHDOG_SEC / 2, "pinged at once after a frozen loop"
        assert "woke" in daemon.log() and "late (blocked)" in daemon.log()

        # a certificate rotation with messages flowing: the dev CA issues a new generation into
        # staging, `jgw certs rotate` makes it live and sends SIGHUP; RELOADING=1, then READY=1
        stage_generation(CertsDir(pki.nodes["cityhall"]).staging, "cityhall", pki.ca, dt.datetime.now(dt.UTC))
        hup = time.monotonic()
        rotate = subprocess.run([sys.executable, "-m", "gateway.cli", "certs", "rotate", str(cfg)],
                                capture_output=True, text=True, timeout=60)
        assert rotate.returncode == 0, rotate.stdout + rotate.stderr
        reloading = rec.wait_for(has("RELOADING"), since=hup, timeout=30, what="RELOADING=1")
        reloaded = rec.wait_for(has("READY"), since=reloading.at, timeout=60, what="READY=1 after the reload")
        assert reloading.fields["STATUS"] == "reloading certificates"
        assert reloaded.fields["STATUS"] == "1/1 routes running"
        assert "generation=gen-0002" in "".join(log_lines(daemon.log(), "reload done"))
        time.sleep(1.0)
        assert rec.watchdog_times(since=reloaded.at), "pings go on after the reload"

        # `systemctl reload jgw` runs the unit's ExecReload= line: it waits for the daemon's answer
        reload_cmd = exec_reload(cfg)
        again = time.monotonic()
        done = subprocess.run(reload_cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "reloaded: generation gen-0002" in done.stdout, done.stdout + done.stderr
        rec.wait_for(has("READY"), since=rec.wait_for(has("RELOADING"), since=again, timeout=5).at, timeout=5)
        # … and fails when the daemon refuses the material: a key readable by others
        key = CertsDir(pki.nodes["cityhall"]).live_dir() / "signing.key"
        key.chmod(0o644)
        try:
            refused_at = time.monotonic()
            done = subprocess.run(reload_cmd, capture_output=True, text=True, timeout=60)
        finally:
            key.chmod(0o600)
        assert done.returncode == 1 and "reload refused" in done.stdout, done.stdout + done.stderr
        answer = rec.wait_for(has("READY"), since=refused_at, timeout=5, what="READY=1 after a refused reload")
        assert answer.fields["STATUS"].startswith("reload FAILED"), answer.fields

        # SIGTERM while messages keep coming: STOPPING=1, the drain settles what jgw took, exit 0
        term = time.monotonic()
        daemon.signal(signal.SIGTERM)
        rc = daemon.wait(60)
        ended = time.monotonic()
        sent = publisher.stop()
        stopping = rec.wait_for(has("STOPPING"), since=term, timeout=5, what="STOPPING=1")
        assert rc == 0, daemon.log()[-3000:]
        assert stopping.fields["STATUS"] == "draining in-flight messages"
        assert ended - term < 20, "the drain is bounded by node.shutdown_grace"
        assert "stopped with messages still unsettled" not in daemon.log()
        delivered = [m.message_id for m in amqp.drain(dst, timeout=30, idle=0.5)]
        left = [m.message_id for m in amqp.drain(src, timeout=30, idle=0.5)]
        exactly_once(sent, delivered + left)  # across the reload and the stop: nothing lost, nothing twice
        assert len(delivered) > 100
        assert "jgw_redacted" not in daemon.log()
    finally:
        daemon.stop()


@pytest.mark.slow
def test_watchdog_goes_silent_when_a_routes_worker_stalls_and_resumes_after(
        tmp_path: Path, names: Names, node_config: NodeFactory, amqp: Amqp, main_broker: str,
        pki: DevPki, recorders: list[NotifyRecorder]) -> None:
    """A worker that stops making progress while the event loop runs: no WATCHDOG=1, so systemd would
    restart jgw; once the worker moves again, pings resume and every message arrives. Abstract socket.

    How the worker is stalled from outside: every thread of the daemon except the event loop's is
    stopped with ptrace(2) (``ThreadFreezer``) — the stage thread that seals, the commit thread —
    as a hung crypto call or a dead disk would stop them. The route's worker hands each batch to the
    stage thread and waits, so deliveries pile up unprocessed while the loop still answers ``jgw
    status`` and the watchdog task still runs and decides. The relay calls a worker stalled once
    messages have waited ``STALL_SECONDS`` (30 s) with no batch taken; from then on no ping.
    """
    route = names.route("ido")
    cfg = node_config({route: sealed_route(names)}, node_id="cityhall", certs_dir=str(pki.nodes["cityhall"]))
    src, dst = f"{names.prefix}.src", f"{names.prefix}.dst"
    sock = NotifySocket(abstract=True)
    assert sock.env_value.startswith("@")
    daemon, rec = start(cfg, sock, tmp_path)
    recorders.append(rec)
    freezer = None
    try:
        rec.wait_for(has("READY"), timeout=60, what="READY=1")
        warm = amqp.publish(src, [b"warm-up"] * 20)  # the stage thread exists and is idle again after
        exactly_once(warm, [m.message_id for m in amqp.drain(dst, expect=len(warm), timeout=30)])
        time.sleep(0.5)

        freezer = freeze_helpers_keeping_loop_alive(daemon)
        frozen_at = time.monotonic()
        publisher = Publisher(main_broker, src, batch=2, pause=0.5).start()
        stall_logged = None
        while time.monotonic() - frozen_at < STALL_SECONDS + 15:
            daemon.status()  # the event loop answers throughout
            if "relay reports no recent progress" in daemon.log():
                stall_logged = time.monotonic()
                break
            time.sleep(0.5)
        assert stall_logged is not None, "the watchdog never declared the stall"
        assert stall_logged - frozen_at >= STALL_SECONDS - 1, "declared stalled before STALL_SECONDS"
        assert "late (blocked)" not in daemon.log(), "the loop itself was blocked: not the case under test"
        # until then a slow batch is given the benefit of the doubt: pings went on
        assert rec.watchdog_times(since=frozen_at, until=frozen_at + STALL_SECONDS - 2)
        # from then on: silence for twice WatchdogSec, the loop alive, messages held and unprocessed
        time.sleep(2 * WATCHDOG_SEC)
        route_now = daemon.status()["routes"][0]
        assert route_now["in_flight"] > 0 and amqp.depth(dst) == 0, route_now
        assert route_now["state"] == "stalled", route_now  # what jgw status shows staff
        last_ping = max(rec.watchdog_times(since=frozen_at))
        assert time.monotonic() - last_ping >= 2 * WATCHDOG_SEC, "still pinging while stalled"

        freezer.thaw()
        thawed = time.monotonic()
        rec.wait_for(has("WATCHDOG"), since=thawed, timeout=3 * WATCHDOG_SEC, what="a ping after the thaw")
        sent = publisher.stop()
        exactly_once(sent, [m.message_id for m in amqp.drain(dst, expect=len(sent), timeout=60)])
        assert "progress resumed; pinging systemd again" in daemon.log()
        assert daemon.status()["routes"][0]["state"] == "running"
        assert daemon.stop() == 0
    finally:
        if freezer is not None:
            freezer.thaw()
        daemon.stop()
