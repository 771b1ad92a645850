"""Writes jgw-dashboard.json: the Grafana dashboard for jgw nodes, generated so panels stay uniform.

Run ``python ops/grafana/build_dashboard.py`` after changing a panel and commit both files;
``tests/ops/test_dashboard.py`` checks that the JSON is current and that every query returns data
from a real Prometheus scraping jgw. Import the JSON in Grafana (Dashboards → Import) and pick the
Prometheus data source. Targets Grafana 9 and later (schemaVersion 37).

Security: writes one file; the queries use route, broker and certificate subject labels only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("jgw-dashboard.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
ROUTE = 'instance=~"$instance", route=~"$route"'
RI = "$__rate_interval"

_next_id = 0


def _id() -> int:
    global _next_id
    _next_id += 1
    return _next_id


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                         "refId": "ABCDEFGHIJ"[0], "format": fmt}
    if instant:
        t["instant"] = True
        t["range"] = False
    return t


def _targets(exprs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for i, t in enumerate(exprs):
        t["refId"] = "ABCDEFGHIJ"[i]
    return exprs


def panel(kind: str, title: str, exprs: list[dict[str, Any]], x: int, y: int, w: int, h: int, *,
          unit: str = "short", description: str = "",
          thresholds: Sequence[tuple[float | None, str]] | None = None,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    p: dict[str, Any] = {
        "id": _id(), "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": _targets(exprs),
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {},
    }
    if kind == "stat":
        p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "none", "textMode": "auto"}
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                  "showPoints": "never"}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                   "calcs": ["lastNotNull", "max"]},
                        "tooltip": {"mode": "multi", "sort": "desc"}}
    if extra:
        p.update(extra)
    return p


def row(title: str, y: int, *, repeat: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"id": _id(), "type": "row", "title": title, "collapsed": False,
                         "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}
    if repeat:
        r["repeat"] = repeat
    return r


def overview(y: int) -> list[dict[str, Any]]:
    red_if_any = [(None, "green"), (1, "red")]
    return [
        row("Overview", y),
        panel("stat", "Delivered / s",
              [target(f'sum(rate(jgw_messages_total{{{SEL}, outcome="delivered"}}[{RI}]))')], 0,
              y + 1, 4, 4, unit="reqps", description="Messages that reached their sink, per second."),
        panel("stat", "In flight", [target(f"sum(jgw_in_flight_messages{{{SEL}}})")], 4, y + 1, 4, 4,
              description="Taken from a source, not yet confirmed by the sink."),
        panel("stat", "Oldest waiting message",
              [target(f"max(jgw_queue_oldest_message_age_seconds{{{SEL}}})")], 8,
              y + 1, 4, 4, unit="s", thresholds=[(None, "green"), (900, "orange"), (3600, "red")]),
        panel("stat", "Quarantined (24 h)",
              [target(f"sum(increase(jgw_quarantined_messages_total{{{SEL}}}[24h])) or vector(0)")],
              12, y + 1, 4, 4, thresholds=red_if_any,
              description="Refused by a security or policy check; kept, never retried. "
                          "`jgw quarantine list`."),
        panel("stat", "Dead-lettered (24 h)",
              [target(f"sum(increase(jgw_dead_lettered_messages_total{{{SEL}}}[24h])) or vector(0)")],
              16, y + 1, 4, 4, thresholds=red_if_any,
              description="Undeliverable after all retries; replay with `jgw dlq replay`."),
        panel("stat", "Broker links down", [target(f"count(jgw_broker_up{{{SEL}}} == 0) or vector(0)")],
              20, y + 1, 4, 4, thresholds=red_if_any),
        panel("timeseries", "Messages by outcome / s",
              [target(f"sum by (outcome) (rate(jgw_messages_total{{{SEL}}}[{RI}]))", "{{outcome}}"),
               target(f"sum(rate(jgw_received_messages_total{{{SEL}}}[{RI}]))", "received")],
              0, y + 5, 12, 8, unit="reqps",
              description="received = delivered + quarantined + dead_lettered + duplicate, "
                          "once in-flight settles."),
        panel("timeseries", "Since last relay progress",
              [target(f"time() - jgw_last_progress_timestamp_seconds{{{SEL}}}", "{{instance}}")],
              12, y + 5, 6, 8, unit="s", thresholds=[(None, "green"), (120, "red")],
              description="Over 2 minutes: JgwNoProgress. The systemd watchdog restarts a stalled relay."),
        panel("timeseries", "Restarts (1 h)",
              [target(f"changes(jgw_start_time_seconds{{{SEL}}}[1h])", "{{instance}}")],
              18, y + 5, 6, 8,
              description="Process restarts: by an operator, a crash, or the watchdog."),
        panel("table", "Firing jgw alerts",
              [target('ALERTS{alertname=~"Jgw.*", alertstate="firing"}', instant=True, fmt="table")],
              0, y + 13, 16, 6, description="Meanings and actions: ops/runbooks/alerts.*.md"),
        panel("table", "Build", [target(f"jgw_build_info{{{SEL}}}", instant=True, fmt="table")],
              16, y + 13, 8, 6),
    ]


def per_route(y: int) -> list[dict[str, Any]]:
    return [
        row("Route $route", y, repeat="route"),
        panel("timeseries", "Throughput / s",
              [target(f"sum by (outcome) (rate(jgw_messages_total{{{ROUTE}}}[{RI}]))", "{{outcome}}"),
               target(f"sum(rate(jgw_received_messages_total{{{ROUTE}}}[{RI}]))", "received")],
              0, y + 1, 8, 8, unit="reqps"),
        panel("timeseries", "End-to-end latency",
              [target(f"histogram_quantile(0.5, sum by (le) (rate(jgw_end_to_end_latency_seconds_bucket"
                      f"{{{ROUTE}}}[{RI}])))", "p50"),
               target(f"histogram_quantile(0.99, sum by (le) (rate(jgw_end_to_end_latency_seconds_bucket"
                      f"{{{ROUTE}}}[{RI}])))", "p99")],
              8, y + 1, 8, 8, unit="s", description="From the source's publish time to the sink's confirm."),
        panel("timeseries", "Stage latency p99",
              [target(f"histogram_quantile(0.99, sum by (stage, le) (rate(jgw_stage_latency_seconds_bucket"
                      f"{{{ROUTE}}}[{RI}])))", "{{stage}}")],
              16, y + 1, 8, 8, unit="s"),
        panel("timeseries", "Queue",
              [target(f"sum(jgw_queue_messages{{{ROUTE}}})", "waiting in source queue"),
               target(f"sum(jgw_in_flight_messages{{{ROUTE}}})", "in flight")],
              0, y + 9, 8, 8),
        panel("timeseries", "Oldest message age",
              [target(f"max(jgw_queue_oldest_message_age_seconds{{{ROUTE}}})", "oldest")],
              8, y + 9, 8, 8, unit="s", thresholds=[(None, "green"), (900, "orange"), (3600, "red")]),
        panel("timeseries", "Retries, duplicates, republishes / s",
              [target(f"sum by (reason) (rate(jgw_retries_total{{{ROUTE}}}[{RI}]))", "retry: {{reason}}"),
               target(f"sum(rate(jgw_dedup_hits_total{{{ROUTE}}}[{RI}]))", "duplicate suppressed"),
               target(f"sum(rate(jgw_republished_messages_total{{{ROUTE}}}[{RI}]))", "republished")],
              16, y + 9, 8, 8, unit="reqps"),
        panel("timeseries", "Quarantined by reason (per interval)",
              [target(f"sum by (reason) (increase(jgw_quarantined_messages_total{{{ROUTE}}}[{RI}]))",
                      "{{reason}}")],
              0, y + 17, 12, 8),
        panel("timeseries", "Dead-lettered by reason (per interval)",
              [target(f"sum by (reason) (increase(jgw_dead_lettered_messages_total{{{ROUTE}}}[{RI}]))",
                      "{{reason}}")],
              12, y + 17, 12, 8),
        panel("stat", "Route up", [target(f"min(jgw_route_up{{{ROUTE}}})")], 0, y + 25, 4, 3,
              thresholds=[(None, "red"), (1, "green")],
              extra={"fieldConfig": {"defaults": {"unit": "short", "mappings": [
                  {"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}],
                  "thresholds": {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                               {"color": "green", "value": 1}]}},
                  "overrides": []}}),
    ]


def certificates(y: int) -> list[dict[str, Any]]:
    return [
        row("Certificates", y),
        panel("table", "Days until certificate expiry",
              [target(f"(jgw_certificate_expiry_timestamp_seconds{{{SEL}}} - time()) / 86400",
                      instant=True, fmt="table")],
              0, y + 1, 12, 8, unit="d", thresholds=[(None, "red"), (7, "orange"), (30, "green")],
              description="Alerts at 30 days (warning) and 7 days (critical)."),
        panel("table", "Hours until CRL nextUpdate",
              [target(f"(jgw_crl_next_update_timestamp_seconds{{{SEL}}} - time()) / 3600",
                      instant=True, fmt="table")],
              12, y + 1, 12, 8, unit="h", thresholds=[(None, "red"), (24, "green")]),
        panel("timeseries", "Reloads (per interval)",
              [target(f"sum by (result) (increase(jgw_reloads_total{{{SEL}}}[{RI}]))", "{{result}}")],
              0, y + 9, 8, 7),
        panel("stat", "Since last successful reload",
              [target(f"time() - max(jgw_last_reload_success_timestamp_seconds{{{SEL}}} > 0)")],
              8, y + 9, 8, 7, unit="s"),
        panel("timeseries", "TLS handshake failures / s",
              [target(f"sum by (broker) (rate(jgw_tls_handshake_failures_total{{{SEL}}}[{RI}]))",
                      "{{broker}}")],
              16, y + 9, 8, 7, unit="reqps"),
    ]


def brokers(y: int) -> list[dict[str, Any]]:
    return [
        row("Broker links", y),
        panel("timeseries", "Link up", [target(f"jgw_broker_up{{{SEL}}}", "{{broker}} {{role}}")],
              0, y + 1, 8, 8, description="1 = connection open. Alert after 5 minutes down."),
        panel("timeseries", "Publishing blocked by broker",
              [target(f"jgw_broker_blocked{{{SEL}}}", "{{broker}}")], 8, y + 1, 8, 8,
              description="RabbitMQ memory or disk alarm."),
        panel("timeseries", "Reconnect attempts / s",
              [target(f"sum by (broker, role) (rate(jgw_broker_reconnects_total{{{SEL}}}[{RI}]))",
                      "{{broker}} {{role}}")],
              16, y + 1, 8, 8, unit="reqps"),
    ]


def variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-query"},
            "refresh": 2, "includeAll": multi, "multi": multi, "allValue": ".+", "sort": 1,
            "current": {}, "options": [], "hide": 0}


def dashboard() -> dict[str, Any]:
    global _next_id
    _next_id = 0
    panels = overview(0) + per_route(20) + certificates(46) + brokers(63)
    return {
        "title": "jgw message gateway",
        "uid": "jgw-overview",
        "description": "jgw nodes: flow, per-route health, certificates, broker links. Generated by "
                       "ops/grafana/build_dashboard.py.",
        "tags": ["jgw"],
        "timezone": "browser",
        "schemaVersion": 37,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "options": []},
            variable("instance", "Node", "label_values(jgw_build_info, instance)", multi=True),
            variable("route", "Route", 'label_values(jgw_route_up{instance=~"$instance"}, route)',
                     multi=True),
        ]},
        "annotations": {"list": [{
            "name": "jgw restarts", "datasource": DS, "enable": True, "iconColor": "orange",
            "expr": 'changes(jgw_start_time_seconds{instance=~"$instance"}[2m]) > 0',
            "titleFormat": "jgw restarted", "textFormat": "{{instance}}", "step": "1m"}]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
