"""Relay benchmark: jgw against RabbitMQ's own Shovel, same broker, same queues, same run.

Starts a private RabbitMQ node with the shovel plugin and two vhosts (site-a, site-b). For each
contender it fills a quorum source queue in site-a with N persistent 1 KiB messages, starts the
relay, and times the drain into a quorum queue in site-b: from the first message seen at the
destination to the last (both contenders measured the same way). Prints messages/s for each and,
last, the ratio jgw/shovel. Also samples jgw's resident memory while it drains.

    python ops/bench/relay.py [-n 50000] [--variant plain|dedup|...]

Not a test: these machines are shared and noisy, so only ratios within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.testing.harness import render_config  # noqa: E402
from gateway.testing.rabbitnode import PrivateNode  # noqa: E402

BODY = b"x" * 1024


def fill(url: str, queue: str, n: int) -> float:
    """Publish n persistent messages with publisher confirms (pipelined in windows of 1000)."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.queue_declare(queue, durable=True, arguments=source_args())
    started = time.monotonic()
    for _ in range(n):
        ch.basic_publish("", queue, BODY, pika.BasicProperties(message_id=uuid.uuid4().hex, delivery_mode=2))
    conn.process_data_events(0)
    # make sure the broker has them all before the clock of the relay starts
    while ch.queue_declare(queue, passive=True).method.message_count < n:
        time.sleep(0.05)
    conn.close()
    return time.monotonic() - started


def source_args() -> dict[str, object]:
    # the same arguments jgw declares (gateway.topology.source_topology), so both contenders read the same queue
    return {"x-queue-type": "quorum", "x-delivery-limit": 20, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "jgw.dead-letter", "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish"}


def time_drain(url: str, queue: str, n: int, timeout: float = 600.0,
               sample: Callable[[], None] | None = None) -> float:
    """Seconds from the first message at ``queue`` until all n are there (the rate excludes start-up)."""
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


def reset(node: PrivateNode, url_b: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url_b))
    ch = conn.channel()
    ch.queue_delete(queue)
    ch.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    conn.close()


def run_shovel(node: PrivateNode, url_a: str, url_b: str, n: int) -> float:
    reset(node, url_b, "bench.dst")
    fill(url_a, "bench.shovel.src", n)
    value = json.dumps({"src-protocol": "amqp091", "src-uri": url_a, "src-queue": "bench.shovel.src",
                        "dest-protocol": "amqp091", "dest-uri": url_b, "dest-queue": "bench.dst",
                        "ack-mode": "on-confirm", "src-prefetch-count": 1000,
                        "src-delete-after": "never"})
    node.ctl("set_parameter", "-p", "site-a", "shovel", "bench", value)
    try:
        return time_drain(url_b, "bench.dst", n)
    finally:
        node.ctl("clear_parameter", "-p", "site-a", "shovel", "bench")


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_jgw(node: PrivateNode, url_a: str, url_b: str, n: int, workdir: Path, variant: str) -> tuple[float, int]:
    reset(node, url_b, "bench.dst")
    fill(url_a, "bench.jgw.src", n)
    route: dict[str, object] = {"personal_number": "allowed", "source": {"broker": "a", "queue": "bench.jgw.src"},
                                "sink": {"broker": "b", "exchange": "", "routing_key": "bench.dst"},
                                "dedup": variant == "dedup"}
    text = render_config({"id": "bench", "state_dir": str(workdir / f"state-{variant}")},
                         {"a": {"urls": [url_a]}, "b": {"urls": [url_b]}}, {"relay": route})
    cfg = workdir / f"bench-{variant}.toml"
    cfg.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(cfg), "--log-level", "warning"],
                            cwd=ROOT)
    peak = [0]

    def sample() -> None:
        peak[0] = max(peak[0], rss_kib(proc.pid))

    try:
        rate = time_drain(url_b, "bench.dst", n, sample=sample)
    finally:
        proc.terminate()
        proc.wait(60)
    return rate, peak[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50000, help="messages per contender (default 50000)")
    ap.add_argument("--variant", choices=("plain", "dedup"), default="plain",
                    help="jgw route variant: plain relay, or with its persistent dedup store")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jgw-bench-") as tmp:
        work = Path(tmp)
        node = PrivateNode(base=work, plugins=("rabbitmq_shovel",)).start()
        try:
            for vhost in ("site-a", "site-b"):
                node.add_vhost(vhost)
            url_a = f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/site-a"
            url_b = f"amqp://guest:guest@127.0.0.1:{node.amqp_port}/site-b"
            print(f"machine: {os.cpu_count()} cpus, {time.strftime('%Y-%m-%d')}; n={args.n} x 1 KiB persistent,"
                  f" quorum queues, one private RabbitMQ node", flush=True)
            shovel = run_shovel(node, url_a, url_b, args.n)
            print(f"shovel (ack-mode on-confirm): {shovel:9.0f} msg/s", flush=True)
            jgw, peak = run_jgw(node, url_a, url_b, args.n, work, args.variant)
            print(f"jgw ({args.variant}):{'':>17} {jgw:9.0f} msg/s   peak RSS {peak / 1024:.0f} MiB", flush=True)
            print(f"ratio jgw/shovel: {jgw / shovel:.2f}")
        finally:
            node.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
