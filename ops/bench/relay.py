"""Relay benchmark: jgw against RabbitMQ's own Shovel, same broker, same queues, same run.

Starts a private RabbitMQ node with the shovel plugin and two vhosts (site-a, site-b). For each
contender it fills a quorum source queue in site-a with N persistent 1 KiB messages, starts the
relay, and times the drain into a quorum queue in site-b, from the first message seen at the
destination to the last (every contender is measured the same way). Contenders, run in turn, for
several rounds (the machine is shared and noisy; medians of alternating rounds are what count):

  shovel-1000  RabbitMQ Shovel, ack-mode on-confirm, prefetch 1000
  shovel-3000  the same with prefetch 3000 (the faster of the two is the baseline, per the issue)
  pika-min     the floor of a Python relay on pika: 40 lines (AsyncioConnection, prefetch 1000, publisher
               confirms, source acked with multiple=True after each confirm); no status, no
               retries, no dedup, no set-aside: what pika alone costs
  jgw-plain    jgw, one route, no dedup store, no audit trail (the bare hop contract)
  jgw-full     jgw as shipped: persistent dedup store and hash-chained audit trail, fsynced
               before each acknowledgement
  jgw-sealed   jgw-sealed as shipped: two jgw processes, dedup and audit on both sites, packing on
               (the default): site-a seals (ECDSA P-256 + HPKE P-256/AES-256-GCM, batch
               signatures, epoch keys, up to 64 messages an envelope) into site-b's inbound queue,
               site-b opens into the destination: end-to-end rate of the sealed path

Beside each rate: CPU time per message of the broker and of the relay (utime + stime from
/proc over the drain). The last line gives every contender's ratio to the faster Shovel.
``--backlog N`` instead fills N messages and samples jgw's resident memory once a second while
it drains them (flat memory under a backlog). ``--latency RATE`` publishes at RATE msg/s for a
while through jgw-sealed and prints end-to-end latency percentiles at the destination.

    python ops/bench/relay.py [-n 30000] [--rounds 3] [--only shovel-1000,jgw-plain]
    python ops/bench/relay.py --backlog 1000000
    python ops/bench/relay.py --latency 5000

Not a test: these machines are shared, so only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.lab.harness import render_config  # noqa: E402
from tests.lab.rabbitnode import PrivateNode  # noqa: E402

BODY = b"x" * 1024
CONTENDERS = ("shovel-1000", "shovel-3000", "pika-min", "jgw-plain", "jgw-full", "jgw-sealed")
SHOVELS = ("shovel-1000", "shovel-3000")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children, in seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICKS


def source_args() -> dict[str, object]:
    """The arguments jgw declares on a source queue (gateway.amqp.topology), so all read the same queue."""
    return {"x-queue-type": "quorum", "x-delivery-limit": 20, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "jgw.dead-letter", "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish"}


def fill(url: str, queue: str, n: int) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments=source_args())
    for i in range(n):
        ch.basic_publish("", queue, BODY, pika.BasicProperties(message_id=uuid.uuid4().hex, delivery_mode=2))
        if i % 20000 == 19999:
            conn.process_data_events(0)
    while ch.queue_declare(queue, passive=True).method.message_count < n:
        time.sleep(0.05)
    conn.close()


def reset(url: str, *queues: str, declare: bool = True) -> None:
    """Empty the destination queues (delete; re-declare plain quorum unless jgw declares them)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    for q in queues:
        ch.queue_delete(q)
        if declare:
            ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()


