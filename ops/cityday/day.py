"""A city's day (issue 13): every route of ``config/examples/`` carrying one compressed day of traffic.

Three sites, each a real ``jgw run`` with its own private RabbitMQ node and dev certificates:

- ``cityhall``   the example ``cityhall.toml`` (every route), its broker the city node (vhost juki);
- ``chukan``     the 中間サーバ side (the catalog places ``chukan-server`` outside the city hall, over
                 LGWAN): the city hall's legs towards it (1-⑫/2, 5-①, 3-③, 4-②/1) are sealed to it,
                 its answers (5-②/1, 4-⑤/2) are sealed back to the city hall;
- ``datacenter`` the example ``datacenter.toml``: the OCR files (ido-ocr:⑤) sealed frame by frame.

The LGWAN links (city hall → chukan and data centre, chukan → city hall) run through a fault proxy.
The business systems are stand-ins in this process: they publish what the seed says they send and
answer requests (the CS, 統合宛名, the 中間サーバ) with replies under the request's correlation id.

The day is ``TICKS`` ticks of ten simulated minutes each, paced to ``tick_seconds`` of real time;
four faults happen at ticks drawn from the seed (a broker restart, a jgw kill -9, an LGWAN cut, a
certificate rotation at the data centre). Every message is counted by id, every file by name.

Security: synthetic data only (``tests.lab.synth``: 個人番号 with a valid check digit, never a real
one); message ids and correlation ids are built so that no digit run is 個人番号-shaped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import random
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
from pika.exceptions import AMQPError

from gateway.catalog import default_catalog
from gateway.envelope.stage import H_ORDER
from gateway.message import H_SENT_AT
from ops.demo.__main__ import FILE_ROUTE_DIRS, dump_toml, endpoint_setup, listing, ocr_file, sftp_login, site_config
from tests.lab import synth
from tests.lab.faultproxy import FaultProxyServer
from tests.lab.harness import JgwProcess, render_config, scrape_metric
from tests.lab.rabbitnode import free_port
from tests.lab.sshd import PrivateSshd, openssh_sftp
from tests.scenarios.sites import INBOUND_EXCHANGE, ORDER_HEADER, Brokers, catalog_route

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"
TICKS = 144  # ten simulated minutes each: 00:00 … 24:00
OFFICE = range(51, 104)  # 08:30 … 17:19
BATCH_TICK = 132  # 22:00: the nightly 整合性確認 batch

#: the city hall's legs to the 中間サーバ: route → name both sites sign
TO_CHUKAN = {"chukan-juminhyo": "juminhyo", "fugo-pair": "fugo-pair", "fukuhon-register": "fukuhon",
             "shokai-to-chukan": "shokai"}
#: the 中間サーバ's answers to the city hall: the city hall's route → (name, chukan's route, its seed)
FROM_CHUKAN = {"fugo-request-atena": ("fugo-request", "fugo-request-out", "jimu:5-②/1"),
               "shokai-answer": ("kaito", "kaito-out", "chukan:4-⑤/2")}

#: request/reply pairs, by correlation id: the request route and the route the final answer arrives on
PAIRS = {"1-② → 1-⑤ 個人番号の生成要求/通知": ("kojin-bango-request", "kojin-bango-notice"),
         "honnin:2-② → 2-④ 本人確認": ("honnin-kakunin", "honnin-kakunin-result"),
         "5-① → 5-② 符号取得": ("fugo-pair", "fugo-request-cs"),
         "chukan:4-① → 4-⑥ 情報照会": ("shokai-request", "shokai-result")}

#: seed systems (catalog node ids) and the routes of the day that carry their flows
SYSTEMS: dict[str, tuple[str, ...]] = {
    "kizon-juki": ("kojin-bango-request", "kojin-bango-notice", "honnin-update", "tenshutsu-shomei",
                   "tennyu-tsuchi", "tokurei-tennyu-in", "fuhyo-send", "fuhyo-koseki-local", "sofusaki",
                   "kyotsu-atena", "atena-renkei", "homusho-import", "shichoson-tsuchi", "seigo-kakunin"),
    "cs": ("kojin-bango-request", "kojin-bango-notice", "honnin-update", "tenshutsu-shomei", "tennyu-tsuchi",
           "tokurei-tennyu-in", "fuhyo-send", "fuhyo-koseki-from-cs", "sofusaki", "fugo-request-cs",
           "honnin-kakunin", "honnin-kakunin-result", "seigo-kakunin"),
    "atena": ("atena-renkei", "chukan-juminhyo", "fugo-pair", "fugo-request-atena", "fugo-request-cs",
              "honnin-kakunin", "honnin-kakunin-result", "fukuhon-update", "fukuhon-register",
              "shokai-request", "shokai-to-chukan", "shokai-answer", "shokai-result"),
    "chukan-server": ("chukan-juminhyo", "fugo-pair", "fugo-request-atena", "fukuhon-register",
                      "shokai-to-chukan", "shokai-answer"),
    "kyotsu-kiban": ("kyotsu-atena",),
    "koseki": ("fuhyo-koseki-from-cs", "fuhyo-koseki-local"),
    # its flows (7-⑪, 9-②, 10-①) run on 住基ネット; jgw carries the 送付先情報 to the CS (9-①)
    "card-system": ("sofusaki",),
    "homusho-terminal": ("homusho-import", "shichoson-tsuchi"),
    # its flows (6-①…⑧, 7-②) run on 住基ネット; jgw carries what follows on the business network:
    # the 特例転入's 転出証明書 to 既存住基 (7-④)
    "tougou-terminal": ("tokurei-tennyu-in",),
    "ocr": ("ido-file-to-dc",),
    "vendor-dc": ("ido-file-store",),
    "shinsei": (),  # no data linkage: a route for it is refused
}

FILE_ROUTES = ("ido-file-to-dc", "ido-file-store", "atena-renkei", "fukuhon-update")


@dataclass(frozen=True)
class Scale:
    """How much traffic one day carries (the defaults: a city of about 500,000 residents)."""

    ido_persons: int = 600  # 異動 届出 a day
    honnin_kakunin: int = 300  # 本人確認
    shokai: int = 200  # 情報照会
    fuhyo_in: int = 80  # 附票 from other cities (2-③ → 2-④/1)
    homusho: int = 120  # 法務省通知
    shichoson: int = 60  # 市町村通知
    sofusaki: int = 200  # 送付先情報
    fukuhon: int = 400  # 副本登録
    ocr_files: int = 150  # 異動対象者情報ファイル (one per application)
    juki_files: int = 8  # 住民票関係情報ファイル pushed by 既存住基
    fukuhon_files: int = 6  # 副本 files pushed by 既存業務
    population: int = 500_000  # records in the nightly 整合性確認 batch
    batch_records: int = 1000  # records a message in that batch
    tick_seconds: float = 0.9  # real seconds for ten simulated minutes


@dataclass
class Sent:
    route: str
    at: float  # time.monotonic() when the publish was confirmed (or the file complete)
    key: str | None = None
    corr: str | None = None
    expect: str = "delivered"  # or "quarantined"


@dataclass
class Arrival:
    queue: str
    message_id: str
    corr: str | None
    at: float


@dataclass
class Ledger:
    """What the business systems sent and what they received, by message id (files by name)."""

    sent: dict[str, Sent] = field(default_factory=dict)
    order: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    got: dict[str, float] = field(default_factory=dict)  # id → first arrival time
    got_order: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    duplicates: Counter[str] = field(default_factory=Counter)  # route → repeated copies suppressed
    replies: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))  # route → corr → id
    wrong_place: list[str] = field(default_factory=list)


def say(text: str) -> None:
    print(f"cityday: {text}", flush=True)


class Ids:
    """Message ids and correlation ids with no 個人番号-shaped digit run (at most 6 digits)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0

    def __call__(self, prefix: str = "cd") -> str:
        self.n += 1
        return f"{prefix}{self.n:06d}" + "".join(self.rng.choice(string.ascii_lowercase) for _ in range(8))


