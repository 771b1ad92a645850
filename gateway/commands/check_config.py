"""``jgw check-config CONFIG``: validate a config file and show the effective routes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway import config as config_mod
from gateway.amqp.topology import format_delay
from gateway.commands import add_config_argument, load_config
from gateway.route.chain import build_stages, load_material, node_context, stage_kinds
from gateway.service import preflight


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file and print the effective routes",
                       description="Read the config strictly (unknown keys are errors), build every route's "
                                   "stages, and print the effective routes. Values marked (default) come from "
                                   "[defaults] or the built-in defaults; sizes and durations are shown as "
                                   "written. Refuses everything jgw run refuses at start (metrics beyond "
                                   "loopback without TLS, a state_dir that is not a directory, a password file "
                                   "others can read, an encoding a forbidden route cannot scan, a sink that "
                                   "feeds the route's own source queue) and prints the warnings and the seed "
                                   "catalog's advice jgw routes gives. Exit 0 when valid (warnings or not), "
                                   "78 with 'FILE: KEY: reason' when not, 77 for a password file's mode, "
                                   "66 when the file is missing.")
    add_config_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def describe(cfg: config_mod.Config) -> dict[str, Any]:
    routes = []
    for r in cfg.routes.values():
        routes.append({
            "name": r.name, "seed": r.seed, "enabled": r.enabled, "description": r.description,
            "source": r.source.describe(), "sink": r.sink.describe(),
            "stages": stage_kinds(r), "personal_number": r.personal_number, "payload_encoding": r.payload_encoding,
            "ordering_header": r.ordering_header,
            "settings": {
                "prefetch": r.prefetch, "window": r.window, "retry": _as_written(r, "retry"),
                "delivery_limit": r.delivery_limit, "max_size": _as_written(r, "max_size"), "dedup": r.dedup,
                "dedup_window": _as_written(r, "dedup_window"), "ack_interval": _as_written(r, "ack_interval")},
            "parsed": {"retry_seconds": list(r.retry), "max_size_bytes": r.max_size,
                       "dedup_window_seconds": r.dedup_window, "ack_interval_seconds": r.ack_interval},
            "origin": dict(r.origin)})
    return {"file": str(cfg.file), "node": cfg.node.id, "state_dir": str(cfg.node.state_dir),
            "metrics_listen": None if cfg.node.metrics_listen is None else
            "{}:{}".format(*cfg.node.metrics_listen),
            "brokers": {b.name: b.describe() for b in cfg.brokers.values()}, "routes": routes}


def _as_written(route: config_mod.RouteConfig, key: str) -> Any:
    """A size or duration as the file wrote it ("8MiB", "7d"); the canonical form when not known."""
    raw = route.written.get(key)
    if isinstance(raw, list):
        return [str(v) for v in raw]
    if raw is not None:
        return str(raw)
    value = getattr(route, key)
    if key == "retry":
        return [format_delay(d) for d in value]
    return value if key == "max_size" else format_delay(value)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    # the order jgw run checks in (gateway.service.relay.Relay): material, stages, then preflight
    material = load_material(cfg)
    node = node_context(cfg, None if material is None else (lambda: material.keyring))
    for route in cfg.routes.values():
        build_stages(cfg, route, node)
    warnings = preflight.check(cfg)
    info = describe(cfg)
    info["warnings"] = warnings
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    print(f"config {info['file']}: OK")
    print(f"node {info['node']}  state_dir {info['state_dir']}  metrics {info['metrics_listen'] or '(off)'}")
    print("brokers:")
    for name, urls in info["brokers"].items():
        print(f"  {name:<12} {urls}")
    print(f"routes ({len(info['routes'])}):")
    for r in info["routes"]:
        seed = f" [{r['seed']}]" if r["seed"] else ""
        off = "" if r["enabled"] else "  (disabled)"
        chain = " → ".join(r["stages"]) or "(no stages)"
        print(f"  {r['name']}{seed}{off}")
        print(f"      {r['source']} → {chain} → {r['sink']}")
        print(f"      personal_number={r['personal_number']} encoding={r['payload_encoding'] or '(undeclared)'}"
              f" ordering={r['ordering_header'] or '(none)'}")
        settings = []
        for key, value in r["settings"].items():
            shown = ",".join(value) if isinstance(value, list) else value
            mark = "" if r["origin"].get(key) == "route" else " (default)"
            settings.append(f"{key}={shown}{mark}")
        print(f"      {' '.join(settings)}")
    for text in warnings:
        print(f"warning: {text}")
    return 0
