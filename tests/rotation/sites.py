"""Two real sites for the rotation tests: a city hall (市役所) and a data centre, each a real ``jgw run``.

- The city hall's store is the machine's RabbitMQ (unique names per test); the data centre's is a
  private node with a TLS listener (verify_peer, fail_if_no_peer_cert, EXTERNAL login by the
  certificate's CN), shared by the tests of a module.
- ``{p}-to-dc``: the city hall seals (signs, encrypts to the data centre) and publishes over mTLS to
  the data centre's broker; the data centre opens it (``{p}-store``) into ``{p}.store``.
- ``{p}-reply``: the data centre seals to the city hall onto its own broker; the city hall consumes
  it over mTLS and opens it (``{p}-from-dc``) into ``{p}.replies`` on its broker.

So both sites sign, both encrypt, and every city hall link to the data centre (publish and
consume) and every data centre link is TLS: rotating any key of either site is on a live path.
Staff actions go through the real ``jgw`` CLI in child processes (``jgw()`` below).

Security: test use only. Private keys are generated per test under pytest's tmp dirs (0600).
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from gateway.envelope import Envelope, parse
from tests.lab import synth
from tests.lab.harness import MAIN_URL, Amqp, JgwProcess, Received, render_config, unique
from tests.lab.rabbitnode import PrivateNode, free_port

REPO = Path(__file__).resolve().parents[2]
CITY, DC = "cityhall", "datacenter"


def jgw(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``jgw ARGS`` as staff run it, in a child process: exit code, stdout, stderr."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


def jgw_ok(*args: str | Path) -> str:
    r = jgw(*args)
    assert r.returncode == 0, f"jgw {' '.join(map(str, args))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a daemon's /metrics, keyed by (name, labels)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): float(s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    if key not in samples:
        raise KeyError(f"{name}{labels} not exported")
    return samples[key]


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, KeyError):
            value = check()
            if value:
                return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------------------------- brokers


def start_dc_broker(base: Path, pki: Path) -> PrivateNode:
    """The data centre's RabbitMQ: TLS listener with mTLS, EXTERNAL users named by each node's CN."""
    from tests.lab.rabbitnode import TlsListener

    node = PrivateNode(base=base, tls=TlsListener(cacert=pki / "broker" / "ca.pem",
                                                  cert=pki / "broker" / "server.pem",
                                                  key=pki / "broker" / "server.key"))
    try:
        node.start()
        for user in (CITY, DC):
            node.ctl("add_user", user, unique("unused-"))
            node.ctl("clear_password", user)
            node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    except BaseException:
        node.destroy()
        raise
    return node


def tls_connections(node: PrivateNode) -> list[dict[str, Any]]:
    """What the broker itself says about each TLS client: user, client port, and the client certificate's
    issuer and validity (RabbitMQ 3.10 has no serial column; a renewed certificate has new dates)."""
    r = node.ctl("list_connections", "user", "ssl", "peer_port", "peer_cert_issuer", "peer_cert_validity",
                 "client_properties", "--formatter", "json")
    rows = [row for row in json.loads(r.stdout or "[]") if row.get("ssl")]
    for row in rows:
        props = {k: v for k, _type, v in row.pop("client_properties")}
        row["connection_name"] = props.get("connection_name", "")
    return rows


def client_certificates(node: PrivateNode, user: str, expect: str, at_least: int = 2) -> list[tuple[str, str]]:
    """(connection name, client certificate validity) of each of ``user``'s TLS connections, once the
    broker lists at least ``at_least`` of them, all with validity ``expect``, or after 30 s what it
    lists then. A busy connection may be missing from one listing, and a connection jgw closed (the
    old identity after a rotation) stays listed until the broker has finished closing it."""
    rows: list[tuple[str, str]] = []

    def settled() -> bool:
        rows[:] = [(c["connection_name"], c["peer_cert_validity"]) for c in tls_connections(node) if c["user"] == user]
        return len(rows) >= at_least and {validity for _name, validity in rows} == {expect}

    with contextlib.suppress(TimeoutError):
        wait_until(settled, 30, "")
    return rows


def wait_disconnected(node: PrivateNode, users: tuple[str, ...], timeout: float = 30) -> None:
    """Until the broker lists none of ``users``' connections: the next test sees only its own."""
    def left() -> list[tuple[str, str]]:
        return [(c["connection_name"], c["peer_cert_validity"]) for c in tls_connections(node) if c["user"] in users]

    with contextlib.suppress(TimeoutError):
        wait_until(lambda: not left(), timeout, "")
        return
    raise TimeoutError(f"the broker still lists these connections {timeout}s after jgw stopped: {left()}")