def time_drain(url: str, queue: str, n: int, timeout: float = 1800.0,
               sample: Callable[[], None] | None = None) -> float:
    """Messages/s from the first message at ``queue`` until all n are there (excludes start-up)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    deadline = time.monotonic() + timeout
    first_t, first_n = None, 0
    while time.monotonic() < deadline:
        count = ch.queue_declare(queue, passive=True).method.message_count
        now = time.monotonic()
        if first_t is None and count > 0:
            first_t, first_n = now, count
        if count >= n:
            conn.close()
            assert first_t is not None
            return (n - first_n) / max(now - first_t, 1e-6)
        if sample is not None:
            sample()
        time.sleep(0.02)
    conn.close()
    raise TimeoutError(f"{queue}: not all {n} messages arrived within {timeout}s")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Bench:
    def __init__(self, node: PrivateNode, work: Path, n: int) -> None:
        self.node = node
        self.work = work
        self.n = n
        self.url_a = f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/site-a"
        self.url_b = f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/site-b"
        self.round = 0
        self._pki: Any = None

    def run(self, contender: str) -> tuple[float, int, float, float]:
        """(msg/s, peak RSS KiB of the relay, broker CPU µs/msg, relay CPU µs/msg)."""
        self.round += 1
        self.relay_pids: list[int] = []
        beam = self.node.beam_pid() or 0
        self._cpu0 = cpu_seconds(beam)
        rate, peak = getattr(self, contender.replace("-", "_"))()
        return rate, peak, self._broker_us, self._relay_us

    def _measure(self, dest_url: str, dest: str, pids: list[int], sample: Callable[[], None] | None = None
                 ) -> float:
        """Time the drain; CPU of the broker and of ``pids`` over the same stretch."""
        beam = self.node.beam_pid() or 0
        started: dict[int, float] = {}

        def first() -> None:
            if not started:
                started[beam] = cpu_seconds(beam)
                for pid in pids:
                    started[pid] = cpu_seconds(pid)
            if sample is not None:
                sample()

        rate = time_drain(dest_url, dest, self.n, sample=first)
        moved = max(1, self.n)
        self._broker_us = (cpu_seconds(beam) - started.get(beam, self._cpu0)) * 1e6 / moved
        self._relay_us = sum(cpu_seconds(p) - started.get(p, 0.0) for p in pids) * 1e6 / moved
        return rate

    def _shovel(self, prefetch: int) -> tuple[float, int]:
        reset(self.url_b, "bench.dst")
        fill(self.url_a, "bench.shovel.src", self.n)
        value = json.dumps({"src-protocol": "amqp091", "src-uri": self.url_a, "src-queue": "bench.shovel.src",
                            "dest-protocol": "amqp091", "dest-uri": self.url_b, "dest-queue": "bench.dst",
                            "ack-mode": "on-confirm", "src-prefetch-count": prefetch,
                            "src-delete-after": "never"})
        self.node.ctl("set_parameter", "-p", "site-a", "shovel", "bench", value)
        try:
            return self._measure(self.url_b, "bench.dst", []), 0
        finally:
            self.node.ctl("clear_parameter", "-p", "site-a", "shovel", "bench")

    def shovel_1000(self) -> tuple[float, int]:
        return self._shovel(1000)

    def shovel_3000(self) -> tuple[float, int]:
        return self._shovel(3000)

    def _jgw(self, configs: list[Path], dest_url: str, dest: str) -> tuple[float, int]:
        procs = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(c), "--log-level", "warning"],
                                  cwd=ROOT) for c in configs]
        peak = [0]

        def sample() -> None:
            peak[0] = max(peak[0], sum(rss_kib(p.pid) for p in procs))

        try:
            return self._measure(dest_url, dest, [p.pid for p in procs], sample=sample), peak[0]
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(60)

    def _config(self, name: str, routes: dict[str, Any], *, audit: bool, node_id: str = "bench",
                certs: Path | None = None) -> Path:
        node: dict[str, Any] = {"id": node_id, "state_dir": str(self.work / f"state-{name}-{self.round}")}
        if certs is not None:
            node["certs_dir"] = str(certs)
        text = render_config(node, {"a": {"urls": [self.url_a]}, "b": {"urls": [self.url_b]}}, routes)
        if not audit:
            text += "\n[audit]\nenabled = false\n"
        path = self.work / f"{name}-{self.round}.toml"
        path.write_text(text)
        return path

    def _route(self, src: tuple[str, str], dst: tuple[str, str], **extra: Any) -> dict[str, Any]:
        return {"personal_number": "allowed", "source": {"broker": src[0], "queue": src[1]},
                "sink": {"broker": dst[0], "exchange": "", "routing_key": dst[1]}, **extra}

    def pika_min(self) -> tuple[float, int]:
        reset(self.url_b, "bench.dst")
        fill(self.url_a, "bench.jgw.src", self.n)
        proc = subprocess.Popen([sys.executable, __file__, "--pika-min-relay", self.url_a, "bench.jgw.src",
                                 self.url_b, "bench.dst"], cwd=ROOT)
        peak = [0]
        try:
            return self._measure(self.url_b, "bench.dst", [proc.pid],
                                 sample=lambda: peak.__setitem__(0, max(peak[0], rss_kib(proc.pid)))), peak[0]
        finally:
            proc.terminate()
            proc.wait(60)

    def jgw_plain(self) -> tuple[float, int]:
        reset(self.url_b, "bench.dst")
        fill(self.url_a, "bench.jgw.src", self.n)
        cfg = self._config("plain", {"relay": self._route(("a", "bench.jgw.src"), ("b", "bench.dst"), dedup=False)},
                           audit=False)
        return self._jgw([cfg], self.url_b, "bench.dst")

    def jgw_full(self) -> tuple[float, int]:
        reset(self.url_b, "bench.dst")
        fill(self.url_a, "bench.jgw.src", self.n)
        cfg = self._config("full", {"relay": self._route(("a", "bench.jgw.src"), ("b", "bench.dst"))}, audit=True)
        return self._jgw([cfg], self.url_b, "bench.dst")

    def jgw_sealed(self) -> tuple[float, int]:
        if self._pki is None:
            from gateway.pki.devinit import init_dev
            self._pki = init_dev(self.work / "pki", ["bench-a", "bench-b"], dt.datetime.now(dt.UTC))
        reset(self.url_b, "bench.dst")
        reset(self.url_b, "bench.sealed", declare=False)  # the open route's source: jgw declares it
        fill(self.url_a, "bench.jgw.src", self.n)
        a, b = self._sealed_configs()
        return self._jgw([a, b], self.url_b, "bench.dst")

    def _sealed_configs(self) -> tuple[Path, Path]:
        """The sealed pair as shipped: dedup and audit on both sites, packing at its default."""
        seal = self._route(("a", "bench.jgw.src"), ("b", "bench.sealed"),
                           seal={"recipients": ["bench-b"], "route_name": "bench", "pack": 64})
        open_ = self._route(("b", "bench.sealed"), ("b", "bench.dst"),
                            open={"senders": ["bench-a"], "routes": ["bench"]})
        a = self._config("seal", {"seal": seal}, audit=True, node_id="bench-a", certs=self._pki.nodes["bench-a"])
        b = self._config("open", {"open": open_}, audit=True, node_id="bench-b", certs=self._pki.nodes["bench-b"])
        return a, b

    def latency(self, rate: int, seconds: int) -> None:
        """Publish at ``rate`` msg/s for ``seconds`` through jgw-sealed as shipped (packing on); print
        the end-to-end latency percentiles seen at the destination."""
        import threading

        if self._pki is None:
            from gateway.pki.devinit import init_dev
            self._pki = init_dev(self.work / "pki", ["bench-a", "bench-b"], dt.datetime.now(dt.UTC))
        reset(self.url_b, "bench.dst")
        reset(self.url_b, "bench.sealed", declare=False)
        fill(self.url_a, "bench.jgw.src", 0)
        a, b = self._sealed_configs()
        procs = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(c), "--log-level", "warning"],
                                  cwd=ROOT) for c in (a, b)]
        total = rate * seconds
        got: list[float] = []
        reader = threading.Thread(target=_latency_consumer, args=(self.url_b, "bench.dst", total, got))
        try:
            time.sleep(3.0)  # both daemons up
            reader.start()
            conn = pika.BlockingConnection(pika.URLParameters(self.url_a))
            ch = conn.channel()
            started = time.monotonic()
            for i in range(total):
                due = started + i / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                ch.basic_publish("", "bench.jgw.src", BODY, pika.BasicProperties(
                    message_id=f"lat-{i}", delivery_mode=2, headers={"x-jgw-sent-ms": int(time.time() * 1000)}))
            conn.close()
            reader.join(120)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(60)
        got.sort()

        def pct(q: float) -> float:
            return got[min(len(got) - 1, int(q * len(got)))] if got else float("nan")

        print(f"jgw-sealed at {rate} msg/s for {seconds}s: {len(got)}/{total} arrived; latency ms: "
              f"p50 {pct(0.5):.1f}, p90 {pct(0.9):.1f}, p99 {pct(0.99):.1f}, max {got[-1] if got else 0:.1f}")

    def backlog(self) -> None:
        reset(self.url_b, "bench.dst")
        started = time.monotonic()
        fill(self.url_a, "bench.jgw.src", self.n)
        print(f"filled {self.n} messages in {time.monotonic() - started:.0f}s", flush=True)
        cfg = self._config("backlog", {"relay": self._route(("a", "bench.jgw.src"), ("b", "bench.dst"))},
                           audit=True)
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(cfg), "--log-level", "warning"],
                                cwd=ROOT)
        samples: list[tuple[float, int]] = []
        last = [0.0]

        def sample() -> None:
            now = time.monotonic()
            if now - last[0] >= 1.0:
                last[0] = now
                samples.append((now, rss_kib(proc.pid)))

        try:
            rate = time_drain(self.url_b, "bench.dst", self.n, timeout=7200, sample=sample)
        finally:
            proc.terminate()
            proc.wait(120)
        rss = [kib for _, kib in samples if kib]
        tenth = max(1, len(rss) // 10)
        print(f"jgw-full drained {self.n} at {rate:.0f} msg/s; RSS MiB: first {rss[0] / 1024:.0f}, "
              f"max {max(rss) / 1024:.0f}, median of first 10% {statistics.median(rss[:tenth]) / 1024:.0f}, "
              f"median of last 10% {statistics.median(rss[-tenth:]) / 1024:.0f} ({len(rss)} samples)")


def _latency_consumer(url: str, queue: str, n: int, out: list[float]) -> None:
    """Read n messages from ``queue`` and record now - x-jgw-sent-ms for each (milliseconds)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    for method, props, _body in ch.consume(queue, inactivity_timeout=60):
        if method is None:
            break
        sent = (props.headers or {}).get("x-jgw-sent-ms")
        if isinstance(sent, int):
            out.append(time.time() * 1000 - sent)
        ch.basic_ack(method.delivery_tag)
        if len(out) >= n:
            break
    conn.close()


