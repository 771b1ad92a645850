"""Helpers to run real ``jgw`` processes against real brokers: for the tests, the demo and benches.

``JgwProcess`` runs ``jgw run CONFIG`` as a child process (so a test can SIGKILL it), waits until
its control socket says every route is running, and stops it with SIGTERM. ``Amqp`` is a small
blocking client to publish numbered messages and read back what reached a queue.

Security: test and development use only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, ChannelClosedByBroker

from gateway.errors import UnavailableError
from gateway.ids import spell
from gateway.message import H_SENT_AT
from gateway.service import control

MAIN_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def business_message_id() -> str:
    """An id as a business system might set it, 32 characters like a uuid's hex, but in letters: a
    uuid's hex holds a 12-digit run with a valid 個人番号 check digit about once in 830 ids, and the
    policy rightly quarantines such a message on a route that forbids the number (a test that
    wants that passes its ids)."""
    return spell(os.urandom(16))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def render_tables(prefix: str, table: dict[str, Any]) -> list[str]:
    """``[prefix]`` with its scalars, then each sub-table as ``[prefix.key]`` (recursively)."""
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    subs = {k: v for k, v in table.items() if isinstance(v, dict)}
    lines = ["", f"[{prefix}]"] + [f"{k} = {toml_value(v)}" for k, v in scalars.items()] if scalars or not subs else []
    for k, v in subs.items():
        lines += render_tables(f"{prefix}.{k}", v)
    return lines


def render_config(node: dict[str, Any], brokers: dict[str, dict[str, Any]], routes: dict[str, dict[str, Any]],
                  defaults: dict[str, Any] | None = None, tables: dict[str, dict[str, Any]] | None = None) -> str:
    """TOML text for a node config (tables written out explicitly, so tests read like the docs).
    ``tables``: other top-level tables, such as ``sftp`` (its servers) and ``endpoint``."""
    lines = ["[node]"] + [f"{k} = {toml_value(v)}" for k, v in node.items()]
    for name, b in brokers.items():
        lines += ["", f"[brokers.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in b.items()]
    if defaults:
        lines += ["", "[defaults]"] + [f"{k} = {toml_value(v)}" for k, v in defaults.items()]
    for name, table in (tables or {}).items():
        lines += render_tables(name, table)
    for name, r in routes.items():
        lines += ["", f"[routes.{name}]"]
        tables = {k: v for k, v in r.items() if isinstance(v, dict) and k not in ("ordering",)}
        lines += [f"{k} = {toml_value(v)}" for k, v in r.items() if k not in tables]
        for tname, table in tables.items():
            lines += [f"[routes.{name}.{tname}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


class JgwProcess:
    """A ``jgw run`` child process."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.control_socket = self._control_socket()

    def _control_socket(self) -> Path:
        from gateway import config as config_mod
        return config_mod.load(self.config).node.control_socket

    def start(self, wait: bool = True, timeout: float = 60.0) -> JgwProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        if wait:
            self.wait_running(timeout)
        return self

    def status(self) -> dict[str, Any]:
        return control.request(self.control_socket, "status", timeout=5)

    def wait_running(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"jgw exited with {self.proc.returncode}:\n{self.log()}")
            try:
                last = self.status()
                if all(r["state"] == "running" for r in last["routes"]):
                    answer: dict[str, Any] = last
                    return answer
            except UnavailableError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"jgw routes not running after {timeout}s: {last}\n{self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-20000:]
        return ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> JgwProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Names:
    """Unique queue and exchange names for one test, deleted afterwards."""

    def __init__(self) -> None:
        self.prefix = unique("jt")
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.configs: list[Path] = []

    def q(self, name: str) -> str:
        full = f"{self.prefix}.{name}"
        self.queues.append(full)
        return full

    def x(self, name: str) -> str:
        full = f"{self.prefix}.{name}"
        self.exchanges.append(full)
        return full

    def route(self, name: str) -> str:
        """A route name; its retry-tier queues are cleaned up too."""
        return f"{self.prefix.lower()}-{name}"


NodeFactory = Callable[..., Path]


@dataclass
class Received:
    message_id: str
    body: bytes
    headers: dict[str, Any]
    properties: pika.BasicProperties


