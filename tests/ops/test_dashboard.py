"""Every dashboard query and every alert expression, run on a real Prometheus scraping a real ``jgw run``.

The node (``RealNode``) is a city hall relaying on the machine's RabbitMQ and, over mTLS with
EXTERNAL login, to a private RabbitMQ node playing the data centre; its certificates come from
``init_dev``. Before the queries run, the test makes every condition the dashboard and the alerts
are about really happen, so the expressions return data because the daemon exported it:

- messages delivered (a local route, and a sealed route to the data centre); a synthetic 個人番号
  quarantined by the policy stage and a message dead-lettered after a retry (the data centre's
  queue was not bound yet), twice each;
- a broker entry whose TLS name does not match the broker's certificate: every handshake fails,
  the link stays down and its route is down;
- a reload (SIGHUP) that works, and, once the CRL has lapsed, one that is refused;
- the data centre's broker raises a memory alarm: it blocks our publishing, and messages whose
  AMQP timestamp says they were sent two hours ago wait in hand (oldest-message age > 1 h);
- the node's own certificate generation expires in 5 days, its peer's in 20 (made that way with
  ``stage_generation(days=5)`` + ``jgw certs rotate``, and ``init_dev(days=20)``);
- a CRL (``jgw pki crl-dev --days``, installed with ``jgw certs install --crl``) lapses while the
  node runs (and the next reload is refused for it);
- the node is restarted three times (SIGTERM, start), as a crash loop under systemd would;
- Prometheus also scrapes an address where nothing listens (a node that is down).

Some alerts cannot be made true here and are checked for parsing and for their input only
(``PARSE_AND_INPUT_ONLY``): ``JgwNoProgress`` needs two minutes in which the relay neither settles a
message nor finds its queues empty; the scale-out alerts need several instances on a RabbitMQ
cluster (tests/cluster has them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.cli import main as jgw
from gateway.pki.devinit import DevPki, init_dev, stage_generation
from gateway.pki.layout import CertsDir
from tests.lab import synth
from tests.lab.harness import Amqp, Names, NodeFactory, purge_set_aside, wait_for
from tests.lab.prom import PrometheusServer, PrometheusTools
from tests.lab.rabbitnode import PrivateNode, TlsListener, free_port
from tests.ops.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "jgw-dashboard.json"
RULES = REPO / "ops" / "prometheus" / "rules.yml"
RUNBOOKS = REPO / "ops" / "runbooks"
SCRAPES_NEEDED = 5  # rate(), increase() and changes() need at least two samples; take a margin
RESTARTS = 3
CRL_SECONDS = 30.0  # lifetime of the CRL installed during the test (time for the steps under it on a
#                    loaded machine); it lapses before the queries
OLD = 2 * 3600  # age, by their AMQP timestamp, of the messages held behind the blocked broker

#: Alerts whose condition cannot be produced here, with the sub-expression that must still have data.
PARSE_AND_INPUT_ONLY: dict[str, tuple[str | None, str]] = {
    "JgwNoProgress": ("time() - jgw_last_progress_timestamp_seconds",
                      "needs 2 minutes without relay progress (+1 minute `for`); a test of that length "
                      "would be the slowest in the suite, and test_quiet_node_keeps_reporting_progress "
                      "checks the input does not go stale on a healthy quiet node"),
    "JgwFileWaitingTooLong": ("jgw_file_oldest_waiting_age_seconds",
                              "needs a file waiting 30 minutes; promtool's unit test covers the threshold"),
    "JgwSftpHostKeyRefused": ("jgw_sftp_host_key_failures_total",
                              "needs a real sshd presenting another key (tests/files/test_route_faults.py does)"),
    "JgwRouteNoActiveConsumer": ("jgw_route_active",
                                 "needs every instance of a route standing by while messages wait; "
                                 "tests/cluster/test_failover.py checks the gauge on a real cluster"),
    "JgwQueueTooFewReplicas": (None,
                               "needs a RabbitMQ cluster with its management API (this node has neither, so "
                               "the input has no series here); tests/cluster/test_failover.py scrapes "
                               "jgw_queue_members_online from instances on a real 3-node cluster"),
}


#: Panels whose input needs a RabbitMQ cluster with its management API: parsed by Prometheus here.
NEEDS_CLUSTER: dict[str, str] = {
    "Queue members online / expected": "jgw_queue_members_* come from the management API, which this node's "
                                       "broker has not; tests/cluster/test_failover.py scrapes them on a real "
                                       "3-node cluster",
}


def metrics_of(address: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): float(s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric(address: str, name: str, **labels: str) -> float | None:
    for (n, lbls), value in metrics_of(address).items():
        if n == name and all((k, v) in lbls for k, v in labels.items()):
            return value
    return None


class RealNode:
    """The city hall's jgw with every condition of the dashboard made real (see the module doc)."""

    def __init__(self, base: Path, names: Names, node_config: NodeFactory, main_broker: str) -> None:
        self.base, self.names, self.node_config, self.main_broker = base, names, node_config, main_broker
        self.address = f"127.0.0.1:{free_port()}"
        self.daemon: Daemon | None = None
        self.set_aside: list[str] = []
        self.crl_lapses = 0.0
        self.pki: DevPki = init_dev(base / "pki", ["cityhall", "datacenter"], dt.datetime.now(dt.UTC), days=20)
        self.dc = PrivateNode(base=base / "brokers", name=f"jgwdash{names.prefix[2:]}",
                              tls=TlsListener(cacert=self.pki.broker_ca, cert=self.pki.broker_cert,
                                              key=self.pki.broker_key))
        p = names.prefix
        self.routes = {"juki": names.route("juki-out"), "partner": names.route("fuhyo-partner"),
                       "local": names.route("kojin-local"), "files": names.route("ocr-files")}
        self.queues = {"juki": f"{p}.juki", "partner": f"{p}.partner", "local": f"{p}.kojin"}
        self.dc_queue = f"{p}.dc"
        self.config = Path()

    def prepare(self, prom: PrometheusServer) -> None:
        """Boot the data centre's broker and, meanwhile, the certificates, the config and Prometheus."""
        failed: list[BaseException] = []
        boot = threading.Thread(target=self._boot_dc, args=(failed,), name="boot-dc")
        boot.start()
        # the node's own generation is short-lived (5 days); the peer's stays at 20 days
        certs = self.pki.nodes["cityhall"]
        stage_generation(CertsDir(certs).staging, "cityhall", self.pki.ca, dt.datetime.now(dt.UTC), days=5)
        assert jgw(["certs", "rotate", "--certs-dir", str(certs), "--node", "cityhall", "--no-signal"]) == 0
        p, tls_port = self.names.prefix, self.dc.tls.port  # type: ignore[union-attr]
        brokers = {
            "local": {"urls": [self.main_broker]},
            "dc": {"urls": [f"amqps://localhost:{tls_port}/%2F"], "reconnect_max": "2s",
                   "tls": {"server_hostname": "localhost"}},
            # the right port, the wrong name: the broker's certificate is for localhost
            "partner": {"urls": [f"amqps://127.0.0.1:{tls_port}/%2F"], "reconnect_max": "1s",
                        "tls": {"server_hostname": "partner-gw.example.lg.jp"}},
        }
        routes = {
            self.routes["juki"]: {
                "personal_number": "forbidden", "payload_encoding": "utf-8", "retry": ["1s"],
                "source": {"broker": "local", "queue": self.queues["juki"]},
                "sink": {"broker": "dc", "exchange": "jgw.in", "exchange_type": "direct", "routing_key": p},
                "seal": {"recipients": ["datacenter"]}},
            self.routes["partner"]: {
                "personal_number": "allowed",
                "source": {"broker": "local", "queue": self.queues["partner"]},
                "sink": {"broker": "partner", "exchange": "jgw.in", "exchange_type": "direct",
                         "routing_key": p}},
            self.routes["local"]: {
                "personal_number": "allowed",
                "source": {"broker": "local", "queue": self.queues["local"]},
                "sink": {"broker": "local", "exchange": self.names.x("cs"), "exchange_type": "direct",
                         "routing_key": "k", "queue": self.names.q("cs")}},
        }
        # a file route whose SFTP server is not there (a closed port): its session is down
        from tests.lab.sshd import keygen, known_hosts_line

        sftp_dir = self.base / "sftp"
        sftp_dir.mkdir()
        host_key, ocr_port = keygen(sftp_dir / "host_ed25519"), free_port()
        keygen(sftp_dir / "jgw_ed25519")
        (sftp_dir / "known_hosts").write_text(known_hosts_line("127.0.0.1", ocr_port, host_key))
        sftp = {"ocr": {"host": "127.0.0.1", "port": ocr_port, "user": "jgw",
                        "client_key": str(sftp_dir / "jgw_ed25519"), "known_hosts": str(sftp_dir / "known_hosts"),
                        "connect_timeout": "1s"}}
        (self.base / "ocr-store").mkdir()
        routes[self.routes["files"]] = {
            "personal_number": "allowed",
            "source": {"kind": "sftp", "server": "ocr", "directory": "/outbox", "completion": {"rule": "trigger"}},
            "sink": {"kind": "directory", "directory": str(self.base / "ocr-store")}}
        self.config = self.node_config(routes, brokers=brokers, node_id="cityhall", certs_dir=str(certs),
                                       metrics_listen=self.address, shutdown_grace="3s", tables={"sftp": sftp})
        prom.start()
        boot.join()
        if failed:
            raise failed[0]

    def _boot_dc(self, failed: list[BaseException]) -> None:
        try:
            self.dc.start()
            # EXTERNAL login: the user is the CN of the node's TLS client certificate
            self.dc.ctl("add_user", "cityhall", "unused-password")
            self.dc.ctl("clear_password", "cityhall")
            self.dc.ctl("set_permissions", "-p", "/", "cityhall", ".*", ".*", ".*")
        except BaseException as exc:  # raised again by prepare()
            failed.append(exc)

    # ------------------------------------------------------------ the story

    def start(self) -> None:
        self.daemon = Daemon(self.config, self.base / "jgw.log")
        wait_for(lambda: self._scraped_ok(), timeout=60, what="jgw metrics endpoint")

    def _scraped_ok(self) -> bool:
        assert self.daemon is not None
        if not self.daemon.alive():
            raise AssertionError(f"jgw exited:\n{self.daemon.log()[-3000:]}")
        try:
            return metric(self.address, "jgw_route_up", route=self.routes["local"]) == 1
        except OSError:
            return False

    def restart_loop(self, prom: PrometheusServer) -> None:
        """Start, and restart RESTARTS times; Prometheus sees each process before the next one."""
        seen = f'changes(jgw_start_time_seconds{{instance="{self.address}"}}[10m])'
        for n in range(RESTARTS + 1):
            self.start()
            wait_for(lambda n=n: _value(prom, seen) == n if n else _value(prom, seen) is not None,
                     timeout=30, what=f"Prometheus scraping process {n + 1}")
            if n < RESTARTS:
                assert self.daemon is not None and self.daemon.stop(30) == 0

    def _install_short_crl(self) -> None:
        """A CRL that lapses while the node runs, installed the way staff install a CRL."""
        ca = self.pki.directory / "ca"
        assert jgw(["pki", "crl-dev", str(ca), "--days", str(CRL_SECONDS / 86400)]) == 0
        self.crl_lapses = time.time() + CRL_SECONDS
        assert jgw(["certs", "install", str(self.config), "--crl", str(ca / "crl.pem")]) == 0

    def make_trouble(self, prom: PrometheusServer) -> None:
        """Everything the dashboard shows, done to the last process (see the module doc).

        Quarantines and dead letters come in two rounds with a scrape between: increase() cannot see
        the first event of a series that did not exist before it, and the rules' other branch needs
        a Prometheus that has watched the node for 15 minutes, not one started by this test."""
        route, addr = self.routes["juki"], self.address
        series = f'{{instance="{addr}", route="{route}"}}'
        with Amqp(self.main_broker) as amqp:
            number = synth.valid_personal_number(random.Random(6))
            for n in (1, 2):
                # nothing is bound at the data centre yet: unroutable, retried once after 1 s, dead-lettered
                self.set_aside += amqp.publish(self.queues["juki"], [f"shokai-{n}".encode()])
                # a 個人番号 on a route that must not carry one: quarantined by the policy stage
                self.set_aside += amqp.publish(self.queues["juki"], [f"氏名=テスト;番号={number}".encode()])
                for name in ("jgw_dead_lettered_messages_total", "jgw_quarantined_messages_total"):
                    self.wait(lambda name=name, n=n: metric(addr, name, route=route) == n, f"{name} = {n}")
                    self.wait(lambda name=name, n=n: _value(prom, name + series) == n,
                              f"Prometheus seeing {name} = {n}")
            # the data centre binds its queue: sealed messages flow
            with Amqp(self.dc.url) as dc:
                dc.declare_queue(self.dc_queue)
                dc.bind(self.dc_queue, "jgw.in", self.names.prefix)
                sent = amqp.publish(self.queues["juki"], [b"ido-file"] * 20)
                # generous: this is not a latency test, and CI runs it on a loaded machine
                got = dc.drain(self.dc_queue, expect=len(sent), timeout=90)
                self._all_delivered(sent, got)
            # a CRL that lapses in CRL_SECONDS is installed, and a reload (same client certificate, so
            # the unreachable partner is not probed) puts it in use
            assert self.daemon is not None
            self._install_short_crl()
            self.daemon.signal(signal.SIGHUP)
            self.wait(lambda: metric(addr, "jgw_reloads_total", result="success") == 1, "a reload")
            # the data centre's broker blocks publishing; old messages wait behind it (sealed while the
            # CRL is still current)
            self.dc.ctl("set_vm_memory_high_watermark", "0.000001")
            self._publish_old(amqp, 3)
            self.wait(lambda: metric(addr, "jgw_broker_blocked", broker="dc") == 1, "blocked")
            self.wait(lambda: (metric(addr, "jgw_queue_oldest_message_age_seconds", route=route) or 0) > 3600,
                      "oldest-message age over an hour")
            assert time.time() < self.crl_lapses, "too slow: the CRL lapsed before the old messages were sealed"
        self.wait(lambda: time.time() > self.crl_lapses + 1, "the CRL to lapse", timeout=CRL_SECONDS + 30)
        # nobody installed a fresh CRL: the next reload is refused, jgw keeps what it has
        self.daemon.signal(signal.SIGHUP)
        self.wait(lambda: metric(addr, "jgw_reloads_total", result="failure") == 1, "a refused reload")

    def _all_delivered(self, sent: list[str], got: list[Any]) -> None:
        """Every id arrived once; if not, what jgw counted for the route and its log, to tell a slow
        hop from a lost message."""
        ids = sorted(m.message_id for m in got)
        if ids == sorted(sent):
            return
        route = self.routes["juki"]
        counts = {name: metric(self.address, name, route=route) for name in (
            "jgw_received_messages_total", "jgw_messages_total", "jgw_retries_total", "jgw_in_flight_messages",
            "jgw_dead_lettered_messages_total", "jgw_quarantined_messages_total")}
        missing, extra = sorted(set(sent) - set(ids)), len(ids) - len(set(ids))
        self.wait(lambda: False, f"not delivered: {missing}; duplicates: {extra}; jgw counted {counts}",
                  timeout=0.1)

    def wait(self, predicate: Any, what: str, timeout: float = 30.0) -> None:
        """wait_for, with the end of jgw's log when it times out."""
        try:
            wait_for(predicate, timeout=timeout, what=what)
        except TimeoutError as exc:
            log = "\n".join(line for line in (self.daemon.log() if self.daemon is not None else "").splitlines()
                            if "broker=partner" not in line)[-6000:]
            raise AssertionError(f"{exc}\n--- jgw log ---\n{log}") from None

    def _publish_old(self, amqp: Amqp, n: int) -> None:
        ch = amqp.conn.channel()
        ch.confirm_delivery()
        for i in range(n):
            props = pika.BasicProperties(message_id=f"{self.names.prefix}-old-{i}", delivery_mode=2,
                                         timestamp=int(time.time()) - OLD)
            ch.basic_publish("", self.queues["juki"], b"waiting since two hours", props, mandatory=True)
        ch.close()

    def drive(self) -> None:
        """A little traffic per tick on the healthy local route, so throughput is not flat zero."""
        with Amqp(self.main_broker) as amqp:
            amqp.publish(self.queues["local"], [b"kojin"] * 5)

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):  # unblock first: the daemon then stops at once
                self.dc.ctl("set_vm_memory_high_watermark", "0.4", timeout=10)
            if self.daemon is not None:
                self.daemon.stop(30)
        finally:
            self.dc.destroy()
            purge_set_aside(self.main_broker, set(self.set_aside))