def pika_min_relay(url_a: str, src: str, url_b: str, dst: str) -> None:
    """The reference: a minimal ack-after-confirm relay with pika's asyncio adapter."""
    import asyncio

    from pika.adapters.asyncio_connection import AsyncioConnection

    async def run() -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        from collections import deque

        state: dict[str, Any] = {"seq": 0, "tags": deque()}

        def on_pub_channel(ch: Any) -> None:
            state["pub"] = ch
            ch.confirm_delivery(on_confirm)
            state["cons_conn"] = AsyncioConnection(pika.URLParameters(url_a), on_open_callback=lambda c: c.channel(
                on_open_callback=on_cons_channel), custom_ioloop=loop)

        def on_cons_channel(ch: Any) -> None:
            state["cons"] = ch
            ch.basic_qos(prefetch_count=1000, callback=lambda _f: ch.basic_consume(src, on_message))
            ready.set_result(None)

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            state["pub"].basic_publish("", dst, body, props, mandatory=True)
            state["seq"] += 1
            state["tags"].append((state["seq"], method.delivery_tag))

        def on_confirm(frame: Any) -> None:  # in-order confirms: pop the settled prefix
            seq, tags, last = frame.method.delivery_tag, state["tags"], None
            while tags and tags[0][0] <= seq:
                last = tags.popleft()[1]
            if last is not None:
                state["cons"].basic_ack(last, multiple=True)

        AsyncioConnection(pika.URLParameters(url_b), on_open_callback=lambda c: c.channel(
            on_open_callback=on_pub_channel), custom_ioloop=loop)
        await ready
        await asyncio.Event().wait()

    asyncio.run(run())


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--pika-min-relay":
        pika_min_relay(*sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30000, help="messages per contender and round (default 30000)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    ap.add_argument("--backlog", type=int, metavar="N", help="memory under a backlog of N messages instead")
    ap.add_argument("--latency", type=int, metavar="RATE", help="end-to-end latency through jgw-sealed at RATE msg/s")
    ap.add_argument("--seconds", type=int, default=30, help="how long --latency publishes (default 30)")
    args = ap.parse_args()
    contenders = [c for c in args.only.split(",") if c]
    for c in contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c!r} (known: {', '.join(CONTENDERS)})")
    with tempfile.TemporaryDirectory(prefix="jgw-bench-") as tmp:
        work = Path(tmp)
        node = PrivateNode(base=work, plugins=("rabbitmq_shovel",)).start()
        try:
            for vhost in ("site-a", "site-b"):
                node.add_vhost(vhost)
            bench = Bench(node, work, args.backlog or args.n)
            print(f"machine: {os.cpu_count()} cpus, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}; "
                  f"1 KiB persistent messages, quorum queues, one private RabbitMQ node", flush=True)
            if args.backlog:
                bench.backlog()
                return 0
            if args.latency:
                bench.latency(args.latency, args.seconds)
                return 0
            results: dict[str, list[float]] = {c: [] for c in contenders}
            cpu: dict[str, list[tuple[float, float]]] = {c: [] for c in contenders}
            for r in range(1, args.rounds + 1):
                for c in contenders:
                    rate, peak, broker_us, relay_us = bench.run(c)
                    results[c].append(rate)
                    cpu[c].append((broker_us, relay_us))
                    mem = f"   peak RSS {peak / 1024:.0f} MiB" if peak else ""
                    relay = f", relay {relay_us:5.1f}" if relay_us else ""
                    print(f"round {r} {c:<11} {rate:9.0f} msg/s   CPU µs/msg: broker {broker_us:5.1f}{relay}{mem}",
                          flush=True)
            shovels = [statistics.median(results[c]) for c in SHOVELS if c in results]
            base = max(shovels) if shovels else None
            for c in contenders:
                med = statistics.median(results[c])
                ratio = f"  = {med / base:.2f} x shovel" if base else ""
                b_us = statistics.median(x for x, _ in cpu[c])
                r_us = statistics.median(y for _, y in cpu[c])
                relay = f", relay {r_us:5.1f}" if r_us else ""
                print(f"median  {c:<11} {med:9.0f} msg/s   CPU µs/msg: broker {b_us:5.1f}{relay}{ratio}")
            if base:
                which = max((c for c in SHOVELS if c in results), key=lambda c: statistics.median(results[c]))
                ratios = ", ".join(f"{c} {statistics.median(results[c]) / base:.2f}" for c in contenders
                                   if c not in SHOVELS)
                print(f"ratios to {which}: {ratios}")
        finally:
            node.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
