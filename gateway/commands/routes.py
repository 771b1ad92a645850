"""``jgw routes [CONFIG] [--catalog] [--json]``: routes and the seed flows they carry.

With CONFIG: each route, the seed flow it names, the catalog's verdict (refused routes first
say why) and advice. Exit 0 when every route passes the catalog, 1 when any is refused, 78 when
the file itself is wrong. With --catalog (or no CONFIG): every flow of the seed catalog, with its
kind, whether it may carry the 個人番号, and its legs.

Security: reads local config and catalog files.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway import catalog, config


def register(sub: Any) -> None:
    p = sub.add_parser("routes", help="list routes with their seed flows, or the seed catalog",
                       description=__doc__.split("\n\nSecurity:")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", metavar="CONFIG", help="a node config file")
    p.add_argument("--catalog", action="store_true", help="list the seed catalog instead")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cat = catalog.default_catalog()
    if args.catalog or not args.config:
        for flow in cat:
            if args.json:
                print(json.dumps(catalog.describe_flow(flow), ensure_ascii=False))
                continue
            legs = "; ".join(f"{x.source}→{x.target} {x.network} {x.personal_number}" for x in flow.legs)
            print(f"{flow.ref:<14} {flow.kind:<10} {flow.personal_number:<9} {flow.name}"
                  + (f"\n{'':14} {legs}" if legs else ""))
        return 0
    cfg = config.load(args.config)  # refuses (exit 78) a route the catalog does not allow
    for route in cfg.routes.values():
        advice = catalog.advise_route(route, cat)
        flow_name = cat.lookup(route.seed)[0].name if route.seed else ""
        if args.json:
            print(json.dumps({"route": route.name, "seed": route.seed, "flow": flow_name,
                              "personal_number": route.personal_number, "advice": advice}, ensure_ascii=False))
        else:
            print(f"{route.name:<24} {route.seed or '-':<14} {route.personal_number:<9} "
                  f"{flow_name or '(no seed flow named)'}")
            for line in advice:
                print(f"{'':24} advice: {line}")
    return 0
