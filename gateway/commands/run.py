"""``jgw run CONFIG``: the relay daemon (systemd ``Type=notify``)."""

from __future__ import annotations

import argparse

from gateway import config as config_mod
from gateway import relay


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the relay daemon for a node",
                       description="Run the relay daemon: consume every enabled route's source, pass messages "
                                   "through its stages and publish them to its sink, acknowledging at the source "
                                   "only after the sink confirmed. Sends READY=1/STATUS=/WATCHDOG=1 to systemd "
                                   "when NOTIFY_SOCKET is set. SIGTERM drains in-flight messages within "
                                   "node.shutdown_grace; SIGHUP reloads certificates.")
    p.add_argument("config", help="the node's TOML config file")
    p.add_argument("--log-format", choices=("logfmt", "json"), help="override node.log_format")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override node.log_level")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gateway.logs import setup_logging
    from gateway.redact import RedactingFilter

    cfg = config_mod.load(args.config)
    setup_logging(args.log_format or cfg.node.log_format, args.log_level or cfg.node.log_level,
                  filters=[RedactingFilter()])
    return relay.run(cfg)
