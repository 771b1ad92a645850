"""Scale-out benchmark: what a 3-node cluster and the replicated dedup state cost a route.

Forms a real 3-node RabbitMQ cluster of private nodes on this host (``tests.lab.rabbitnode.Cluster``),
then for each contender fills the route's source queue with N persistent 1 KiB messages over 20
ordering keys, starts the jgw instances and times the drain into the sink queue (first message at
the sink to the last), in turn, for several rounds:

  ordered-replicated  ordered route, replicas 3, single-active, delivered ids in the stream (the
                      scale-out default), one active instance and one standby
  ordered-local       the same route with ``replicate = false`` (dedup state local only)
  shared-2            an unordered route consumed by two instances at once

    python ops/bench/cluster.py [-n 20000] [--rounds 2]

Not a test: shared, noisy machines; compare rates within one run only. Audit off (as jgw-plain in
ops/bench/relay.py) so the cluster's cost shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pika  # noqa: E402

from tests.cluster.site import HEADER, KEYS, route_table, write_instance  # noqa: E402
from tests.lab.harness import JgwProcess, unique  # noqa: E402
from tests.lab.rabbitnode import Cluster  # noqa: E402

CONTENDERS = ("ordered-replicated", "ordered-local", "shared-2")


def fill(url: str, queue: str, n: int) -> None:
    """Publish without confirms (one by one they are slow on a cluster), then wait for the count."""
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    body = b"x" * 1024
    for i in range(n):
        ch.basic_publish("", queue, body, pika.BasicProperties(message_id=f"{queue}.{i}", delivery_mode=2,
                                                                 headers={HEADER: f"p{i % KEYS}"}))
    deadline = time.monotonic() + 300
    while ch.queue_declare(queue, passive=True).method.message_count < n and time.monotonic() < deadline:
        conn.process_data_events(0.5)
    conn.close()


def drain_rate(url: str, queue: str, n: int, timeout: float = 600.0) -> float:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    got, first, last = 0, 0.0, 0.0
    deadline = time.monotonic() + timeout
    for method, _props, _body in ch.consume(queue, inactivity_timeout=1.0):
        if method is None:
            if time.monotonic() > deadline:
                break
            continue
        now = time.monotonic()
        first = first or now
        last = now
        got += 1
        ch.basic_ack(method.delivery_tag, multiple=True)
        if got >= n:
            break
    conn.close()
    return (got - 1) / (last - first) if got > 1 and last > first else 0.0


def run(cluster: Cluster, base: Path, contender: str, n: int) -> float:
    prefix = unique("bench")
    extra: dict[str, Any] = {"prefetch": 1000, "window": 1000}
    table = route_table(prefix, **extra)
    if contender == "ordered-local":
        table["replicate"] = False
    if contender == "shared-2":
        del table["ordering"]
        table["consumers"] = "shared"
    procs = [JgwProcess(write_instance(base / prefix, f"gw-{i}", cluster, prefix, table, rotate=i)) for i in range(2)]
    # declare the topology with the first instance, then stop it and fill the queue
    procs[0].start()
    procs[0].stop()
    fill(cluster.urls[0], f"{prefix}.src", n)
    for p in procs:
        p.start(wait=False)
    try:
        return drain_rate(cluster.urls[2], f"{prefix}.dst", n)
    finally:
        for p in procs:
            p.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jgw-bench-cluster-") as tmp:
        cluster = Cluster(Path(tmp) / "nodes").start()
        try:
            rates: dict[str, list[float]] = {c: [] for c in CONTENDERS}
            for r in range(args.rounds):
                for c in CONTENDERS:
                    rate = run(cluster, Path(tmp), c, args.n)
                    rates[c].append(rate)
                    print(f"round {r + 1} {c:<20} {rate:8.0f} msg/s", flush=True)
            for c in CONTENDERS:
                print(f"median {c:<20} {statistics.median(rates[c]):8.0f} msg/s")
        finally:
            cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