# ------------------------------------------------------------------------------------ stand-ins

class Publisher:
    """The business systems' side of one broker: confirmed, persistent publishes; reconnects."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: pika.BlockingConnection | None = None
        self.ch: Any = None

    def _channel(self) -> Any:
        if self.conn is None or self.conn.is_closed or self.ch is None or self.ch.is_closed:
            with contextlib.suppress(AMQPError, OSError):
                if self.conn is not None:
                    self.conn.close()
            self.conn = pika.BlockingConnection(pika.URLParameters(self.url))
            self.ch = self.conn.channel()
            self.ch.confirm_delivery()
        return self.ch

    def publish(self, queue_name: str, body: bytes, mid: str, *, key: str | None = None,
                corr: str | None = None, exchange: str = "") -> float:
        headers: dict[str, Any] = {H_SENT_AT: int(time.time() * 1000)}
        if key is not None:
            headers[ORDER_HEADER] = key
        props = pika.BasicProperties(message_id=mid, delivery_mode=2, correlation_id=corr, headers=headers)
        for attempt in range(60):
            try:
                self._channel().basic_publish(exchange, queue_name, body, props, mandatory=True)
                return time.monotonic()
            except (AMQPError, OSError):
                # the confirm is lost with the connection: publish again under the same id (the
                # receiver sees a duplicate at worst, never a gap)
                self.conn = None
                time.sleep(min(0.2 * (attempt + 1), 2.0))
        raise RuntimeError(f"could not publish to {queue_name}")

    def declare(self, fn: Any) -> None:
        fn(self._channel())

    def close(self) -> None:
        with contextlib.suppress(AMQPError, OSError):
            if self.conn is not None:
                self.conn.close()


class Collector(threading.Thread):
    """The receiving systems on one broker: consume every inbox queue, ack after recording."""

    def __init__(self, url: str, queues: list[str], out: queue.Queue[Arrival]) -> None:
        super().__init__(daemon=True, name=f"collector-{url.rsplit('/', 1)[-1]}")
        self.url, self.queues, self.out = url, queues, out
        self.stopping = threading.Event()
        self.reconnects = 0

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                conn = pika.BlockingConnection(pika.URLParameters(self.url))
                ch = conn.channel()
                ch.basic_qos(prefetch_count=500)
                for q in self.queues:
                    ch.basic_consume(q, self._callback(q), auto_ack=False)
                while not self.stopping.is_set():
                    conn.process_data_events(time_limit=0.1)
                with contextlib.suppress(AMQPError, OSError):
                    conn.close()
            except (AMQPError, OSError):
                self.reconnects += 1
                self.stopping.wait(0.5)

    def _callback(self, q: str) -> Any:
        def on_message(ch: Any, method: Any, props: Any, body: bytes) -> None:
            self.out.put(Arrival(q, props.message_id, props.correlation_id, time.monotonic()))
            ch.basic_ack(method.delivery_tag)
        return on_message


# ------------------------------------------------------------------------------------ the sites

@dataclass
class Sites:
    out: Path
    brokers: Brokers
    configs: dict[str, Path]
    procs: dict[str, JgwProcess]
    metrics: dict[str, int]
    inboxes: dict[str, dict[str, str]]  # site → inbox queue → route (for the receiving stand-ins)
    ocr: PrivateSshd
    atena: PrivateSshd
    endpoint: tuple[int, Path, dict[str, Path]]
    spool: dict[str, Path]
    store: Path
    proxies: list[Any]
    proxy_server: FaultProxyServer


def _jgw_broker(port: int, vhost: str) -> dict[str, Any]:
    return {"urls": [f"amqps://localhost:{port}/{vhost}"], "reconnect_min": "200ms", "reconnect_max": "1s",
            "tls": {"server_hostname": "localhost"}}


def build_sites(out: Path, brokers: Brokers, servers: list[PrivateSshd], proxy_server: FaultProxyServer
                ) -> Sites:
    """Configs for the three sites from the examples (the city hall's and the data centre's) and the
    catalog (the 中間サーバ side), the stand-ins' exchanges and queues, the SFTP servers."""
    from toxiproxy import Toxiproxy

    proxy_server.configure_client()
    tox = Toxiproxy()
    lgwan = tox.create(upstream=f"127.0.0.1:{brokers.tls_port('chukan')}", name="lgwan-to-dc-chukan")
    back = tox.create(upstream=f"127.0.0.1:{brokers.tls_port('cityhall')}", name="lgwan-to-cityhall")
    port_of = {p: int(p.listen.rsplit(":", 1)[1]) for p in (lgwan, back)}
    socks = Path(tempfile.mkdtemp(prefix="jgwcd-"))
    metrics = {s: free_port() for s in ("cityhall", "chukan", "datacenter")}

    ocr_sshd, atena_sshd = PrivateSshd().start(), PrivateSshd().start()
    servers += [ocr_sshd, atena_sshd]
    (ocr_sshd.upload / "outbox").mkdir()
    for d in ("juminhyo", "fukuhon"):
        (atena_sshd.upload / d).mkdir()
    ep_port = free_port()
    spool = {"kizon-juki": out / "cityhall" / "spool" / "kizon-juki",
             "kizon-gyomu": out / "cityhall" / "spool" / "kizon-gyomu"}
    ep_changes, ep_known, ep_clients = endpoint_setup(ep_port, spool, out)
    store = out / "datacenter" / "ido-store"
    store.mkdir(parents=True)
    secret = out / "cityhall" / "order.key"
    secret.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))

    city = site_config("cityhall", {
        "node.state_dir": str(out / "cityhall" / "state"), "node.certs_dir": str(brokers.pki.nodes["cityhall"]),
        "node.metrics_listen": f"127.0.0.1:{metrics['cityhall']}",
        "node.control_socket": str(socks / "cityhall.sock"),
        "brokers.local.urls": [brokers.view_url("cityhall")],
        "brokers.local.credential": None, "brokers.local.password_file": None,
        "brokers.datacenter": _jgw_broker(port_of[lgwan], "ido"),
        "brokers.chukan": _jgw_broker(port_of[lgwan], "chukan"),
        "defaults.retry": ["1s", "2s", "5s", "10s"],
        **FILE_ROUTE_DIRS,
        **sftp_login("ocr", ocr_sshd, out), **sftp_login("atena", atena_sshd, out), **ep_changes,
    })
    routes = city["routes"]
    for name, wire in TO_CHUKAN.items():  # sealed across LGWAN to the 中間サーバ side
        routes[name]["sink"] = {"broker": "chukan", "exchange": INBOUND_EXCHANGE, "routing_key": wire}
        routes[name]["seal"] = {"suite": "default", "recipients": ["chukan"], "route_name": wire}
        if "ordering" in routes[name]:
            routes[name]["seal"]["order_key_secret"] = str(secret)
    for name, (wire, _, _) in FROM_CHUKAN.items():  # opened here, sealed by the 中間サーバ side
        routes[name]["source"] = {"broker": "local", "queue": f"jgw.in.{wire}",
                                  "bind": [{"exchange": INBOUND_EXCHANGE, "routing_key": wire}]}
        routes[name]["open"] = {"senders": ["chukan"], "routes": [wire]}

    chukan_routes: dict[str, dict[str, Any]] = {}
    for name, wire in TO_CHUKAN.items():
        source = {"broker": "local", "queue": f"jgw.in.{wire}",
                  "bind": [{"exchange": INBOUND_EXCHANGE, "routing_key": wire}]}
        route = catalog_route(routes[name]["seed"], source=source,
                              sink={"broker": "local", "exchange": "chukan-server.in", "routing_key": wire})
        route["open"] = {"senders": ["cityhall"], "routes": [wire]}
        if "ordering" in route:
            route["ordering"] = {"header": H_ORDER}
        chukan_routes[f"{name}-in"] = route
    for _, (wire, cname, seed) in FROM_CHUKAN.items():
        route = catalog_route(seed, source={"broker": "local", "queue": f"chukan-server.{wire}"},
                              sink={"broker": "cityhall", "exchange": INBOUND_EXCHANGE, "routing_key": wire})
        route["seal"] = {"suite": "default", "recipients": ["cityhall"], "route_name": wire}
        chukan_routes[cname] = route
    chukan_node = {"id": "chukan", "state_dir": str(out / "chukan" / "state"),
                   "certs_dir": str(brokers.pki.nodes["chukan"]),
                   "metrics_listen": f"127.0.0.1:{metrics['chukan']}",
                   "control_socket": str(socks / "chukan.sock"), "shutdown_grace": "5s"}
    chukan_text = render_config(chukan_node, {"local": brokers.jgw_broker("chukan"),
                                              "cityhall": _jgw_broker(port_of[back], "juki")},
                                chukan_routes, {"retry": ["1s", "2s", "5s", "10s"]})

    dc = site_config("datacenter", {
        "node.state_dir": str(out / "datacenter" / "state"), "node.certs_dir": str(brokers.pki.nodes["datacenter"]),
        "node.metrics_listen": f"127.0.0.1:{metrics['datacenter']}",
        "node.control_socket": str(socks / "datacenter.sock"),
        "brokers.local": brokers.jgw_broker("datacenter"),
        "routes.ido-file-store.sink.directory": str(store),
    })
    configs = {}
    for name, text in (("cityhall", dump_toml(city)), ("chukan", chukan_text), ("datacenter", dump_toml(dc))):
        (out / name).mkdir(exist_ok=True)
        configs[name] = out / name / "jgw.toml"
        configs[name].write_text(f"# made by ops/cityday (config/examples and the catalog)\n{text}")

    # the receiving systems: one inbox queue per (exchange, routing key) a route delivers to
    inboxes: dict[str, dict[str, str]] = {"cityhall": {}, "chukan": {}}
    bindings: dict[str, list[tuple[str, str, str]]] = {"cityhall": [], "chukan": []}
    for site, table in (("cityhall", routes), ("chukan", chukan_routes)):
        for name, r in table.items():
            sink = r["sink"]
            if sink.get("broker") != "local" or "exchange" not in sink:
                continue
            q = f"inbox.{sink['exchange']}.{sink['routing_key']}"
            if site == "chukan":  # a message keeps its id across the seal: count it on the city's route
                name = name.removesuffix("-in")
            if q in inboxes[site]:  # two routes to one receiving queue (2-④/1 and 2-④/2)
                inboxes[site][q] += "|" + name
            else:
                inboxes[site][q] = name
                bindings[site].append((q, sink["exchange"], sink["routing_key"]))
    for site in ("cityhall", "chukan"):
        pub = Publisher(brokers.view_url(site))

        def declare(ch: Any, site: str = site) -> None:
            for q, exchange, key in bindings[site]:
                ch.exchange_declare(exchange, exchange_type="direct", durable=True)
                ch.queue_declare(q, durable=True, arguments={"x-queue-type": "quorum"})
                ch.queue_bind(q, exchange, key)
        pub.declare(declare)
        pub.close()
    procs = {name: JgwProcess(configs[name], log_path=out / name / "jgw.log") for name in configs}
    return Sites(out, brokers, configs, procs, metrics, inboxes, ocr_sshd, atena_sshd,
                 (ep_port, ep_known, ep_clients), spool, store, [lgwan, back], proxy_server)


