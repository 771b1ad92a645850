"""Sites for the seed scenarios: real brokers, a dev PKI, and jgw configs written from the catalog.

A *site* is a jgw plus its broker. Three sites take part, each with its own node id, certificates
(``gateway.pki.devinit.init_dev``) and config written by the test:

- ``cityhall``   the city hall (市役所): 既存住基, the CS's business-network side, 団体内統合宛名,
                 共通基盤 and the OCR 異動受付 system publish to and consume from its broker;
- ``chukan``     the 自治体中間サーバー・プラットフォーム (中間サーバ), reached over LGWAN;
- ``datacenter`` the OCR vendor's data centre (サービス提供者のデータセンター), reached over LGWAN.

Two private RabbitMQ nodes carry them: the city hall's node (vhost ``juki``), and one node for the
two LGWAN peers, each peer with its own vhost (``chukan``, ``ido``) and users. Both nodes have a
TLS listener that takes mTLS with EXTERNAL login (the user is the peer certificate's CN, the node
id), which is how a jgw reaches another site's broker; guest on the plain port is the test's view
of each broker (the business systems' side). Users, vhosts and permissions are loaded from a
definitions file at boot, so no rabbitmqctl call is needed.

Routes come from ``config/catalog``: ``catalog_route`` reads the flow a seed reference names and
takes its 個人番号 rule, payload encoding and per-person ordering from there; every route carries
``seed`` so ``jgw`` itself checks it against the catalog when it loads the config.

Security: development PKI and synthetic data only; private keys live in pytest's temporary dirs.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika

from gateway.audit import per_message
from gateway.catalog import default_catalog
from gateway.envelope.stage import H_ORDER
from gateway.message import H_SENT_AT
from gateway.pki.devinit import DevPki, init_dev
from tests.lab.harness import Amqp, JgwProcess, Received, business_message_id, render_config, scrape_metric, wait_for
from tests.lab.rabbitnode import PrivateNode, TlsListener, free_port, start_together

#: The business systems' per-person key (a 住民票コード-like id in production). In clear only on the
#: city hall's own broker; between sites it travels as an HMAC (``x-jgw-order``).
ORDER_HEADER = "x-order-key"
SITES = ("cityhall", "chukan", "datacenter")
#: where peers publish sealed envelopes on a site's broker (config/examples/datacenter.toml)
INBOUND_EXCHANGE = "jgw.in"
#: vhost of each site on its broker
VHOSTS = {"cityhall": "juki", "chukan": "chukan", "datacenter": "ido"}
#: who may log in (EXTERNAL) on whose vhost: the site itself, and the peers that publish to it
PEERS_IN = {"cityhall": ("chukan",), "chukan": ("chukan", "cityhall"),
            "datacenter": ("datacenter", "cityhall")}


def _password_hash(password: str) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt || sha256(salt || password))."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def _definitions(sites: Iterable[str]) -> dict[str, Any]:
    users = [{"name": "guest", "password_hash": _password_hash("guest"),
              "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]}]
    vhosts = [{"name": "/"}]
    perms = []
    names: set[str] = set()
    for site in sites:
        vhost = VHOSTS[site]
        vhosts.append({"name": vhost})
        perms.append({"user": "guest", "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
        for peer in PEERS_IN[site]:
            names.add(peer)
            perms.append({"user": peer, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"})
    # EXTERNAL users: an empty password hash means no password login at all
    users += [{"name": n, "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256",
               "tags": []} for n in sorted(names)]
    return {"users": users, "vhosts": vhosts, "permissions": perms}


@dataclass
class Brokers:
    """The two private RabbitMQ nodes and the dev PKI, shared by every scenario of the package."""

    root: Path
    pki: DevPki
    city: PrivateNode
    lgwan: PrivateNode

    @classmethod
    def start(cls, root: Path) -> Brokers:
        pki = init_dev(root / "pki", list(SITES), dt.datetime.now(dt.UTC))
        nodes = []
        for name, sites in (("city", ("cityhall",)), ("lgwan", ("chukan", "datacenter"))):
            defs = root / f"{name}-definitions.json"
            defs.write_text(json.dumps(_definitions(sites)))
            nodes.append(PrivateNode(base=root / "nodes", tls=TlsListener(pki.broker_ca, pki.broker_cert,
                                                                          pki.broker_key),
                                     extra_conf=f"load_definitions = {defs}"))
        brokers = cls(root, pki, nodes[0], nodes[1])
        try:
            start_together(nodes)
        except BaseException:
            brokers.destroy()
            raise
        for site in SITES:  # each site's inbound exchange, as its installation sets it up
            with Amqp(brokers.view_url(site)) as admin:
                admin.declare_exchange(INBOUND_EXCHANGE)
        return brokers

    def node_of(self, site: str) -> PrivateNode:
        return self.city if site == "cityhall" else self.lgwan

    def view_url(self, site: str) -> str:
        """guest on the plain port: the business systems' (and the test's) view of a site's broker."""
        return f"amqp://guest:guest@127.0.0.1:{self.node_of(site).amqp_port}/{VHOSTS[site]}"

    def tls_port(self, site: str) -> int:
        tls = self.node_of(site).tls
        assert tls is not None
        return tls.port

    def jgw_broker(self, site: str, *, port: int | None = None) -> dict[str, Any]:
        """A ``[brokers.X]`` table reaching ``site``'s broker over mTLS (EXTERNAL), maybe via a proxy."""
        return {"urls": [f"amqps://localhost:{port or self.tls_port(site)}/{VHOSTS[site]}"],
                "reconnect_min": "200ms", "reconnect_max": "1s", "tls": {"server_hostname": "localhost"}}

    def destroy(self) -> None:
        for node in (self.city, self.lgwan):
            with contextlib.suppress(Exception):
                node.destroy()