class Amqp:
    """A blocking client for test set-up and checks."""

    def __init__(self, url: str = MAIN_URL) -> None:
        self.url = url
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()

    def close(self) -> None:
        with contextlib.suppress(AMQPError, OSError):
            self.conn.close()

    def __enter__(self) -> Amqp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _channel(self) -> BlockingChannel:
        if self.ch.is_closed:
            self.ch = self.conn.channel()
        return self.ch

    def declare_queue(self, name: str, quorum: bool = True) -> None:
        args = {"x-queue-type": "quorum"} if quorum else {}
        self._channel().queue_declare(name, durable=True, arguments=args)

    def declare_exchange(self, name: str, type: str = "direct") -> None:
        self._channel().exchange_declare(name, exchange_type=type, durable=True)

    def bind(self, queue: str, exchange: str, key: str) -> None:
        self._channel().queue_bind(queue, exchange, key)

    def declare_source(self, config: Path, route: str) -> None:
        """Declare a route's source-side topology exactly as jgw would, without running jgw."""
        from gateway import config as config_mod
        from gateway.amqp.topology import source_topology

        topo = source_topology(config_mod.load(config).routes[route])
        ch = self._channel()
        for ex in topo.exchanges:
            ch.exchange_declare(ex.name, exchange_type=ex.type or "direct", durable=True)
        for q in topo.queues:
            ch.queue_declare(q.name, durable=True, arguments=q.arguments)
            for exchange, key in q.bindings:
                ch.queue_bind(q.name, exchange, key)

    def depth(self, queue: str) -> int | None:
        try:
            return int(self._channel().queue_declare(queue, passive=True).method.message_count)
        except ChannelClosedByBroker:
            return None

    def publish(self, queue: str, bodies: Iterable[bytes], *, ids: Iterable[str] | None = None,
                headers: dict[str, Any] | None = None, exchange: str = "") -> list[str]:
        ch = self.conn.channel()
        ch.confirm_delivery()
        out = []
        id_iter = iter(ids) if ids is not None else None
        for body in bodies:
            mid = next(id_iter) if id_iter is not None else business_message_id()
            props = pika.BasicProperties(message_id=mid, delivery_mode=2,
                                         headers={**(headers or {}), H_SENT_AT: int(time.time() * 1000)})
            ch.basic_publish(exchange, queue, body, props, mandatory=True)
            out.append(mid)
        ch.close()
        return out

    def drain(self, queue: str, expect: int | None = None, timeout: float = 30.0, idle: float = 1.0
              ) -> list[Received]:
        """Consume (and ack) everything from ``queue``; stop when ``expect`` were read and the queue has
        been empty for ``idle`` seconds, or (without ``expect``) when it has been empty that long, or
        ``timeout`` passed. Survives the broker restarting under it: a message whose ack was lost
        comes back marked redelivered and is not counted twice (a real duplicate is a new delivery)."""
        out: list[Received] = []
        seen: set[str] = set()
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        ch = self.conn.channel()
        while time.monotonic() < deadline:
            try:
                method, props, body = ch.basic_get(queue, auto_ack=False)
                if method is None:
                    if time.monotonic() - last > idle and (expect is None or len(out) >= expect):
                        break
                    self.conn.process_data_events(0.05)
                    continue
                if not (method.redelivered and props.message_id in seen):
                    out.append(Received(props.message_id, body, dict(props.headers or {}), props))
                    seen.add(props.message_id)
                ch.basic_ack(method.delivery_tag)
                last = time.monotonic()
            except (AMQPError, OSError):
                time.sleep(0.5)
                with contextlib.suppress(AMQPError, OSError):
                    self.conn.close()
                with contextlib.suppress(AMQPError, OSError):
                    self.conn = pika.BlockingConnection(pika.URLParameters(self.url))
                    self.ch = ch = self.conn.channel()
        with contextlib.suppress(AMQPError, OSError):
            ch.close()
        return out

    def delete(self, *queues: str, exchanges: Iterable[str] = ()) -> None:
        for q in queues:
            with contextlib.suppress(AMQPError):
                self._channel().queue_delete(q)
        for e in exchanges:
            with contextlib.suppress(AMQPError):
                self._channel().exchange_delete(e)


_MISSING: Any = object()


def scrape_metric(port: int, name: str, default: Any = _MISSING, **labels: str) -> float:
    """One sample from a node's /metrics, as Prometheus would scrape it."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    if default is _MISSING:
        raise KeyError(f"{name} {labels} not exported")
    return float(default)


def purge_set_aside(url: str, ids: Iterable[str]) -> None:
    """Take a test's messages out of the shared jgw.quarantine and jgw.dead-letter queues."""
    wanted = set(ids)
    with Amqp(url) as amqp:
        ch = amqp.conn.channel()
        for queue in ("jgw.quarantine", "jgw.dead-letter"):
            keep = []
            while True:
                method, props, _ = ch.basic_get(queue)
                if method is None:
                    break
                if props.message_id in wanted:
                    ch.basic_ack(method.delivery_tag)
                else:
                    keep.append(method.delivery_tag)
            for tag in keep:
                ch.basic_nack(tag, requeue=True)


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def running(config: Path, **kw: Any) -> Iterator[JgwProcess]:
    proc = JgwProcess(config, **kw).start()
    try:
        yield proc
    finally:
        proc.stop()