# ------------------------------------------------------------------------------------ the day

class Day:
    def __init__(self, sites: Sites, scale: Scale, seed: int) -> None:
        self.s, self.scale, self.seed = sites, scale, seed
        self.rng = random.Random(seed)
        self.ids = Ids(random.Random(seed + 1))
        self.ledger = Ledger()
        self.city_cfg = tomllib.loads(sites.configs["cityhall"].read_text(encoding="utf-8"))
        self.city = Publisher(sites.brokers.view_url("cityhall"))
        self.chukan = Publisher(sites.brokers.view_url("chukan"))
        self.arrivals: queue.Queue[Arrival] = queue.Queue()
        self.collectors = [Collector(sites.brokers.view_url(site), sorted(sites.inboxes[site]), self.arrivals)
                           for site in ("cityhall", "chukan")]
        self.route_of_queue = {q: r for site in sites.inboxes.values() for q, r in site.items()}
        self.files: dict[str, dict[bytes, tuple[bytes, str]]] = {r: {} for r in FILE_ROUTES}  # name → (bytes, expect)
        self.file_sent_at: dict[tuple[str, bytes], float] = {}
        self.file_got_at: dict[tuple[str, bytes], float] = {}
        self.faults: list[dict[str, Any]] = []
        self.batch: dict[str, float] = {}
        self.persons = [f"JM{i:06d}" for i in range(self.scale.ido_persons)]

    # -- sending

    def queue_of(self, route: str) -> str:
        q: str = self.city_cfg["routes"][route]["source"]["queue"]
        return q

    def send(self, route: str, body: bytes, *, key: str | None = None, corr: str | None = None,
             expect: str = "delivered", pub: Publisher | None = None, queue_name: str | None = None) -> str:
        mid = self.ids()
        at = (pub or self.city).publish(queue_name or self.queue_of(route), body, mid, key=key, corr=corr)
        self.ledger.sent[mid] = Sent(route, at, key, corr, expect)
        if key is not None and expect == "delivered":
            self.ledger.order[(route, key)].append(mid)
        return mid

    def record(self, *, pn: bool = False, encoding: str = "cp932") -> bytes:
        """A 住民記録-like record: fixed-length with its 個人番号 field when ``pn``; otherwise text with
        short serials only (a digit-dense record can hold a 12-digit run with a valid check digit by
        chance, which a forbidden route rightly quarantines)."""
        if pn:
            return synth.fixed_record(self.rng, encoding, synth.valid_personal_number(self.rng)).data
        return f"異動記録 連番={self.rng.randrange(10**6):06d} {synth.filler(self.rng, 40)}".encode(encoding)

    def text(self, words: str, *, pn: bool = False, encoding: str = "utf-8") -> bytes:
        body = f"{words} {synth.filler(self.rng, 24)}"
        if pn:
            body += f" 個人番号={synth.valid_personal_number(self.rng)}"
        return body.encode(encoding)

    # -- what each business system does in one tick

    def schedule(self) -> dict[int, list[tuple[str, int]]]:
        """Which events happen at which tick: office-hour flows spread over the office ticks."""
        plan: dict[int, list[tuple[str, int]]] = defaultdict(list)
        sc = self.scale
        office = list(OFFICE)
        for kind, count in (("ido", sc.ido_persons), ("honnin-kakunin", sc.honnin_kakunin),
                            ("shokai", sc.shokai), ("homusho", sc.homusho), ("shichoson", sc.shichoson),
                            ("sofusaki", sc.sofusaki), ("fukuhon", sc.fukuhon), ("ocr", sc.ocr_files)):
            for i in range(count):
                plan[self.rng.choice(office)].append((kind, i))
        for i in range(sc.fuhyo_in):  # other cities' 附票 arrive at any time of day
            plan[self.rng.randrange(TICKS)].append(("fuhyo-in", i))
        step = len(office) // max(sc.juki_files, 1)
        for i in range(sc.juki_files):
            plan[office[min(i * step + step - 1, len(office) - 1)]].append(("juki-file", i))
        step = len(office) // max(sc.fukuhon_files, 1)
        for i in range(sc.fukuhon_files):
            plan[office[min(i * step + step // 2, len(office) - 1)]].append(("fukuhon-file", i))
        plan[BATCH_TICK].append(("batch", 0))
        return plan

    def pn_mistakes(self) -> dict[str, set[int]]:
        """The few payloads that carry a 個人番号 on a route that must not (each must be quarantined)."""
        return {"fukuhon": {17, 242}, "sofusaki": {55}, "homusho": {9}, "kyotsu": {123}, "fukuhon-file": {1}}

    def ido(self, i: int, mistakes: dict[str, set[int]]) -> None:
        """One 異動 届出 (jimu:1-①): the 既存住基 updates the CS (1-⑥, 1-3 updates in order), 共通基盤
        (1-⑪), and by event 1-② (出生), 1-⑧/1-⑨ (転出/転入), 2-① or 2-④/2 (附票), 7-④ (特例転入)."""
        key = self.persons[i]
        event = self.rng.choices(["出生", "転居", "転出", "転入", "特例転入", "死亡"], [10, 40, 15, 15, 5, 15])[0]
        if event == "出生":
            corr = self.ids("KB")
            self.send("kojin-bango-request", self.record(), key=key, corr=corr)
        if event == "特例転入":  # the CS received the 転出証明書 from the other city (7-③): 7-④
            self.send("tokurei-tennyu-in", self.record(), key=key, queue_name="cs.tenshutsu-shomei")
        for _ in range(self.rng.randint(1, 3)):
            self.send("honnin-update", self.record(pn=True), key=key)
        if event == "転出":
            self.send("tenshutsu-shomei", self.record(), key=key)
        if event in ("転入", "特例転入"):
            self.send("tennyu-tsuchi", self.record(), key=key)
        if self.rng.random() < 0.5:
            self.send("fuhyo-send", self.record(), key=key)
        else:
            self.send("fuhyo-koseki-local", self.record())
        pn = i in mistakes["kyotsu"]
        self.send("kyotsu-atena", self.record(pn=pn), key=key, expect="quarantined" if pn else "delivered")
        # the 統合宛名 passes the 住民票関係情報 on to the 中間サーバ, keyed by 団体内統合宛名番号 (1-⑫/2)
        self.send("chukan-juminhyo", self.text(f"団体内統合宛名番号=A{i:06d} 住民票関係情報"), key=f"A{i:06d}")
        if event == "出生":  # the 統合宛名 asks for the 符号 (5-①): the pair data carries the 個人番号
            self.send("fugo-pair", self.text(f"宛名=A{i:06d} 符号取得", pn=True), corr=self.ids("SB"))

    def event(self, kind: str, i: int, mistakes: dict[str, set[int]]) -> None:
        if kind == "ido":
            self.ido(i, mistakes)
        elif kind == "honnin-kakunin":  # 住民票コード or 4情報, never the 個人番号
            self.send("honnin-kakunin", self.record(), corr=self.ids("HK"))
        elif kind == "shokai":
            self.send("shokai-request", self.text(f"照会 処理通番={i:06d}", encoding="cp932"), corr=self.ids("SH"))
        elif kind == "homusho":
            pn = i in mistakes["homusho"]
            self.send("homusho-import", self.record(pn=pn), key=f"F{i:05d}",
                      expect="quarantined" if pn else "delivered")
        elif kind == "shichoson":
            self.send("shichoson-tsuchi", self.record(), key=f"F{i:05d}")
        elif kind == "sofusaki":
            pn = i in mistakes["sofusaki"]
            self.send("sofusaki", self.record(pn=pn), expect="quarantined" if pn else "delivered")
        elif kind == "fukuhon":
            pn = i in mistakes["fukuhon"]
            self.send("fukuhon-register", self.text(f"宛名=A{i:06d} 副本", pn=pn), key=f"A{i % 97:06d}",
                      expect="quarantined" if pn else "delivered")
        elif kind == "fuhyo-in":  # 2-③ arrives at the CS over 住基ネット; the CS hands it to 戸籍 (2-④/1)
            self.send("fuhyo-koseki-from-cs", self.record(), queue_name="cs.fuhyo")
        elif kind == "ocr":
            self.ocr_file(i)
        elif kind == "juki-file":
            self.push_file("kizon-juki", "atena-renkei", i)
        elif kind == "fukuhon-file":
            self.push_file("kizon-gyomu", "fukuhon-update", i, pn=i in mistakes["fukuhon-file"])
        elif kind == "batch":
            self.seigo_batch()

    def ocr_file(self, i: int) -> None:
        name, body = ocr_file(self.rng, i)
        if i != 40:  # one 6 MiB file a day (two chunks and a manifest); the rest small
            body = body[:12288]
        outbox = os.fsencode(self.s.ocr.upload / "outbox")
        with open(os.path.join(outbox, name), "wb") as f:
            f.write(body)
        with open(os.path.join(outbox, name + b".end"), "wb"):
            pass  # the 終了ファイル
        self.files["ido-file-to-dc"][name] = (body, "delivered")
        self.file_sent_at[("ido-file-to-dc", name)] = time.monotonic()

    def push_file(self, account: str, route: str, i: int, pn: bool = False) -> None:
        port, known, clients = self.s.endpoint
        if route == "atena-renkei":
            name = f"juminhyo_{i:03d}.csv"
            data = "".join(f"{i:03d},{synth.valid_personal_number(self.rng)},シンセイ\n" for _ in range(200))
        else:
            name = f"fukuhon_{i:03d}.csv"
            data = f"宛名番号=A{i:06d} 副本\n" + "".join(f"A{n:06d},副本情報\n" for n in range(200))
            if pn:
                data += f"個人番号={synth.valid_personal_number(self.rng)}\n"
        local = self.s.out / "cityhall" / "to-push" / name
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data.encode("cp932"))
        batch = f"put {local} {name}.part\nrename {name}.part {name}\n"
        for _attempt in range(30):  # jgw may be restarting (kill -9 fault): try again, as staff would
            r = openssh_sftp(port, clients[account], known, batch, user=account)
            if r.returncode == 0:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"sftp push as {account} failed")
        self.files[route][name.encode()] = (data.encode("cp932"), "quarantined" if pn else "delivered")
        self.file_sent_at[(route, name.encode())] = time.monotonic()

    def extract(self) -> list[bytes]:
        """The 既存住基's 整合性確認 extract, made before the day (as the night job reads its database):
        every resident's 本人確認情報 with a synthetic 個人番号, ``batch_records`` records a message."""
        sc = self.scale
        rng = random.Random(self.seed + 8)
        bodies = []
        for start in range(0, sc.population, sc.batch_records):
            lines = []
            for n in range(start, min(start + sc.batch_records, sc.population)):
                first11 = f"{rng.randrange(10**11):011d}"
                number = first11 + str(synth.check_digit(first11))
                lines.append(f"{n:08d} {number} シンセイ\u3000タロウ 20260101 {rng.randrange(10**6):06d}\n")
            bodies.append("".join(lines).encode("cp932"))
        return bodies

    def seigo_batch(self) -> None:
        """整合性確認 (jimu:8-①/1): the extract published to the CS route, one message after another."""
        started = time.monotonic()
        ids = [self.send("seigo-kakunin", body, corr="SEIGO") for body in self.batch_bodies]
        self.batch = {"records": self.scale.population, "messages": len(ids), "started": started,
                      "published": time.monotonic(), "bytes": sum(map(len, self.batch_bodies))}
        self.batch_ids = ids

    # -- the receiving systems: record, and answer requests

    def absorb(self) -> None:
        while True:
            try:
                a = self.arrivals.get_nowait()
            except queue.Empty:
                return
            sent = self.ledger.sent.get(a.message_id)
            if sent is None or sent.route not in self.route_of_queue[a.queue].split("|"):
                self.ledger.wrong_place.append(a.message_id)
                continue
            if a.message_id in self.ledger.got:
                self.ledger.duplicates[sent.route] += 1
                continue
            self.ledger.got[a.message_id] = a.at
            if sent.key is not None:
                self.ledger.got_order[(sent.route, sent.key)].append(a.message_id)
            self.answer(sent, a)

    def answer(self, sent: Sent, a: Arrival) -> None:
        corr = a.corr
        r = sent.route
        if corr is not None:
            self.ledger.replies[r][corr] = a.message_id
        if r == "kojin-bango-request":  # the CS: 機構 generates the number (1-③/④, 住基ネット), 1-⑤ back
            self.send("kojin-bango-notice", self.record(pn=True), key=sent.key, corr=corr,
                      queue_name="cs.kojin-bango-notice")
        elif r == "honnin-kakunin":  # the CS (or 全国サーバ through it) answers: honnin:2-④
            self.send("honnin-kakunin-result", self.record(pn=True), corr=corr,
                      queue_name="cs.honnin-kakunin-result")
        elif r == "fugo-pair":  # the 中間サーバ: 処理通番 with the 個人番号, back to 統合宛名 (5-②/1)
            self.send("fugo-request-atena", self.text("処理通番 符号取得要求", pn=True), corr=corr,
                      pub=self.chukan, queue_name="chukan-server.fugo-request")
        elif r == "fugo-request-atena":  # 統合宛名 → CS (5-②/2)
            self.send("fugo-request-cs", self.text("符号取得要求", pn=True, encoding="cp932"), corr=corr,
                      queue_name="atena.fugo-request")
        elif r == "shokai-request":  # 統合宛名 → 中間サーバ (4-②/1)
            self.send("shokai-to-chukan", self.text("照会要求"), corr=corr, queue_name="atena.shokai")
        elif r == "shokai-to-chukan":  # the 中間サーバ: the answer from the other body (4-⑤/2)
            self.send("shokai-answer", self.text("回答情報"), corr=corr, pub=self.chukan,
                      queue_name="chukan-server.kaito")
        elif r == "shokai-answer":  # 統合宛名 → 既存業務 (4-⑥)
            self.send("shokai-result", self.text("回答結果", encoding="cp932"), corr=corr,
                      queue_name="atena.kaito")

    def poll_files(self) -> None:
        where = {"ido-file-to-dc": self.s.store, "atena-renkei": self.s.atena.upload / "juminhyo",
                 "fukuhon-update": self.s.atena.upload / "fukuhon"}
        now = time.monotonic()
        for route, directory in where.items():
            for name in listing(directory):
                self.file_got_at.setdefault((route, name), now)
        for name in listing(self.s.spool["kizon-gyomu"] / "quarantine"):
            self.file_got_at.setdefault(("fukuhon-update", name), now)

    # -- faults

    def fault_plan(self) -> dict[int, str]:
        ticks = sorted(self.rng.sample(range(OFFICE.start + 2, OFFICE.stop - 8, 6), 4))
        kinds = ["broker-restart", "jgw-kill", "lgwan-cut"]
        self.rng.shuffle(kinds)
        # the rotation last: it is a dozen staff commands (a minute or more on a loaded machine), and
        # the faults run one at a time, so the others would wait for it until the evening
        return dict(zip(ticks, [*kinds, "cert-rotation"], strict=True))

    def fault_guarded(self, kind: str, tick: int) -> None:
        try:
            self.fault(kind, tick)
        except BaseException as exc:  # re-raised by run(), in the day's thread
            self.fault_errors.append(exc)

    def fault(self, kind: str, tick: int) -> None:
        started = time.monotonic()
        detail = ""
        if kind == "broker-restart":  # the LGWAN peers' node (中間サーバ side and data centre)
            node = self.s.brokers.lgwan
            node.stop()
            node.start()
            detail = "RabbitMQ node of the 中間サーバ side and the data centre stopped and started"
        elif kind == "jgw-kill":
            proc = self.s.procs["cityhall"]
            proc.kill()
            proc.start(timeout=90)
            detail = "the city hall's jgw killed with SIGKILL, then started again"
        elif kind == "lgwan-cut":
            for p in self.s.proxies:
                p.disable()
            # the outage lasts 8 s of real time (the day's traffic goes on meanwhile in the main thread)
            self.outage_over.wait(8.0)
            for p in self.s.proxies:
                p.enable()
            detail = "LGWAN links cut (fault proxy) for 8 s, then restored"
        elif kind == "cert-rotation":
            detail = rotate_datacenter(self.s)
        self.faults.append({"fault": kind, "tick": tick, "at": clock(tick), "seconds": round(
            time.monotonic() - started, 1), "detail": detail})
        say(f"{clock(tick)} fault: {kind} ({detail})")

    def run(self) -> None:
        for c in self.collectors:
            c.start()
        self.batch_bodies = self.extract()
        plan = self.schedule()
        mistakes = self.pn_mistakes()
        faults = self.fault_plan()
        self.outage_over = threading.Event()  # never set: the outage runs its full length
        self.fault_threads: list[threading.Thread] = []
        self.fault_errors: list[BaseException] = []
        start = time.monotonic()
        for tick in range(TICKS):
            # a fault runs in its own thread (the business systems carry on meanwhile), one at a
            # time: one due while another is still running waits for it
            busy = any(t.is_alive() for t in self.fault_threads)
            due = [t for t in sorted(faults) if t <= tick]
            if due and not busy:
                kind = faults.pop(due[0])
                thread = threading.Thread(target=self.fault_guarded, args=(kind, tick), name=f"fault-{kind}")
                thread.start()
                self.fault_threads.append(thread)
            for kind, i in plan.get(tick, []):
                self.event(kind, i, mistakes)
            if tick % 18 == 0:
                say(f"{clock(tick)} sent {len(self.ledger.sent)} messages, "
                    f"{sum(len(v) for v in self.files.values())} files")
            deadline = start + (tick + 1) * self.scale.tick_seconds
            self.poll_files()
            while True:
                self.absorb()
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        for thread in self.fault_threads:
            thread.join()
        for t in sorted(faults):  # still due at midnight (the faults before took long): now
            self.fault_guarded(faults[t], TICKS - 1)
        if self.fault_errors:
            raise self.fault_errors[0]

    def settle(self, timeout: float) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
        """Wait until every message is delivered or set aside and every file is where it must end."""
        deadline = time.monotonic() + timeout
        quarantined: dict[str, list[dict[str, Any]]] = {}
        dead: dict[str, list[dict[str, Any]]] = {}
        next_note = time.monotonic() + 15
        while True:
            self.absorb()
            self.poll_files()
            missing = [m for m in self.ledger.sent if m not in self.ledger.got]
            files_missing = [(r, n) for r in ("ido-file-to-dc", "atena-renkei", "fukuhon-update")
                             for n in self.files[r] if (r, n) not in self.file_got_at]
            if time.monotonic() >= next_note:
                waiting = Counter(self.ledger.sent[m].route for m in missing)
                say(f"waiting for {len(missing)} messages ({', '.join(f'{r} {n}' for r, n in waiting.most_common(5))}"
                    f") and {len(files_missing)} files")
                next_note = time.monotonic() + 15
            if len(missing) <= 50 or time.monotonic() > deadline:
                quarantined = {s: set_aside(self.s.configs[s], "quarantine") for s in self.s.configs}
                dead = {s: set_aside(self.s.configs[s], "dlq") for s in self.s.configs}
                aside = {row["id"] for rows in (*quarantined.values(), *dead.values()) for row in rows}
                if (not (set(missing) - aside) and not files_missing) or time.monotonic() > deadline:
                    return quarantined, dead
            time.sleep(0.5)

    def stop(self) -> None:
        for c in self.collectors:
            c.stopping.set()
        for c in self.collectors:
            c.join(timeout=5)
        self.city.close()
        self.chukan.close()


def clock(tick: int) -> str:
    minutes = tick * 10
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def jgw(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


def jgw_ok(*args: str | Path) -> str:
    r = jgw(*args)
    if r.returncode != 0:
        raise RuntimeError(f"jgw {' '.join(map(str, args[:2]))} exited {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def set_aside(config: Path, verb: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(jgw_ok(verb, "list", config, "--json"))
    return rows


def rotate_datacenter(sites: Sites) -> str:
    """The certificate-rotation runbook at the data centre, all three slots, staff commands only
    (as tests/rotation): csr → the CA issues → install → peers learn the signing certificate →
    ``jgw certs rotate --check-brokers`` (switch + SIGHUP) → peers learn the encryption certificate."""
    from cryptography import x509

    from gateway.pki.files import pem_certificates, write_atomic
    from gateway.pki.generation import SLOT_BY_NAME

    cfg, peer = sites.configs["datacenter"], sites.configs["cityhall"]
    certs = sites.brokers.pki.nodes["datacenter"]
    issued = sites.out / "rotation" / "issued"
    usb = sites.out / "rotation" / "usb"
    issued.mkdir(parents=True, exist_ok=True)
    ca = sites.brokers.pki.ca
    for slot in ("tls-client", "signing", "encryption"):
        jgw_ok("pki", "csr", cfg, "--purpose", slot)
        request = x509.load_pem_x509_csr((certs / "staging" / f"{slot}.csr").read_bytes())
        cert = ca.issue_csr(request, SLOT_BY_NAME[slot].purpose, dt.datetime.now(dt.UTC), node_id="datacenter",
                            days=120)
        write_atomic(issued / f"{slot}.pem", pem_certificates([cert]))
    jgw_ok("certs", "install", cfg, *sorted(issued.iterdir()))
    jgw_ok("pki", "hybrid", cfg)  # the dev PKI has the pq-hybrid keys: re-sign their statement
    jgw_ok("certs", "export", cfg, "--staging", "--out", usb / "signing")
    jgw_ok("certs", "install", peer, "--peer", "datacenter", *sorted((usb / "signing").iterdir()))
    jgw_ok("reload", peer)
    before = scrape_metric(sites.metrics["datacenter"], "jgw_reloads_total", 0.0, result="success")
    out = jgw_ok("certs", "rotate", cfg, "--check-brokers")
    if "sent SIGHUP to jgw" not in out:
        raise RuntimeError("jgw certs rotate did not signal the daemon")
    deadline = time.monotonic() + 60
    while scrape_metric(sites.metrics["datacenter"], "jgw_reloads_total", 0.0, result="success") < before + 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the data centre's jgw did not reload after the rotation")
        time.sleep(0.2)
    jgw_ok("certs", "export", cfg, "--out", usb / "all")
    jgw_ok("certs", "install", peer, "--peer", "datacenter", *sorted((usb / "all").iterdir()))
    jgw_ok("reload", peer)
    status = json.loads(jgw_ok("certs", "status", cfg, "--json"))
    return f"data centre rotated to {status.get('live', '?')} (jgw certs rotate + SIGHUP)"


# ------------------------------------------------------------------------------------ the report

def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    v = sorted(values)

    def at(p: float) -> float:
        return round(v[min(len(v) - 1, int(p * len(v)))] * 1000, 1)
    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(v[-1] * 1000, 1)}


def route_rows(day: Day, quarantined: dict[str, list[dict[str, Any]]], dead: dict[str, list[dict[str, Any]]]
               ) -> dict[str, dict[str, Any]]:
    led = day.ledger
    q_ids = {row["id"]: row for rows in quarantined.values() for row in rows}
    d_ids = {row["id"]: row for rows in dead.values() for row in rows}
    cfg_routes = day.city_cfg["routes"]
    rows: dict[str, dict[str, Any]] = {}
    for route in cfg_routes:
        rows[route] = {"route": route, "seed": cfg_routes[route]["seed"], "site": "cityhall",
                       "sealed": "seal" in cfg_routes[route] or "open" in cfg_routes[route],
                       "personal_number": cfg_routes[route].get("personal_number", "forbidden"),
                       "ordered": "ordering" in cfg_routes[route] or bool(cfg_routes[route]["source"].get(
                           "in_order")),
                       "sent": 0, "delivered": 0, "quarantined": Counter(), "dead_lettered": 0,
                       "duplicates_suppressed": 0, "lost": 0, "order_violations": 0, "unexpected": 0,
                       "latencies": []}
    rows["ido-file-store"] = {**rows["ido-file-to-dc"], "route": "ido-file-store", "site": "datacenter",
                              "quarantined": Counter(), "latencies": [], "seed": "ido-ocr:⑤"}
    for mid, s in led.sent.items():
        row = rows[s.route]
        row["sent"] += 1
        if mid in led.got:
            row["delivered"] += 1
            row["latencies"].append(led.got[mid] - s.at)
            if s.expect != "delivered":
                row["unexpected"] += 1
        elif mid in q_ids:
            row["quarantined"][q_ids[mid]["reason"]] += 1
            if s.expect != "quarantined":
                row["unexpected"] += 1
        elif mid in d_ids:
            row["dead_lettered"] += 1
        else:
            row["lost"] += 1
    for route, dups in led.duplicates.items():
        rows[route]["duplicates_suppressed"] += dups
    for (route, key), ids in led.order.items():
        got = led.got_order.get((route, key), [])
        expected = [m for m in ids if m in led.got]
        if got != expected:
            rows[route]["order_violations"] += sum(1 for a, b in zip(got, expected, strict=False) if a != b) or 1
    # files: by name, byte-identical where they must end
    for route in ("ido-file-to-dc", "atena-renkei", "fukuhon-update"):
        where = {"ido-file-to-dc": day.s.store, "atena-renkei": day.s.atena.upload / "juminhyo",
                 "fukuhon-update": day.s.atena.upload / "fukuhon"}[route]
        targets = [route, "ido-file-store"] if route == "ido-file-to-dc" else [route]
        for name, (body, expect) in day.files[route].items():
            got_at = day.file_got_at.get((route, name))
            delivered = (where / os.fsdecode(name)).is_file() and (where / os.fsdecode(name)).read_bytes() == body
            quarantined_file = (route == "fukuhon-update" and
                                (day.s.spool["kizon-gyomu"] / "quarantine" / os.fsdecode(name)).is_file())
            for t in targets:
                row = rows[t]
                row["sent"] += 1
                if delivered:
                    row["delivered"] += 1
                    if got_at is not None:
                        row["latencies"].append(got_at - day.file_sent_at[(route, name)])
                    row["unexpected"] += expect != "delivered"
                elif quarantined_file:
                    row["quarantined"]["personal-number"] += 1
                    row["unexpected"] += expect != "quarantined"
                else:
                    row["lost"] += 1
    for row in rows.values():
        row["latency_ms"] = percentiles(row.pop("latencies"))
        row["quarantined"] = dict(row["quarantined"])
    return rows


def pair_rows(day: Day) -> dict[str, dict[str, int]]:
    led = day.ledger
    out = {}
    for name, (req, rep) in PAIRS.items():
        requests = {s.corr for m, s in led.sent.items() if s.route == req and s.expect == "delivered"}
        replied = set(led.replies.get(rep, {}))
        out[name] = {"requests": len(requests), "replies": len(requests & replied),
                     "unmatched": len(requests - replied), "stray_replies": len(replied - requests)}
    return out


def system_rows(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cat = default_catalog()
    out = {}
    for node, routes in SYSTEMS.items():
        agg: dict[str, Any] = {"system": cat.nodes[node].name,
                               "node": node, "routes": list(routes), "sent": 0, "delivered": 0,
                               "quarantined": 0, "dead_lettered": 0, "duplicates_suppressed": 0, "lost": 0,
                               "order_violations": 0}
        for r in routes:
            row = rows[r]
            for k in ("sent", "delivered", "dead_lettered", "duplicates_suppressed", "lost", "order_violations"):
                agg[k] += row[k]
            agg["quarantined"] += sum(row["quarantined"].values())
        out[node] = agg
    return out


def shinsei_refused(day: Day) -> dict[str, Any]:
    """A route for the 申請受付支援システム (shinsei:③) added to the day's city hall config: refused."""
    data = tomllib.loads(day.s.configs["cityhall"].read_text(encoding="utf-8"))
    data["routes"]["shinsei-attempt"] = {"seed": "shinsei:③", "personal_number": "forbidden",
                                         "payload_encoding": "cp932",
                                         "source": {"broker": "local", "queue": "shinsei.out"},
                                         "sink": {"broker": "local", "exchange": "cs.in", "routing_key": "x"}}
    path = day.s.out / "cityhall" / "with-shinsei.toml"
    path.write_text(dump_toml(data))
    r = jgw("check-config", path)
    return {"exit": r.returncode, "refused": r.returncode != 0 and "shinsei:③" in (r.stdout + r.stderr)}


def audit_verify(sites: Sites) -> dict[str, dict[str, Any]]:
    out = {}
    for name in sites.configs:
        state = sites.out / name / "state"
        r = jgw("audit", "verify", state / "audit", "--dedup", state / "dedup.sqlite3")
        out[name] = {"exit": r.returncode, "ok": r.returncode == 0, "summary": r.stdout.strip().splitlines()[-1:]}
    return out


def report(day: Day, quarantined: dict[str, list[dict[str, Any]]], dead: dict[str, list[dict[str, Any]]],
           elapsed: float) -> dict[str, Any]:
    rows = route_rows(day, quarantined, dead)
    batch = dict(day.batch)
    if batch:
        ids = day.batch_ids
        done = max(day.ledger.got[m] for m in ids if m in day.ledger.got) if any(
            m in day.ledger.got for m in ids) else None
        batch = {"records": batch["records"], "messages": batch["messages"], "bytes": batch["bytes"],
                 "publish_seconds": round(batch["published"] - batch["started"], 1),
                 "seconds": None if done is None else round(done - batch["started"], 1),
                 "delivered_messages": sum(1 for m in ids if m in day.ledger.got)}
    totals = {k: sum(r[k] for r in rows.values() if r["route"] != "ido-file-store")
              for k in ("sent", "delivered", "dead_lettered", "duplicates_suppressed", "lost", "order_violations",
                        "unexpected")}
    totals["quarantined"] = sum(sum(r["quarantined"].values()) for r in rows.values()
                                if r["route"] != "ido-file-store")
    pairs = pair_rows(day)
    totals["unmatched"] = sum(p["unmatched"] for p in pairs.values())
    totals["wrong_place"] = len(day.ledger.wrong_place)
    return {"seed": day.seed, "scale": day.scale.__dict__, "elapsed_seconds": round(elapsed, 1),
            "routes": rows, "systems": system_rows(rows), "pairs": pairs, "batch": batch,
            "faults": day.faults, "audit": audit_verify(day.s), "shinsei": shinsei_refused(day),
            "jgw_duplicates": {s: scrape_metric(day.s.metrics[s], "jgw_messages_total", 0.0, outcome="duplicate")
                               for s in ("chukan", "datacenter")},
            "collector_reconnects": sum(c.reconnects for c in day.collectors),
            "totals": totals}


def table(rep: dict[str, Any]) -> str:
    lines = []
    head = f"{'route':<22} {'seed':<14} {'sent':>7} {'deliv':>7} {'quar':>5} {'dlq':>4} {'dup':>4} " \
           f"{'lost':>4} {'order':>5} {'p50ms':>8} {'p99ms':>8}"
    lines += ["per route", head, "-" * len(head)]
    for r in rep["routes"].values():
        lat = r["latency_ms"]
        q = sum(r["quarantined"].values())
        lines.append(f"{r['route']:<22} {r['seed']:<14} {r['sent']:>7} {r['delivered']:>7} {q:>5} "
                     f"{r['dead_lettered']:>4} {r['duplicates_suppressed']:>4} {r['lost']:>4} "
                     f"{r['order_violations']:>5} {lat['p50'] if lat['p50'] is not None else '-':>8} "
                     f"{lat['p99'] if lat['p99'] is not None else '-':>8}")
    lines += ["", "per seed system"]
    for s in rep["systems"].values():
        lines.append(f"  {s['system']:<28} routes={len(s['routes']):>2} sent={s['sent']:>7} "
                     f"delivered={s['delivered']:>7} quarantined={s['quarantined']:>3} "
                     f"dead-lettered={s['dead_lettered']} lost={s['lost']} order-violations={s['order_violations']}")
    lines.append(f"  申請受付支援システム: a route for it refused by check-config: {rep['shinsei']['refused']}")
    lines += ["", "request/reply pairs (by correlation id)"]
    for name, p in rep["pairs"].items():
        lines.append(f"  {name:<32} requests={p['requests']:>4} replies={p['replies']:>4} "
                     f"unmatched={p['unmatched']}")
    b = rep["batch"]
    lines += ["", f"整合性確認 batch: {b.get('records')} records in {b.get('messages')} messages "
              f"({(b.get('bytes') or 0) / 1e6:.0f} MB), published in {b.get('publish_seconds')} s, all at the CS "
              f"{b.get('seconds')} s after the first was published"]
    lines += ["", "faults"] + [f"  {f['at']} {f['fault']}: {f['detail']} ({f['seconds']} s)" for f in rep["faults"]]
    lines += ["", "audit verify: " + ", ".join(f"{k}={'ok' if v['ok'] else 'FAILED'}" for k, v in
                                               rep["audit"].items())]
    return "\n".join(lines)


def summary(rep: dict[str, Any]) -> str:
    t = rep["totals"]
    return (f"cityday: sent={t['sent']} delivered={t['delivered']} quarantined={t['quarantined']} "
            f"dead-lettered={t['dead_lettered']} duplicates-suppressed={t['duplicates_suppressed']} "
            f"order-violations={t['order_violations']} unmatched={t['unmatched']} lost={t['lost']}")


def ok(rep: dict[str, Any]) -> bool:
    t = rep["totals"]
    return (t["lost"] == 0 and t["order_violations"] == 0 and t["unmatched"] == 0 and t["unexpected"] == 0
            and t["wrong_place"] == 0 and t["dead_lettered"] == 0 and all(a["ok"] for a in rep["audit"].values())
            and rep["shinsei"]["refused"])


# ------------------------------------------------------------------------------------ one run

def run(out: Path, *, seed: int = 20261203, scale: Scale | None = None, settle_timeout: float = 240.0
        ) -> dict[str, Any]:
    """Run the whole day under ``out`` and return the report (also written to ``out/report.json``)."""
    scale = scale or Scale()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.monotonic()
    say("starting two private RabbitMQ nodes (city hall; LGWAN peers: 中間サーバ side and data centre) "
        "and a dev PKI for three sites")
    brokers = Brokers.start(out / "brokers")
    servers: list[PrivateSshd] = []
    proxy_server = FaultProxyServer().start()
    sites: Sites | None = None
    day: Day | None = None
    try:
        sites = build_sites(out, brokers, servers, proxy_server)
        for name in ("datacenter", "chukan", "cityhall"):
            sites.procs[name].start(timeout=90)
        say("three jgw daemons running: " + ", ".join(
            f"{n} ({len(sites.procs[n].status()['routes'])} routes)" for n in sites.procs))
        day = Day(sites, scale, seed)
        day.run()
        say(f"day over: {len(day.ledger.sent)} messages and "
            f"{sum(len(v) for v in day.files.values())} files sent; waiting for the last to arrive")
        quarantined, dead = day.settle(settle_timeout)
        rep = report(day, quarantined, dead, time.monotonic() - started)
        (out / "report.json").write_text(json.dumps(rep, ensure_ascii=False, indent=1, default=str))
        return rep
    finally:
        if day is not None:
            day.stop()
        if sites is not None:
            for proc in sites.procs.values():
                with contextlib.suppress(Exception):
                    proc.stop(timeout=30)
        for server in servers:
            with contextlib.suppress(Exception):
                server.destroy()
        proxy_server.stop()
        brokers.destroy()