# ---------------------------------------------------------------------------------- routes

def catalog_route(ref: str, source: dict[str, Any], sink: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A route for seed flow ``ref`` with the catalog's values: 個人番号 rule, encoding, ordering.

    The catalog is the authority: the route is exactly as strict as the flow (or the leg ``/N``)."""
    flow, leg = default_catalog().lookup(ref)
    assert flow.is_route, f"{ref} is not a message flow"
    legs = [leg] if leg is not None else list(flow.legs)
    rule = leg.personal_number if leg is not None else flow.personal_number
    route: dict[str, Any] = {"description": flow.name, "seed": ref, "personal_number": rule,
                             "source": source, "sink": sink}
    encodings = {x.encoding for x in legs if x.encoding}
    if len(encodings) == 1:
        route["payload_encoding"] = encodings.pop()
    if flow.ordering == "person":
        route["ordering"] = {"header": ORDER_HEADER}
    route.update(extra)
    return route


def seal(route: dict[str, Any], *, to: str, name: str, order_secret: Path | None = None) -> dict[str, Any]:
    """Make ``route`` outbound between sites: signed and encrypted for ``to`` only."""
    table: dict[str, Any] = {"suite": "default", "recipients": [to], "route_name": name}
    if order_secret is not None:
        table["order_key_secret"] = str(order_secret)
    route["seal"] = table
    return route


def open_from(route: dict[str, Any], *, sender: str, name: str) -> dict[str, Any]:
    """Make ``route`` inbound between sites: only ``sender``'s envelopes signed for ``name`` open.
    An ordered flow is ordered here by the order key HMAC the sender put in the clear header."""
    route["open"] = {"senders": [sender], "routes": [name]}
    if "ordering" in route:
        route["ordering"] = {"header": H_ORDER}
    return route


# ---------------------------------------------------------------------------------- one scenario

@dataclass
class Site:
    node_id: str
    config: Path
    metrics_port: int
    state_dir: Path
    control_socket: Path
    log: Path
    _proc: JgwProcess | None = None

    @property
    def proc(self) -> JgwProcess:
        """The site's ``jgw run`` process (made on first use: a refused config cannot have one)."""
        if self._proc is None:
            self._proc = JgwProcess(self.config, log_path=self.log)
        return self._proc

    def status(self, route: str) -> dict[str, Any]:
        return next(r for r in self.proc.status()["routes"] if r["route"] == route)


@dataclass
class World:
    """One scenario: unique names on the shared brokers, the sites' configs, their jgw processes."""

    brokers: Brokers
    tmp: Path
    tag: str = field(default_factory=lambda: "s" + uuid.uuid4().hex[:6])
    sites: dict[str, Site] = field(default_factory=dict)
    _sock_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jgwsc-")))

    def q(self, name: str) -> str:
        """A queue or exchange name unique to this scenario."""
        return f"{self.tag}.{name}"

    def r(self, name: str) -> str:
        """A route name unique to this scenario (route names name retry queues on a shared broker)."""
        return f"{self.tag}-{name}"

    def secret(self, site: str) -> Path:
        """The site's order-key HMAC secret: 32 random bytes, 0600."""
        path = self.tmp / f"{site}-order.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        return path

    def outbound(self, at: str, ref: str, *, to: str, name: str, queue: str, **extra: Any) -> dict[str, Any]:
        """A route at site ``at`` that seals seed flow ``ref`` for site ``to`` and publishes it to that
        site's inbound exchange (``name``: the route name both sites sign and accept)."""
        sink = {"broker": to, "exchange": INBOUND_EXCHANGE, "routing_key": self.q(name)}
        route = catalog_route(ref, source={"broker": "local", "queue": queue}, sink=sink, **extra)
        return seal(route, to=to, name=name, order_secret=self.secret(at) if "ordering" in route else None)

    def inbound(self, ref: str, *, sender: str, name: str, sink: dict[str, Any], **extra: Any
                ) -> dict[str, Any]:
        """A route that takes ``sender``'s envelopes of seed flow ``ref`` from this site's inbound
        exchange, opens them and delivers them to ``sink``."""
        source = {"broker": "local", "queue": self.q(f"jgw.in.{name}"),
                  "bind": [{"exchange": INBOUND_EXCHANGE, "routing_key": self.q(name)}]}
        return open_from(catalog_route(ref, source=source, sink=sink, **extra), sender=sender, name=name)

    def write(self, site: str, routes: dict[str, dict[str, Any]], *,
              peers: dict[str, dict[str, Any]] | None = None, defaults: dict[str, Any] | None = None,
              tables: dict[str, dict[str, Any]] | None = None) -> Path:
        """Write ``site``'s config: its own broker as ``local`` (plain for the city hall's jgw, which
        runs next to it; mTLS for the LGWAN peers, as config/examples/datacenter.toml), plus peers;
        ``tables``: further top-level tables (``sftp``, ``endpoint``) for file routes."""
        base = self.tmp / site
        base.mkdir(parents=True, exist_ok=True)
        local: dict[str, Any] = ({"urls": [self.brokers.view_url(site)]} if site == "cityhall"
                                 else self.brokers.jgw_broker(site))
        port = free_port()
        sock = self._sock_dir / f"{site}.sock"
        node = {"id": site, "state_dir": str(base / "state"), "certs_dir": str(self.brokers.pki.nodes[site]),
                "metrics_listen": f"127.0.0.1:{port}", "control_socket": str(sock), "shutdown_grace": "5s"}
        path = base / "jgw.toml"
        path.write_text(render_config(node, {"local": local, **(peers or {})}, routes, defaults, tables=tables))
        self.sites[site] = Site(site, path, port, base / "state", sock, base / "jgw.log")
        return path

    def start(self, *sites: str) -> None:
        """Start jgw at each site, in the order given (a receiving site first: it declares jgw.in)."""
        for site in sites:
            self.sites[site].proc.start(timeout=60)

    def stop(self) -> None:
        for site in self.sites.values():
            if site._proc is not None:
                with contextlib.suppress(Exception):
                    site._proc.stop(timeout=30)
        shutil.rmtree(self._sock_dir, ignore_errors=True)

    def view(self, site: str) -> Amqp:
        return Amqp(self.brokers.view_url(site))


# ---------------------------------------------------------------------------------- stand-ins

def stand_in(amqp: Amqp, exchange: str, bindings: dict[str, str]) -> None:
    """A receiving system: its exchange, and a queue per routing key (``{key: queue}``)."""
    amqp.declare_exchange(exchange)
    for key, queue in bindings.items():
        amqp.declare_queue(queue)
        if key:
            amqp.bind(queue, exchange, key)


def publish(amqp: Amqp, queue: str, body: bytes, *, headers: dict[str, Any] | None = None,
            correlation_id: str | None = None, content_type: str | None = None, message_id: str | None = None
            ) -> str:
    """Publish one message to ``queue`` as a business system would, confirmed; returns its id."""
    ch = amqp.conn.channel()
    ch.confirm_delivery()
    mid = message_id or business_message_id()
    props = pika.BasicProperties(message_id=mid, delivery_mode=2, correlation_id=correlation_id,
                                 content_type=content_type,
                                 headers={**(headers or {}), H_SENT_AT: int(time.time() * 1000)})
    ch.basic_publish("", queue, body, props, mandatory=True)
    ch.close()
    return mid


def by_key(messages: Iterable[Received], header: str = ORDER_HEADER) -> dict[str, list[str]]:
    """Message ids per ordering key, in the order they arrived."""
    out: dict[str, list[str]] = {}
    for m in messages:
        out.setdefault(str(m.headers.get(header)), []).append(m.message_id)
    return out


def first_copies(messages: list[Received], bound: int) -> list[Received]:
    """The messages without repeated copies of an id already seen: a crash of jgw may deliver the
    messages in flight at that instant twice, with the same id (never more than ``bound``)."""
    seen: set[str] = set()
    out = []
    for m in messages:
        if m.message_id not in seen:
            seen.add(m.message_id)
            out.append(m)
    assert len(messages) - len(out) <= bound, f"{len(messages) - len(out)} repeated copies, more than {bound}"
    return out


def metric(site: Site, name: str, **labels: str) -> float:
    """One sample from the site's /metrics, as Prometheus would scrape it (0 when not exported yet)."""
    return scrape_metric(site.metrics_port, name, 0.0, **labels)


def set_aside(config: Path, verb: str) -> list[dict[str, Any]]:
    """What a site set aside, as an operator sees it: ``jgw quarantine|dlq list CONFIG --json``."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gateway.cli", verb, "list", str(config), "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def audit_records(state_dir: Path) -> list[dict[str, Any]]:
    from gateway.audit import records

    return [rec for _, _, rec in records(state_dir / "audit")]


def deliveries(site: Site, ids: Iterable[str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    """The site's audit ``deliver`` records of ``ids``, once all are written. A receiving system can
    see a message a moment before jgw commits the record that precedes the source ack: wait."""
    wanted = set(ids)

    def found() -> dict[str, dict[str, Any]] | None:
        recs = {r["msg"]: r for rec in audit_records(site.state_dir) for r in per_message(rec)
                if r.get("ev") == "deliver" and r["msg"] in wanted}
        return recs if set(recs) == wanted else None

    out: dict[str, dict[str, Any]] = wait_for(found, timeout=timeout, interval=0.2,
                                              what=f"{site.node_id}'s deliver records")
    return out


__all__ = ["ORDER_HEADER", "Brokers", "Site", "World", "audit_records", "by_key", "catalog_route",
           "deliveries", "metric", "open_from", "publish", "seal", "set_aside", "stand_in", "wait_for"]
