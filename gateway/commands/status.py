"""``jgw status CONFIG``: routes, link state, queue depth and oldest-message age per route."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway import __version__
from gateway import config as config_mod
from gateway.amqp import blocking
from gateway.amqp.topology import DEAD_LETTER_QUEUE, QUARANTINE_QUEUE
from gateway.commands import add_config_argument, load_config
from gateway.commands.setaside import local_time
from gateway.errors import UnavailableError
from gateway.pki.errors import CertificateError
from gateway.pki.layout import CertsDir
from gateway.service import control


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="routes, link state, queue depth and oldest-message age",
                       description="Ask the running daemon (control socket) for its version, uptime, the result of "
                                   "its last certificate reload, its routes, links and certificate "
                                   "generation (and whether live on disk differs), and the "
                                   "brokers for queue depths. A file route lists the files waiting at its "
                                   "source (being written, ready, in hand), oldest first, and DEPTH counts "
                                   "them. For a queue shared by several instances: whether this one is the "
                                   "active or a standby consumer, and (with the broker's management_urls) the "
                                   "queue's members, online members and leader, with a warning when fewer "
                                   "are online than configured. Exit 0 when the daemon runs and every route is "
                                   "running, 1 otherwise (the table says why).")
    add_config_argument(p)
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
        if r.source.file is not None:
            continue  # a file source: what waits is listed by the daemon (``files``)
        wanted.setdefault(r.source.broker, set()).update({r.source.queue, QUARANTINE_QUEUE, DEAD_LETTER_QUEUE})
    for broker, queues in wanted.items():
        try:
            with blocking.session(cfg.brokers[broker]) as session:
                depths[broker] = {q: session.depth(q) for q in sorted(queues)}
        except UnavailableError as exc:
            broker_errors[broker] = str(exc)
    by_route = {r["route"]: r for r in (daemon or {}).get("routes", [])}
    routes = []
    for r in cfg.routes.values():
        d = by_route.get(r.name, {})
        files = d.get("files", []) if r.source.file is not None else None
        routes.append({
            "route": r.name, "seed": r.seed,
            "state": d.get("state", "disabled" if not r.enabled else "daemon not running"),
            "depth": len(files) if files is not None and d else depths.get(r.source.broker, {}).get(r.source.queue),
            "oldest_age_seconds": d.get("oldest_age_seconds"), "in_flight": d.get("in_flight"),
            "errors": d.get("errors", {}), "source": r.source.describe(), "sink": r.sink.describe(),
            "files": files, "consumers": None if r.source.is_file else r.consumers,
            "role": d.get("role"), "replicas": d.get("replicas") or {}})
    set_aside = {b: {"quarantine": q.get(QUARANTINE_QUEUE), "dead_letter": q.get(DEAD_LETTER_QUEUE)}
                 for b, q in depths.items()}
    generation = (daemon or {}).get("generation")
    d = daemon or {}
    return {"node": cfg.node.id, "daemon": daemon is not None, "daemon_error": daemon_error,
            "pid": d.get("pid"), "version": d.get("version"), "cli_version": __version__,
            "uptime_seconds": d.get("uptime_seconds"), "started_at": local_time(d.get("started_at")),
            "last_reload": _reload_info(d.get("last_reload")), "links": d.get("links", {}), "routes": routes,
            "set_aside": set_aside, "broker_errors": broker_errors, "generation": generation,
            "live_generation": _live_generation(cfg) if generation is not None else None}


def _reload_info(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, dict):
        return None
    return {**raw, "at": local_time(raw.get("at"))}


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{s:02d}"


def _live_generation(cfg: config_mod.Config) -> str | None:
    """The generation ``live`` names on disk: after a refused reload it differs from the daemon's."""
    try:
        return CertsDir(cfg.node.certs_dir).pointer("live")
    except (CertificateError, OSError):
        return None


def _scale_out_lines(r: dict[str, Any]) -> list[str]:
    """This instance's part in the route (active or standby) and the source queue's replicas."""
    out = []
    if r.get("consumers") and r.get("role"):
        mode = {"one": "the route's only instance"}.get(r["consumers"], f"{r['consumers']} consumers")
        out.append(f"instance: {r['role']} ({mode})")
    reps = r.get("replicas") or {}
    if reps.get("error"):
        out.append(f"replicas: unknown ({reps['error']})")
    elif reps:
        online, members, expected = len(reps["online"]), len(reps["members"]), reps["expected"]
        line = f"replicas: {online}/{members} online, leader {reps['leader'] or 'none'}"
        if online < expected:
            line += f"; WARNING: fewer online members than the {expected} configured"
        out.append(line)
    return out


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    info = gather(cfg)
    healthy = info["daemon"] and all(r["state"] in ("running", "disabled") for r in info["routes"])
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0 if healthy else 1
    if info["daemon"]:
        print(f"node {info['node']}: daemon running (pid {info['pid']}, jgw {info['version']}, up "
              f"{_uptime(info['uptime_seconds'])} since {info['started_at']})")
        if info["version"] != info["cli_version"]:
            print(f"  note: this command is jgw {info['cli_version']}; the daemon runs {info['version']} "
                  "(restart it to run the installed version)")
        reload = info["last_reload"]
        if reload is None:
            print("  last reload: none since start")
        elif reload.get("ok"):
            print(f"  last reload: {reload['at']}: ok, generation {reload.get('generation')}")
        else:
            print(f"  last reload: {reload['at']}: REFUSED: {reload.get('error')}")
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
        for line in _scale_out_lines(r):
            print(f"    {line}")
        for f in r["files"] or []:
            size = "?" if f.get("size") is None else str(f["size"])
            print(f"    file {f['name']}  ({f['file']}, {size} bytes, {f['state']}, waiting {f['age_seconds']:.0f}s)")
    for broker, counts in info["set_aside"].items():
        print(f"set aside on {broker}: quarantine={counts['quarantine']} dead-letter={counts['dead_letter']}")
    return 0 if healthy else 1
