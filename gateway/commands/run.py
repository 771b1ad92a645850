"""``jgw run CONFIG``: the relay daemon (systemd ``Type=notify``)."""

from __future__ import annotations

import argparse

from gateway.commands import add_config_argument, load_config
from gateway.service import relay


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run the relay daemon for a node",
                       description="Run the relay daemon: consume every enabled route's source, pass messages "
                                   "through its stages and publish them to its sink, acknowledging at the source "
                                   "only after the sink confirmed. Sends READY=1/STATUS=/WATCHDOG=1 to systemd "
                                   "when NOTIFY_SOCKET is set. SIGTERM drains in-flight messages within "
                                   "node.shutdown_grace; SIGHUP reloads certificates.")
    add_config_argument(p)
    p.add_argument("--log-format", choices=("logfmt", "json"), help="override node.log_format")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override node.log_level")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gateway.policy.redact import IdKey, RedactingFilter
    from gateway.service.logs import setup_logging

    cfg = load_config(args)
    # an id that may hold a 個人番号 is logged as its keyed digest (the audit trail's, same key)
    setup_logging(args.log_format or cfg.node.log_format, args.log_level or cfg.node.log_level,
                  filters=[RedactingFilter(IdKey.in_state_dir(cfg.node.state_dir))])
    return relay.run(cfg)