def broker_validity(cert: x509.Certificate) -> str:
    """A certificate's validity as ``rabbitmqctl list_connections peer_cert_validity`` shows it."""
    return f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} - {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"


# ---------------------------------------------------------------------------------------------- sites


@dataclass
class Sites:
    """Both sites of one test: configs, certs directories, running daemons, queue names."""

    tmp: Path
    pki: Path
    dc_node: PrivateNode
    prefix: str = field(default_factory=lambda: unique("rot").lower())
    city_port: int = field(default_factory=free_port)
    dc_port: int = field(default_factory=free_port)
    city: JgwProcess | None = None
    dc: JgwProcess | None = None
    #: The city hall's way to the data centre's broker, when not direct (through a fault proxy: LGWAN).
    lgwan_url: str | None = None

    # names ---------------------------------------------------------------------------------------
    @property
    def to_dc(self) -> str:
        return f"{self.prefix}-to-dc"

    @property
    def store(self) -> str:
        return f"{self.prefix}-store"

    @property
    def reply(self) -> str:
        return f"{self.prefix}-reply"

    @property
    def from_dc(self) -> str:
        return f"{self.prefix}-from-dc"

    @property
    def city_source(self) -> str:
        return f"{self.prefix}.ocr"

    @property
    def dc_source(self) -> str:
        return f"{self.prefix}.reply-src"

    @property
    def dc_final(self) -> str:
        return f"{self.prefix}.store"

    @property
    def city_final(self) -> str:
        return f"{self.prefix}.replies"

    @property
    def exchange_in(self) -> str:
        return f"{self.prefix}.jgw.in"

    @property
    def exchange_out(self) -> str:
        return f"{self.prefix}.jgw.out"

    def certs(self, node: str) -> Path:
        return self.pki / node

    def config(self, node: str) -> Path:
        return self.tmp / node / "jgw.toml"

    def metrics_port(self, node: str) -> int:
        return self.city_port if node == CITY else self.dc_port

    def daemon(self, node: str) -> JgwProcess:
        proc = self.city if node == CITY else self.dc
        assert proc is not None
        return proc

    @property
    def dc_url(self) -> str:
        assert self.dc_node.tls is not None
        return f"amqps://localhost:{self.dc_node.tls.port}/%2F"

    # set-up --------------------------------------------------------------------------------------
    def write_configs(self) -> None:
        p = self.prefix
        tls = {"server_hostname": "localhost"}
        dc_broker = {"urls": [self.dc_url], "reconnect_min": "200ms", "reconnect_max": "2s", "tls": tls}
        over_lgwan = {**dc_broker, "urls": [self.lgwan_url or self.dc_url]}
        city_routes = {
            self.to_dc: {
                "personal_number": "allowed",
                "source": {"broker": "local", "queue": self.city_source},
                "sink": {"broker": "datacenter", "exchange": self.exchange_in, "exchange_type": "direct",
                         "routing_key": "ido-file"},
                "seal": {"suite": "default", "recipients": [DC], "route_name": "ido-file",
                         "batch_max": 16},
            },
            self.from_dc: {
                "personal_number": "allowed",
                "source": {"broker": "datacenter", "queue": f"{p}.jgw.out.cityhall",
                           "bind": [{"exchange": self.exchange_out, "routing_key": "reply"}]},
                "sink": {"broker": "local", "exchange": f"{p}.in", "exchange_type": "direct",
                         "routing_key": "reply", "queue": self.city_final},
                "open": {"senders": [DC], "routes": ["reply"]},
            },
        }
        dc_routes = {
            self.store: {
                "personal_number": "allowed",
                "source": {"broker": "local", "queue": f"{p}.jgw.in.ido-file",
                           "bind": [{"exchange": self.exchange_in, "routing_key": "ido-file"}]},
                "sink": {"broker": "local", "exchange": "", "routing_key": self.dc_final,
                         "queue": self.dc_final},
                "open": {"senders": [CITY], "routes": ["ido-file"]},
            },
            self.reply: {
                "personal_number": "allowed",
                "source": {"broker": "local", "queue": self.dc_source},
                "sink": {"broker": "local", "exchange": self.exchange_out, "exchange_type": "direct",
                         "routing_key": "reply"},
                "seal": {"suite": "default", "recipients": [CITY], "route_name": "reply", "batch_max": 16},
            },
        }
        for node, brokers, routes in (
                (CITY, {"local": {"urls": [MAIN_URL]}, "datacenter": over_lgwan}, city_routes),
                (DC, {"local": dc_broker}, dc_routes)):
            path = self.config(node)
            path.parent.mkdir(parents=True, exist_ok=True)
            table = {"id": node, "state_dir": str(path.parent / "state"), "certs_dir": str(self.certs(node)),
                     "metrics_listen": f"127.0.0.1:{self.metrics_port(node)}"}
            path.write_text(render_config(table, brokers, routes))

    def start(self) -> None:
        """The data centre first (its queues must exist before the city hall publishes to them)."""
        self.write_configs()
        self.dc = JgwProcess(self.config(DC)).start(timeout=60)
        self.city = JgwProcess(self.config(CITY)).start(timeout=60)

    def stop(self) -> None:
        for proc in (self.city, self.dc):
            if proc is not None:
                proc.stop()
        wait_disconnected(self.dc_node, (CITY, DC))
        with Amqp(MAIN_URL) as main:  # the city hall's queues live on the shared broker
            from gateway import config as config_mod
            from gateway.amqp.topology import retry_queue

            route = config_mod.load(self.config(CITY)).routes[self.to_dc]
            retries = (retry_queue(route, i) for i in range(len(route.retry)))
            main.delete(self.city_source, self.city_final, *retries, exchanges=[f"{self.prefix}.in"])

    # observation ---------------------------------------------------------------------------------
    def metrics(self, node: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return scrape(self.metrics_port(node))

    def reloads(self, node: str, result: str) -> float:
        return sample(self.metrics(node), "jgw_reloads_total", result=result)

    def wait_reloads(self, node: str, result: str, at_least: float, timeout: float = 60) -> None:
        """A SIGHUP reload is asynchronous: wait until the daemon has counted it."""
        wait_until(lambda: self.reloads(node, result) >= at_least, timeout,
                   f"{node}: jgw_reloads_total{{result={result!r}}} >= {at_least}\n{self.daemon(node).log()}")

    def outcome(self, node: str, route: str, outcome: str) -> float:
        return sample(self.metrics(node), "jgw_messages_total", route=route, outcome=outcome)

    def live_generation(self, node: str) -> str:
        return (self.certs(node) / "live").readlink().name


# ---------------------------------------------------------------------------------------------- traffic


class Producer(threading.Thread):
    """A business system publishing continuously with publisher confirms (mandatory, persistent).

    Every publish that is not confirmed (nack, return, connection error) is an error the producer
    saw: the tests require none. Message ids are ``<tag>-NNNNNN``; bodies are kept to compare bytes."""

    def __init__(self, url: str, queue: str, tag: str, interval: float, seed: int) -> None:
        super().__init__(name=f"producer {tag}", daemon=True)
        self.url, self.queue, self.tag, self.interval = url, queue, tag, interval
        self.rng = random.Random(seed)
        self.sent: dict[str, bytes] = {}
        self.errors: list[str] = []
        self._halt = threading.Event()

    def body(self, i: int) -> bytes:
        if i % 2:  # a 住民記録-like fixed-length record with a synthetic 個人番号 (the route allows it)
            return synth.fixed_record(self.rng, "cp932", synth.valid_personal_number(self.rng)).data
        return self.rng.randbytes(self.rng.randint(1, 4096))  # opaque bytes, any value

    def run(self) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.url))
        ch = conn.channel()
        ch.confirm_delivery()
        i = 0
        try:
            while not self._halt.is_set():
                mid, body = f"{self.tag}-{i:06d}", self.body(i)
                props = pika.BasicProperties(message_id=mid, delivery_mode=2,
                                             content_type="application/octet-stream")
                try:
                    ch.basic_publish("", self.queue, body, props, mandatory=True)
                    self.sent[mid] = body
                except Exception as exc:  # every kind of failure is one the producer saw
                    self.errors.append(f"{mid}: {type(exc).__name__}: {exc}")
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = pika.BlockingConnection(pika.URLParameters(self.url))
                    ch = conn.channel()
                    ch.confirm_delivery()
                i += 1
                self._halt.wait(self.interval)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def stop(self) -> dict[str, bytes]:
        self._halt.set()
        self.join(30)
        return self.sent


