"""Every dashboard query and every alert expression, run on a real Prometheus scraping a jgw endpoint.

INTERIM TARGET: until ``jgw run`` exists, the scrape target is ``gateway.metrics_http`` serving a
``gateway.metrics.Metrics`` registry that this test drives through the label series a busy node
would have (``InterimTarget``). To switch to the real daemon, replace the ``scrape_target`` fixture
with one that starts ``jgw run CONFIG`` (``node.metrics_listen = "127.0.0.1:<free port>"``) on a
private RabbitMQ node and whose ``drive()`` sends a few messages per call with ``jgw send`` —
including one that gets quarantined, one dead-lettered and a SIGHUP with a broken certificate —
so the same assertions then hold against the real process. Conditions the daemon cannot be made to
show quickly (an expiring certificate, a stale CRL) need test certificates made for it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from gateway.metrics import Metrics
from gateway.metrics_http import MetricsServer, serve_metrics
from gateway.testing.prom import PrometheusServer, PrometheusTools
from gateway.testing.rabbitnode import free_port
from tests.ops.loop_thread import LoopThread

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "jgw-dashboard.json"
RULES = REPO / "ops" / "prometheus" / "rules.yml"
RUNBOOKS = REPO / "ops" / "runbooks"
SCRAPES_NEEDED = 5  # rate(), increase() and changes() need at least two samples; take a margin


class ScrapeTarget(Protocol):
    address: str

    def drive(self) -> None: ...


class InterimTarget:
    """INTERIM: a Metrics registry behind the real endpoint, driven as a node with trouble would be."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.m = Metrics("interim-node")
        self.server: MetricsServer = loop.run(serve_metrics(self.m.registry, "127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.server.port}"
        m, now = self.m, time.time()
        for route in ("juki-out", "cs-in"):
            m.init_route(route)
        m.route_up.labels("juki-out").set(1)                       # cs-in stays down: JgwRouteDown
        m.broker_up.labels("local", "consume").set(1)
        m.broker_up.labels("hq", "publish").set(0)                 # JgwBrokerLinkDown
        m.broker_blocked.labels("hq").set(1)                       # JgwBrokerBlocked
        m.broker_blocked.labels("local").set(0)
        m.progress.set(now - 600)                                  # JgwNoProgress
        m.oldest_age.labels("juki-out").set(4000)                  # JgwQueueOldMessages, JgwQueueStuck
        m.queue_depth.labels("juki-out").set(120)
        m.in_flight.labels("juki-out").set(7)
        m.cert_expiry.labels("broker-client", "CN=gw1.example.lg.jp").set(now + 20 * 86400)
        m.cert_expiry.labels("signing", "CN=gw1-signer").set(now + 5 * 86400)
        m.cert_expiry.labels("trust-anchor", "CN=LGWAN test CA").set(now + 400 * 86400)
        m.crl_next_update.labels("CN=LGWAN test CA").set(now - 3600)  # JgwCrlNextUpdatePassed
        m.last_reload.set(now - 120)
        for result in ("success", "failure"):
            m.reloads.labels(result)
        for name, counter in (("quarantined", m.quarantined), ("dead_lettered", m.dead_lettered),
                              ("retries", m.retries)):
            counter.labels("juki-out", "policy" if name == "quarantined" else "delivery_limit")
        m.tls_failures.labels("hq")
        m.reconnects.labels("hq", "publish")

    def drive(self) -> None:
        """One tick of traffic and trouble; counters move so rate/increase/changes have something."""
        m = self.m
        m.received.labels("juki-out").inc(10)
        m.messages.labels("juki-out", "delivered").inc(8)
        m.messages.labels("juki-out", "quarantined").inc(1)
        m.messages.labels("juki-out", "dead_lettered").inc(1)
        m.quarantined.labels("juki-out", "policy").inc()
        m.dead_lettered.labels("juki-out", "delivery_limit").inc()
        m.retries.labels("juki-out", "delivery_limit").inc(2)
        m.dedup_hits.labels("juki-out").inc()
        m.republished.labels("juki-out").inc()
        for latency in (0.004, 0.02, 0.3):
            m.e2e_latency.labels("juki-out").observe(latency)
        for stage in ("seal", "policy", "confirm"):
            m.stage_latency.labels("juki-out", stage).observe(0.0007)
        m.reloads.labels("failure").inc()
        m.reloads.labels("success").inc()
        m.tls_failures.labels("hq").inc()
        m.reconnects.labels("hq", "publish").inc()
        m.start_time.set(time.time())                              # a restart per tick: JgwRestart*

    def close(self) -> None:
        self.loop.run(self.server.close())


@pytest.fixture
def scrape_target() -> Iterator[ScrapeTarget]:
    loop = LoopThread()
    target = InterimTarget(loop)
    yield target
    target.close()
    loop.stop()


@pytest.fixture
def prometheus(prom_tools: PrometheusTools, scrape_target: ScrapeTarget,
               tmp_path: Path) -> Iterator[PrometheusServer]:
    dead = f"127.0.0.1:{free_port()}"  # a node that is down: JgwDown
    server = PrometheusServer(prom_tools.prometheus, tmp_path / "prometheus", [scrape_target.address, dead],
                              rule_files=[RULES]).start()
    yield server
    server.stop()


def wait_for_scrapes(prom: PrometheusServer, target: ScrapeTarget, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    query = f'count_over_time(jgw_build_info{{instance="{target.address}"}}[5m])'
    while time.monotonic() < deadline:
        target.drive()
        got = prom.query(query)
        enough = bool(got) and float(got[0]["value"][1]) >= SCRAPES_NEEDED
        if enough and prom.query('ALERTS{alertname="JgwRestarted"}'):
            return
        time.sleep(1.0)
    pytest.fail(f"Prometheus did not scrape {target.address} {SCRAPES_NEEDED} times in {timeout}s:\n"
                f"{prom.log_tail()}")


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


def test_every_query_and_alert_returns_data(prometheus: PrometheusServer,
                                            scrape_target: ScrapeTarget) -> None:
    """Real Prometheus, real scrapes: each panel, variable, annotation and alert expression has results."""
    wait_for_scrapes(prometheus, scrape_target)
    doc = json.loads(DASHBOARD.read_text())
    instance, route = scrape_target.address, "juki-out"

    # template variables: the values Grafana would offer
    nodes = prometheus.api("label/instance/values", **{"match[]": "jgw_build_info"})
    assert instance in nodes
    routes = prometheus.api("label/route/values", **{"match[]": f'jgw_route_up{{instance="{instance}"}}'})
    assert set(routes) == {"juki-out", "cs-in"}
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["route"]["definition"].startswith("label_values(jgw_route_up")

    empty, broken = [], []
    for where, expr in dashboard_queries(doc):
        try:
            if not prometheus.query(substitute(expr, instance, route)):
                empty.append(where)
        except ValueError as exc:
            broken.append(f"{where}: {exc}")
    assert broken == [] and empty == [], f"broken: {broken}\nempty: {empty}"

    groups = prometheus.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    alerts = [r for r in rules if r["type"] == "alerting"]
    assert len(alerts) >= 15
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        if rule["type"] == "recording":
            assert prometheus.query(rule["name"]), f"recording rule {rule['name']} has no data"
    en, ja = anchors(RUNBOOKS / "alerts.en.md"), anchors(RUNBOOKS / "alerts.ja.md")
    for rule in alerts:
        name = rule["name"]
        assert prometheus.query(rule["query"]), f"alert {name}: expression returned no data"
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        ann = rule["annotations"]
        assert ann["summary"] and ann["summary_ja"] and ann["description"], name
        anchor = ann["runbook_url"].rsplit("#", 1)[1]
        assert anchor == name.lower() and anchor in en and anchor in ja, f"{name}: runbook section missing"

    firing = {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]}
    assert {"JgwDown", "JgwRestarted", "JgwReloadFailed", "JgwMessagesQuarantined"} <= firing