def _value(prom: PrometheusServer, expr: str) -> float | None:
    got = prom.query(expr)
    return float(got[0]["value"][1]) if got else None


@pytest.fixture
def prometheus_and_node(prom_tools: PrometheusTools, tmp_path: Path, names: Names, node_config: NodeFactory,
                        main_broker: str) -> Iterator[tuple[PrometheusServer, RealNode]]:
    node = RealNode(tmp_path, names, node_config, main_broker)
    dead = f"127.0.0.1:{free_port()}"  # a node that is down: JgwDown
    server = PrometheusServer(prom_tools.prometheus, tmp_path / "prometheus", [node.address, dead],
                              rule_files=[RULES])
    try:
        node.prepare(server)
        node.restart_loop(server)
        node.make_trouble(server)
        yield server, node
    finally:
        server.stop()
        node.close()


def substitute(expr: str, instance: str, route: str) -> str:
    """Grafana's variables as Grafana expands them for one node and one route: regex-escaped, with the
    backslashes doubled inside the PromQL string."""
    def esc(value: str) -> str:
        return re.escape(value).replace("\\", "\\\\")

    return (expr.replace("$__rate_interval", "1m").replace("$instance", esc(instance))
            .replace("$route", esc(route)))


def dashboard_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in doc["panels"]:
        for t in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} {t['refId']}", t["expr"]))
    for ann in doc["annotations"]["list"]:
        out.append((f"annotation {ann['name']!r}", ann["expr"]))
    return out


