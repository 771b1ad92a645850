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


#: The Japanese description of every panel and row (Grafana shows it under the (i) of the title; the
#: titles stay in English, as the runbooks name them). Terms as in ops/runbooks/*.ja.md: ブローカー,
#: ルート, 再投入 (the operator's replay), 隔離, 配送不能.
JA: dict[str, str] = {
    "Overview": "全ノードの概況。ノードは上の Node で選びます。",
    "Delivered / s": "送信先が受領を確認したメッセージの数（毎秒）。",
    "In flight": "送信元から受け取り、送信先の受領確認を待っているメッセージの数。",
    "Oldest waiting message": "送信元キューで最も長く待っているメッセージの待ち時間。15分でアラート"
                              "（JgwQueueOldMessages）。",
    "Quarantined (24 h)": "24時間に隔離されたメッセージの数。セキュリティまたはポリシーの検査で拒否されたもので、"
                          "原本を理由とともに保管し、再試行しません。一覧: jgw quarantine list。",
    "Dead-lettered (24 h)": "24時間に配送不能になったメッセージの数（すべての再試行の後も配送できなかったもの）。"
                            "原因を直してから jgw dlq replay で再投入します。",
    "Broker links down": "切断されているブローカー接続の数。5分続くとアラート（JgwBrokerLinkDown）。",
    "Messages by outcome / s": "結果別のメッセージ数（毎秒）。処理中が落ち着けば received = delivered + "
                               "quarantined + dead_lettered + duplicate。",
    "Since last relay progress": "中継処理が最後に進んでからの時間。2分を超えるとアラート（JgwNoProgress）。"
                                 "停滞した中継は systemd のウォッチドッグが再起動します。",
    "Restarts (1 h)": "1時間のプロセス再起動の回数（運用者による再起動、異常終了、ウォッチドッグ）。",
    "Firing jgw alerts": "発生中の jgw アラート。意味と対処: ops/runbooks/alerts.ja.md。",
    "Build": "各ノードの jgw のバージョン。",
    "Route $route": "ルートごとの行。ルートは上の Route で選びます。",
    "Throughput / s": "このルートの結果別のメッセージ数（毎秒）と受信数。",
    "End-to-end latency": "送信元での発行から送信先の受領確認までの時間（中央値 p50 と p99）。",
    "Stage latency p99": "ステージ（ポリシー検査、封緘・開封など）ごとの処理時間の p99。",
    "Queue": "送信元キューで待っているメッセージの数と、処理中の数。",
    "Oldest message age": "このルートの送信元キューで最も古いメッセージの待ち時間。15分で注意、1時間で警告。",
    "Retries, duplicates, republishes / s": "再試行（理由別）、重複として抑止したもの、再発行したものの数"
                                            "（毎秒）。",
    "Quarantined by reason (per interval)": "理由別の隔離数（表示間隔ごと）。",
    "Dead-lettered by reason (per interval)": "理由別の配送不能数（表示間隔ごと）。原因を直してから再投入します。",
    "Route up": "このルートが動いているか（UP／DOWN）。10分 DOWN が続くとアラート（JgwRouteDown）。",
    "Certificates": "証明書と CRL（証明書失効リスト）、再読み込み。",
    "Days until certificate expiry": "各証明書の有効期限までの日数。30日で警告、7日で重大のアラート。",
    "Hours until CRL nextUpdate": "各 CA の CRL の次回更新日時（nextUpdate）までの時間。24時間を切る前に"
                                  "新しい CRL を導入します（jgw-crl-fetch.timer）。",
    "Reloads (per interval)": "証明書の再読み込みの結果別の回数（表示間隔ごと）。",
    "Since last successful reload": "最後に証明書の再読み込みが成功してからの時間。",
    "TLS handshake failures / s": "ブローカーとの TLS ハンドシェイクの失敗数（毎秒、ブローカー別）。",
    "Broker links": "ブローカーへの接続。",
    "Link up": "1 = 接続中。5分切断が続くとアラート。",
    "Publishing blocked by broker": "RabbitMQ のメモリ・ディスク警報で、ブローカーが送信を止めている状態。",
    "Reconnect attempts / s": "ブローカーへの再接続の試行数（毎秒）。",
    "File routes": "ファイル連携のルート（SFTP、スプールディレクトリ）。",
    "Files by outcome / s": "結果別のファイル数（毎秒、ルート別）。",
    "File bytes / s": "結果別のファイルのバイト数（毎秒、ルート別）。",
    "Files waiting": "送信元ディレクトリでまだ終わっていないファイルの数（書き込み中、送信待ち、送信中）。",
    "Oldest waiting file": "送信元ディレクトリで最も長く待っているファイルの待ち時間。30分でアラート"
                           "（JgwFileWaitingTooLong）。",
    "File transfer p95": "ファイルを取ってから全フレームが送信先で確定するまで（送信側）、最初のチャンクから"
                         "所定の名前への変更まで（受信側）の時間の p95。",
    "SFTP sessions": "1 = SFTP セッション接続中。切断が続くとアラート（JgwSftpSessionDown）。",
    "SFTP host-key refusals (per interval)": "登録済みのホスト鍵と違うため拒否した SFTP 接続の数"
                                             "（JgwSftpHostKeyRefused）。",
    "Scale-out": "複数の jgw インスタンスと RabbitMQ クラスター。",
    "Instance consuming": "1 = このインスタンスがルートを受信中（唯一のインスタンス、single-active の受信中の1台、"
                          "または共有して受信）。メッセージが待っているのにどれも受信していなければアラート"
                          "（JgwRouteNoActiveConsumer）。",
    "Queue members online / expected": "ルートの送信元クォーラムキューのメンバー数（管理 API から。"
                                       "management_urls が無ければ空）。設定した replicas を下回るとアラート"
                                       "（JgwQueueTooFewReplicas）。",
    "Pause-fence trips (per interval)": "一時停止（SIGSTOP、VM の停止）していた single-active のインスタンスが、"
                                        "配送せずにメッセージを返した回数。",
}


