"""``jgw check-config CONFIG``: validate a config file and show the effective routes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway import config as config_mod
from gateway.route import build_stages, load_material, node_context, stage_kinds
from gateway.topology import format_delay


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check-config", help="validate a config file and print the effective routes",
                       description="Read the config strictly (unknown keys are errors), build every route's "
                                   "stages, and print the effective routes. Values marked (default) come from "
                                   "[defaults] or the built-in defaults. Exit 0 when valid, 78 with "
                                   "'FILE: KEY: reason' when not.")
    p.add_argument("config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=main)


def describe(cfg: config_mod.Config) -> dict[str, Any]:
    routes = []
    for r in cfg.routes.values():
        routes.append({
            "name": r.name, "seed": r.seed, "enabled": r.enabled, "description": r.description,
            "source": f"{r.source.broker}:{r.source.queue}",
            "sink": f"{r.sink.broker}:{r.sink.exchange or '(default)'}/{r.sink.routing_key}",
            "stages": stage_kinds(r), "personal_number": r.personal_number, "payload_encoding": r.payload_encoding,
            "ordering_header": r.ordering_header,
            "settings": {
                "prefetch": r.prefetch, "window": r.window, "retry": [format_delay(d) for d in r.retry],
                "delivery_limit": r.delivery_limit, "max_size": r.max_size, "dedup": r.dedup,
                "dedup_window": format_delay(r.dedup_window), "ack_interval": format_delay(r.ack_interval)},
            "origin": dict(r.origin)})
    return {"file": str(cfg.file), "node": cfg.node.id, "state_dir": str(cfg.node.state_dir),
            "metrics_listen": None if cfg.node.metrics_listen is None else
            "{}:{}".format(*cfg.node.metrics_listen),
            "brokers": {b.name: b.describe() for b in cfg.brokers.values()}, "routes": routes}


def main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    material = load_material(cfg)
    node = node_context(cfg, None if material is None else (lambda: material.keyring))
    for route in cfg.routes.values():
        build_stages(cfg, route, node)
    info = describe(cfg)
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
    return 0
