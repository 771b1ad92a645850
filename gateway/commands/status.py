"""``jgw status CONFIG``: routes, link state, queue depth and oldest-message age per route."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pika.exceptions import AMQPError

from gateway import admin, control
from gateway import config as config_mod
from gateway.errors import UnavailableError
from gateway.pki.errors import CertificateError
from gateway.pki.layout import CertsDir
from gateway.topology import DEAD_LETTER_QUEUE, QUARANTINE_QUEUE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="routes, link state, queue depth and oldest-message age",
                       description="Ask the running daemon (control socket) for its routes, links and certificate "
                                   "generation (and whether live on disk differs), and the "
                                   "brokers for queue depths. Exit 0 when the daemon runs and every route is "
                                   "running, 1 otherwise (the table says why).")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def gather(cfg: config_mod.Config) -> dict[str, Any]:
    try:
        daemon: dict[str, Any] | None = control.request(cfg.node.control_socket, "status", timeout=5)
    except UnavailableError as exc:
        daemon = None
        daemon_error = str(exc)
    else:
        daemon_error = ""
    depths: dict[str, dict[str, int | None]] = {}
    broker_errors: dict[str, str] = {}
    wanted: dict[str, set[str]] = {}
    for r in cfg.routes.values():
        wanted.setdefault(r.source.broker, set()).update({r.source.queue, QUARANTINE_QUEUE, DEAD_LETTER_QUEUE})
    for broker, queues in wanted.items():
        try:
            with admin.channel(cfg.brokers[broker]) as ch:
                found: dict[str, int | None] = {}
                for q in sorted(queues):
                    found[q] = admin.queue_depth(ch, q)
                    if found[q] is None and ch.is_closed:
                        ch = ch.connection.channel()
                depths[broker] = found
        except (UnavailableError, AMQPError, OSError) as exc:
            broker_errors[broker] = str(exc)
    by_route = {r["route"]: r for r in (daemon or {}).get("routes", [])}
    routes = []
    for r in cfg.routes.values():
        d = by_route.get(r.name, {})
        routes.append({
            "route": r.name, "seed": r.seed,
            "state": d.get("state", "disabled" if not r.enabled else "daemon not running"),
            "depth": depths.get(r.source.broker, {}).get(r.source.queue),
            "oldest_age_seconds": d.get("oldest_age_seconds"), "in_flight": d.get("in_flight"),
            "errors": d.get("errors", {})})
    set_aside = {b: {"quarantine": q.get(QUARANTINE_QUEUE), "dead_letter": q.get(DEAD_LETTER_QUEUE)}
                 for b, q in depths.items()}
    generation = (daemon or {}).get("generation")
    return {"node": cfg.node.id, "daemon": daemon is not None, "daemon_error": daemon_error,
            "pid": (daemon or {}).get("pid"), "links": (daemon or {}).get("links", {}), "routes": routes,
            "set_aside": set_aside, "broker_errors": broker_errors, "generation": generation,
            "live_generation": _live_generation(cfg) if generation is not None else None}


def _live_generation(cfg: config_mod.Config) -> str | None:
    """The generation ``live`` names on disk: after a refused reload it differs from the daemon's."""
    try:
        return CertsDir(cfg.node.certs_dir).pointer("live")
    except (CertificateError, OSError):
        return None


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    info = gather(cfg)
    healthy = info["daemon"] and all(r["state"] in ("running", "disabled") for r in info["routes"])
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0 if healthy else 1
    if info["daemon"]:
        print(f"node {info['node']}: daemon running (pid {info['pid']})")
    else:
        print(f"node {info['node']}: daemon NOT running ({info['daemon_error']})")
    if info["generation"] is not None:
        line = f"  certificates: generation {info['generation']}"
        if info["live_generation"] not in (None, info["generation"]):
            line += (f"; live on disk is {info['live_generation']}, not loaded "
                     "(jgw reload loads it or says why it cannot)")
        print(line)
    for name, link in info["links"].items():
        state = "up" if link["up"] else "DOWN"
        if link["blocked"]:
            state = "BLOCKED"
        extra = f" {link['url']}" if link["up"] else f" {link['error']}"
        print(f"  link {name:<20} {state}{extra}")
    for broker, err in info["broker_errors"].items():
        print(f"  broker {broker}: {err}")
    print(f"{'ROUTE':<28} {'STATE':<20} {'DEPTH':>7} {'OLDEST':>9} {'IN-FLIGHT':>9}  SEED")
    for r in info["routes"]:
        depth = "?" if r["depth"] is None else str(r["depth"])
        age = "-" if r["oldest_age_seconds"] is None else f"{r['oldest_age_seconds']:.1f}s"
        inflight = "-" if r["in_flight"] is None else str(r["in_flight"])
        print(f"{r['route']:<28} {r['state']:<20} {depth:>7} {age:>9} {inflight:>9}  {r['seed'] or ''}")
        for where, err in r["errors"].items():
            print(f"    {where}: {err}")
    for broker, counts in info["set_aside"].items():
        print(f"set aside on {broker}: quarantine={counts['quarantine']} dead-letter={counts['dead_letter']}")
    return 0 if healthy else 1