def described(title: str, description: str) -> str:
    """The English description, then the Japanese one (a KeyError: a panel without Japanese)."""
    return f"{description}\n\n{JA[title]}" if description else JA[title]


def panel(kind: str, title: str, exprs: list[dict[str, Any]], x: int, y: int, w: int, h: int, *,
          unit: str = "short", description: str = "",
          thresholds: Sequence[tuple[float | None, str]] | None = None,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    p: dict[str, Any] = {
        "id": _id(), "type": kind, "title": title, "description": described(title, description),
        "datasource": DS,
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
    r: dict[str, Any] = {"id": _id(), "type": "row", "title": title, "description": described(title, ""),
                         "collapsed": False,
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


def files(y: int) -> list[dict[str, Any]]:
    """File routes, all routes of a node at once: a file route's series carry its route label."""
    return [
        row("File routes", y),
        panel("timeseries", "Files by outcome / s",
              [target(f"sum by (route, outcome) (rate(jgw_files_total{{{SEL}}}[{RI}]))", "{{route}} {{outcome}}")],
              0, y + 1, 8, 8),
        panel("timeseries", "File bytes / s",
              [target(f"sum by (route, outcome) (rate(jgw_file_bytes_total{{{SEL}}}[{RI}]))",
                      "{{route}} {{outcome}}")],
              8, y + 1, 8, 8, unit="Bps"),
        panel("timeseries", "File transfer p95",
              [target("histogram_quantile(0.95, sum by (route, le) "
                      f"(rate(jgw_file_transfer_seconds_bucket{{{SEL}}}[{RI}])))", "{{route}}")],
              16, y + 1, 8, 8, unit="s"),
        panel("timeseries", "Files waiting", [target(f"sum by (route) (jgw_files_waiting{{{SEL}}})", "{{route}}")],
              0, y + 9, 6, 8),
        panel("timeseries", "Oldest waiting file",
              [target(f"max by (route) (jgw_file_oldest_waiting_age_seconds{{{SEL}}})", "{{route}}")],
              6, y + 9, 6, 8, unit="s", description="Alert after 30 minutes (JgwFileWaitingTooLong)."),
        panel("timeseries", "SFTP sessions", [target(f"jgw_sftp_session_up{{{SEL}}}", "{{route}} {{server}}")],
              12, y + 9, 6, 8, description="1 = session up. Alert while down (JgwSftpSessionDown)."),
        panel("timeseries", "SFTP host-key refusals (per interval)",
              [target(f"sum by (route, server) (increase(jgw_sftp_host_key_failures_total{{{SEL}}}[{RI}])) "
                      "or vector(0)", "{{route}} {{server}}")],
              18, y + 9, 6, 8, description="Connections refused: the server's host key is not the pinned one."),
    ]


def scale_out(y: int) -> list[dict[str, Any]]:
    """Several instances and a RabbitMQ cluster: who consumes each route, the queues' replicas, pauses."""
    return [
        row("Scale-out", y),
        panel("timeseries", "Instance consuming", [target(f"jgw_route_active{{{SEL}}}", "{{instance}} {{route}}")],
              0, y + 1, 8, 8, description="1 = this instance consumes the route (the only one, the single "
                                          "active one, or beside others). Alert when no instance of a route "
                                          "consumes while messages wait (JgwRouteNoActiveConsumer)."),
        panel("timeseries", "Queue members online / expected",
              [target(f"max by (route) (jgw_queue_members_online{{{SEL}}})", "{{route}} online"),
               target(f"max by (route) (jgw_queue_members_expected{{{SEL}}})", "{{route}} expected")],
              8, y + 1, 8, 8, description="Members of each route's source quorum queue, from the management "
                                          "API (brokers.NAME.management_urls; empty without it). Alert below "
                                          "the configured replicas (JgwQueueTooFewReplicas)."),
        panel("timeseries", "Pause-fence trips (per interval)",
              [target(f"sum by (route) (increase(jgw_fence_trips_total{{{SEL}}}[{RI}]))", "{{route}}")],
              16, y + 1, 8, 8, description="A single-active instance that was paused (SIGSTOP, frozen VM) "
                                           "gave its deliveries back instead of publishing."),
    ]


def variable(name: str, label: str, query: str, *, multi: bool) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": query, "query": {"query": query, "refId": f"{name}-query"},
            "refresh": 2, "includeAll": multi, "multi": multi, "allValue": ".+", "sort": 1,
            "current": {}, "options": [], "hide": 0}


def dashboard() -> dict[str, Any]:
    global _next_id
    _next_id = 0
    panels = overview(0) + per_route(20) + certificates(46) + brokers(63) + files(72) + scale_out(89)
    return {
        "title": "jgw message gateway",
        "uid": "jgw-overview",
        "description": "jgw nodes: flow, per-route health, certificates, broker links, file routes, scale-out. "
                       "Generated by "
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