def anchors(path: Path) -> set[str]:
    """GitHub-style anchors of the markdown headings in a runbook."""
    heads = re.findall(r"^#+\s+(.+?)\s*$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in heads}


def test_dashboard_json_is_generated() -> None:
    """The committed JSON is what build_dashboard.py writes (edit the script, not the JSON)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboard", REPO / "ops/grafana/build_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text() == module.render()


def alert_rules(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    return [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]


def missing_data(prometheus: PrometheusServer, queries: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(expressions Prometheus refused, expressions that returned nothing)."""
    empty, broken = [], []
    for where, expr in queries:
        try:
            if not prometheus.query(expr):
                empty.append(where)
        except ValueError as exc:
            broken.append(f"{where}: {exc}")
    return broken, empty


@pytest.mark.slow
def test_every_query_and_alert_returns_data(prometheus_and_node: tuple[PrometheusServer, RealNode]) -> None:
    """Real Prometheus, real scrapes of a real jgw: each panel, variable, annotation and alert expression
    has results, because the node really was in each condition (module doc)."""
    prometheus, node = prometheus_and_node
    doc = json.loads(DASHBOARD.read_text())
    instance, route = node.address, node.routes["juki"]
    panels = [(where, substitute(expr, instance, route)) for where, expr in dashboard_queries(doc)
              if not any(f"panel {title!r}" in where for title in NEEDS_CLUSTER)]
    cluster_only = [(where, substitute(expr, instance, route)) for where, expr in dashboard_queries(doc)
                    if any(f"panel {title!r}" in where for title in NEEDS_CLUSTER)]
    assert cluster_only, "NEEDS_CLUSTER names a panel the dashboard does not have"
    assert missing_data(prometheus, cluster_only)[0] == [], "a cluster-only panel's query does not parse"
    alerts = [r for r in alert_rules(prometheus) if r["type"] == "alerting"]
    assert len(alerts) >= 15
    checks = panels + [(f"alert {r['name']}", r["query"]) for r in alerts
                       if r["name"] not in PARSE_AND_INPUT_ONLY]
    scrapes = f'count_over_time(jgw_build_info{{instance="{instance}"}}[5m])'

    deadline = time.monotonic() + 90
    while True:  # scrapes and rule evaluations catch up with what was done; traffic goes on meanwhile
        node.drive()
        broken, empty = missing_data(prometheus, checks)
        if (not broken and not empty and (_value(prometheus, scrapes) or 0) >= SCRAPES_NEEDED) \
                or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert broken == [] and empty == [], f"broken: {broken}\nempty: {empty}\n{prometheus.log_tail()}"

    # template variables: the values Grafana would offer
    nodes = prometheus.api("label/instance/values", **{"match[]": "jgw_build_info"})
    assert instance in nodes
    routes = prometheus.api("label/route/values", **{"match[]": f'jgw_route_up{{instance="{instance}"}}'})
    assert set(routes) == set(node.routes.values())
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["route"]["definition"].startswith("label_values(jgw_route_up")

    rules = alert_rules(prometheus)
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        if rule["type"] == "recording":
            assert prometheus.query(rule["name"]), f"recording rule {rule['name']} has no data"
    en, ja = anchors(RUNBOOKS / "alerts.en.md"), anchors(RUNBOOKS / "alerts.ja.md")
    for rule in (r for r in rules if r["type"] == "alerting"):
        name = rule["name"]
        if name in PARSE_AND_INPUT_ONLY:
            part, _why = PARSE_AND_INPUT_ONLY[name]
            if part is not None:  # None: parsed by Prometheus only; its input is checked elsewhere (why)
                assert part in rule["query"], f"{name}: PARSE_AND_INPUT_ONLY names a part it does not have"
                assert prometheus.query(part), f"alert {name}: its input has no data"
        else:
            assert prometheus.query(rule["query"]), f"alert {name}: expression returned no data"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        ann = rule["annotations"]
        assert ann["summary"] and ann["summary_ja"] and ann["description"], name
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower() and anchor in en and anchor in ja, f"{name}: runbook section missing"

    expected = {"JgwDown", "JgwRestarted", "JgwRestartLoop", "JgwReloadFailed", "JgwMessagesQuarantined",
                "JgwMessagesDeadLettered", "JgwTlsHandshakeFailures", "JgwBrokerBlocked", "JgwBrokerLinkDown",
                "JgwCrlNextUpdatePassed", "JgwCertificateExpiresIn7Days"}
    deadline = time.monotonic() + 30  # rules are evaluated on their own interval, after the queries above
    while True:
        active = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]}  # pending or firing
        if expected <= active or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert expected <= active, f"not pending or firing: {sorted(expected - active)}"


