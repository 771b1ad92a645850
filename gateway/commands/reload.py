"""``jgw reload CONFIG``: reload certificates in the running daemon and say how it went."""

from __future__ import annotations

import argparse

from gateway.commands import add_config_argument, load_config
from gateway.service import control


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("reload", help="reload certificates in the running daemon and wait for the result",
                       description="Ask the running daemon (control socket) to reload its certificates, as "
                                   "SIGHUP does, and wait for the answer. The daemon validates the new material "
                                   "and checks that every TLS broker accepts it before switching; if anything "
                                   "is wrong it keeps the old material. Exit 0 when the new material is in use, "
                                   "1 when it was refused, 69 when no daemon answers.")
    add_config_argument(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    answer = control.request(cfg.node.control_socket, "reload", timeout=120)
    if answer.get("ok"):
        print(f"reloaded: generation {answer.get('generation')}, {answer.get('links_moved', 0)} link(s) moved, "
              f"{answer.get('links_unchanged', 0)} unchanged (same TLS certificate, anchors and CRLs)")
        for text in answer.get("links_not_moved", []):
            print(f"  not moved yet: {text}")
        return 0
    print(f"reload refused, still running on the previous material: {answer.get('error', 'unknown error')}")
    return 1