class Traffic:
    """Both business systems publishing at once: the city hall's OCR system, the data centre's reply."""

    def __init__(self, sites: Sites, interval: float = 0.03) -> None:
        self.sites = sites
        self.city = Producer(MAIN_URL, sites.city_source, "city", interval, 1)
        self.dc = Producer(sites.dc_node.url, sites.dc_source, "dc", interval, 2)

    def __enter__(self) -> Traffic:
        self.city.start()
        self.dc.start()
        wait_until(lambda: len(self.city.sent) > 20 and len(self.dc.sent) > 20, 30, "traffic flowing")
        return self

    def __exit__(self, *exc: object) -> None:
        self.city.stop()
        self.dc.stop()

    def delivered(self, timeout: float = 90) -> tuple[list[Received], list[Received]]:
        """Stop both producers; read back everything at both final queues."""
        sent_city, sent_dc = self.city.stop(), self.dc.stop()
        with Amqp(self.sites.dc_node.url) as dc:
            at_dc = dc.drain(self.sites.dc_final, expect=len(sent_city), timeout=timeout, idle=2.0)
        with Amqp(MAIN_URL) as city:
            at_city = city.drain(self.sites.city_final, expect=len(sent_dc), timeout=timeout, idle=2.0)
        return at_dc, at_city


def assert_exactly_delivered(sent: dict[str, bytes], got: list[Received], what: str) -> None:
    """Every id sent arrived, once, byte for byte; nothing else arrived."""
    ids = [m.message_id for m in got]
    lost = set(sent) - set(ids)
    unknown = set(ids) - set(sent)
    dups = len(ids) - len(set(ids))
    assert not lost and not unknown, f"{what}: {len(lost)} lost, {len(unknown)} unknown of {len(sent)} sent"
    assert dups == 0, f"{what}: {dups} duplicate deliveries"
    changed = [m.message_id for m in got if m.body != sent[m.message_id]]
    assert not changed, f"{what}: {len(changed)} bodies differ from what was sent, e.g. {changed[:3]}"


def envelopes(url: str, queue: str) -> list[Envelope]:
    """Read a tap queue of sealed envelopes (as an auditor with no keys would) and parse each."""
    with Amqp(url) as tap:
        return [parse(m.body) for m in tap.drain(queue, timeout=30, idle=1.0)]


def copy_pki(template: Path, dest: Path) -> Path:
    """A private copy of the module's dev PKI (same CA, so the broker trusts it), symlinks kept."""
    shutil.copytree(template, dest, symlinks=True)
    return dest