def test_quiet_node_keeps_reporting_progress(node_config: NodeFactory, names: Names, tmp_path: Path) -> None:
    """A node with nothing to do is not stalled: jgw_last_progress_timestamp_seconds keeps moving while
    the route consumes an empty queue, so JgwNoProgress stays quiet through a night without traffic."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    route = {"personal_number": "allowed", "source": {"broker": "local", "queue": f"{names.prefix}.src"},
             "sink": {"broker": "local", "exchange": names.x("out"), "exchange_type": "direct",
                      "routing_key": "k"}}
    cfg = node_config({names.route("quiet"): route}, metrics_listen=address)
    daemon = Daemon(cfg, tmp_path / "quiet.log")
    try:
        wait_for(lambda: _safe_metric(address, "jgw_route_up") == 1, timeout=60, what="route up")
        first = metric(address, "jgw_last_progress_timestamp_seconds")
        assert first is not None
        wait_for(lambda: (metric(address, "jgw_last_progress_timestamp_seconds") or 0) > first + 3,
                 timeout=15, what="progress while idle")
        assert metric(address, "jgw_received_messages_total") == 0, "no traffic at all"
    finally:
        assert daemon.stop(30) == 0


def _safe_metric(address: str, name: str, **labels: str) -> float | None:
    try:
        return metric(address, name, **labels)
    except OSError:
        return None
