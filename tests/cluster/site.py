"""A site on a real 3-node cluster for the failover tests: jgw instances, a load that never stops,
a sink reader that counts every id.

``Load`` publishes ``<queue>.k<key>-<seq>`` ids with confirm to the route's source queue, round-robin over
``KEYS`` ordering keys, reconnecting to any live node (an unconfirmed message is published again:
the same id, which jgw's dedup suppresses). ``SinkReader`` consumes the sink queue from any live
node and records every delivery; a message the broker redelivers to the reader (its ack was lost
with a node) is not a duplicate of jgw's. ``Tally`` gives lost, duplicates and per-key order.

Security: test use only.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
from pika.exceptions import AMQPError

from tests.lab.harness import JgwProcess, render_config, wait_for
from tests.lab.rabbitnode import Cluster

KEYS = 20
HEADER = "x-person"
HEARTBEAT = 2  # seconds: the broker gives a hung instance's deliveries away after about 2 of them


def route_table(prefix: str, **extra: Any) -> dict[str, Any]:
    return {"personal_number": "allowed", "prefetch": 50, "window": 50, "replicas": 3,
            "ordering": {"header": HEADER}, "consumers": "single-active",
            "source": {"broker": "site", "queue": f"{prefix}.src"},
            "sink": {"broker": "site", "exchange": "", "routing_key": f"{prefix}.dst", "queue": f"{prefix}.dst"},
            **extra}


def write_instance(base: Path, name: str, cluster: Cluster, route: str, table: dict[str, Any],
                   rotate: int = 0, metrics_port: int | None = None, urls: list[str] | None = None) -> Path:
    """One instance's config: its own node id and state dir, every node's URL (each instance starts
    on a different node, as a site would spread them)."""
    d = base / name
    d.mkdir(parents=True, exist_ok=True)
    urls = urls or cluster.urls[rotate:] + cluster.urls[:rotate]
    mgmt = cluster.management_urls[rotate:] + cluster.management_urls[:rotate]
    node: dict[str, Any] = {"id": name, "state_dir": str(d / "state"), "shutdown_grace": "5s"}
    if metrics_port is not None:
        node["metrics_listen"] = f"127.0.0.1:{metrics_port}"
    text = render_config(node,
                         {"site": {"urls": urls, "management_urls": mgmt, "heartbeat": HEARTBEAT,
                                   "reconnect_min": "100ms", "reconnect_max": "1s", "connect_timeout": "2s"}},
                         {route: table}, tables={"audit": {"enabled": False}})
    path = d / "jgw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def connect_any(urls: list[str]) -> pika.BlockingConnection:
    last: Exception | None = None
    for url in urls:
        try:
            params = pika.URLParameters(url)
            params.socket_timeout = 2
            params.blocked_connection_timeout = 10
            return pika.BlockingConnection(params)
        except (AMQPError, OSError) as exc:
            last = exc
    raise ConnectionError(f"no node answered: {last}")


class Load(threading.Thread):
    """Publishes continuously (``rate`` per second) until stopped; ``sent`` holds confirmed ids."""

    def __init__(self, urls: list[str], queue: str, rate: float = 200.0) -> None:
        super().__init__(name="load", daemon=True)
        self.urls = urls
        self.queue = queue
        self.rate = rate
        self.sent: list[str] = []
        self.resent = 0
        self._halt = threading.Event()
        self._seq = [0] * KEYS

    def stop(self) -> None:
        self._halt.set()
        self.join(60)

    def run(self) -> None:
        n = 0
        conn: pika.BlockingConnection | None = None
        pending: tuple[str, int, int] | None = None
        start = time.monotonic()
        while not self._halt.is_set():
            try:
                if conn is None or conn.is_closed:
                    conn = connect_any(self.urls)
                    ch = conn.channel()
                    ch.confirm_delivery()
                if pending is None:
                    key = n % KEYS
                    pending = (f"{self.queue}.k{key}-{self._seq[key]}", key, self._seq[key])
                mid, key, seq = pending
                ch.basic_publish("", self.queue, str(seq).encode(),
                                 pika.BasicProperties(message_id=mid, delivery_mode=2,
                                                      headers={HEADER: f"p{key}"}), mandatory=True)
                self.sent.append(mid)
                self._seq[key] += 1
                n += 1
                pending = None
                delay = start + n / self.rate - time.monotonic()
                if delay > 0:
                    self._halt.wait(delay)
            except (AMQPError, OSError, ConnectionError):
                if pending is not None:
                    self.resent += 1
                with contextlib.suppress(AMQPError, OSError):
                    if conn is not None:
                        conn.close()
                conn = None
                time.sleep(0.3)
        with contextlib.suppress(AMQPError, OSError):
            if conn is not None:
                conn.close()


@dataclass
class Got:
    mid: str
    at: float
    redelivered: bool


class SinkReader(threading.Thread):
    def __init__(self, urls: list[str], queue: str) -> None:
        super().__init__(name="sink-reader", daemon=True)
        self.urls = urls
        self.queue = queue
        self.got: list[Got] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)

    def ids(self) -> set[str]:
        with self._lock:
            return {g.mid for g in self.got}

    def last_at(self) -> float:
        with self._lock:
            return self.got[-1].at if self.got else 0.0

    def first_after(self, t: float) -> float | None:
        with self._lock:
            return next((g.at for g in self.got if g.at > t), None)

    def run(self) -> None:
        while not self._halt.is_set():
            conn: pika.BlockingConnection | None = None
            try:
                conn = connect_any(self.urls)
                ch = conn.channel()
                ch.basic_qos(prefetch_count=500)
                for method, props, _body in ch.consume(self.queue, inactivity_timeout=0.2):
                    if self._halt.is_set():
                        break
                    if method is None:
                        continue
                    with self._lock:
                        self.got.append(Got(props.message_id, time.monotonic(), bool(method.redelivered)))
                    ch.basic_ack(method.delivery_tag)
            except (AMQPError, OSError, ConnectionError):
                time.sleep(0.3)
            finally:
                with contextlib.suppress(AMQPError, OSError):
                    if conn is not None:
                        conn.close()


@dataclass
class Tally:
    sent: int
    received: int
    lost: list[str]
    duplicates: int
    out_of_order: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"sent={self.sent} received={self.received} lost={len(self.lost)} duplicates={self.duplicates} "
                f"out_of_order={len(self.out_of_order)}")


def tally(load: Load, reader: SinkReader) -> Tally:
    sent = set(load.sent)
    seen: set[str] = set()
    dups = 0
    last_seq: dict[str, int] = {}
    disorder = []
    for g in reader.got:
        if g.mid in seen:
            if not g.redelivered:  # the reader's own lost ack brings one back marked redelivered
                dups += 1
            continue
        seen.add(g.mid)
        key, _, seq_text = g.mid.rpartition("-")
        seq = int(seq_text)
        if seq <= last_seq.get(key, -1):
            disorder.append(g.mid)
        last_seq[key] = max(seq, last_seq.get(key, -1))
    # a message jgw has not delivered yet arrives later; a gap in a key's sequence would be a loss
    lost = sorted(sent - seen)
    return Tally(sent=len(sent), received=len(seen), lost=lost, duplicates=dups, out_of_order=disorder)


def settle(load: Load, reader: SinkReader, timeout: float = 90.0) -> Tally:
    """Stop the load and wait until every confirmed id reached the sink (or the timeout)."""
    load.stop()
    wait_for(lambda: set(load.sent) <= reader.ids(), timeout=timeout, interval=0.2, what="every id at the sink")
    time.sleep(1.0)  # a late duplicate would show now
    return tally(load, reader)


def role(proc: JgwProcess, route: str) -> str:
    try:
        st = proc.status()
    except Exception:
        return "down"
    r = next(r for r in st["routes"] if r["route"] == route)
    return str(r["role"])


def route_status(proc: JgwProcess, route: str) -> dict[str, Any]:
    st = proc.status()
    found: dict[str, Any] = next(r for r in st["routes"] if r["route"] == route)
    return found
