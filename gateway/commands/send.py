"""``jgw send CONFIG --route R PAYLOAD...``: inject payloads as the route's source system would."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from gateway.amqp import blocking
from gateway.commands import add_config_argument, load_config
from gateway.commands.setaside import route_source
from gateway.errors import NoInputError, UsageError
from gateway.ids import new_message_id
from gateway.message import H_SENT_AT


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="inject payloads on a route as its source system would",
                       description="Publish each PAYLOAD to the route's source queue (persistent, mandatory, "
                                   "with a publisher confirm), as the source system would: for checks and "
                                   "drills. PAYLOAD is literal text (UTF-8), @FILE for a file's bytes, or - for "
                                   "stdin. Prints one message id per line.")
    add_config_argument(p)
    p.add_argument("--route", required=True, help="route name (see jgw check-config)")
    p.add_argument("payload", nargs="+", metavar="PAYLOAD")
    p.add_argument("--header", action="append", default=[], metavar="NAME=VALUE", help="add an AMQP header")
    p.add_argument("--order-key", help="value for the route's ordering header")
    p.add_argument("--correlation-id", help="correlation id (e.g. the 処理通番); kept end to end")
    p.add_argument("--content-type", default="application/octet-stream")
    p.add_argument("--message-id", help="message id (only with a single payload and --repeat 1)")
    p.add_argument("--repeat", type=int, default=1, help="send each payload N times, each with its own id")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of ids")
    p.set_defaults(func=main)


def read_payload(arg: str) -> bytes:
    if arg == "-":
        return sys.stdin.buffer.read()
    if arg.startswith("@"):
        path = Path(arg[1:])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise NoInputError(f"{path}: {exc.strerror}") from exc
    return arg.encode("utf-8")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args, ids="payload")
    route = route_source(cfg, args.route)
    if route.source.file is not None:
        raise UsageError(f"route {route.name!r} takes files, not messages: put a file into its source "
                         f"({route.source.describe()})")
    if args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    if args.message_id and (len(args.payload) > 1 or args.repeat > 1):
        raise UsageError("--message-id needs exactly one payload and --repeat 1")
    headers: dict[str, object] = {}
    for item in args.header:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"--header expects NAME=VALUE, got {item!r}")
        headers[name] = value
    if args.order_key is not None:
        if route.ordering_header is None:
            raise UsageError(f"route {route.name!r} has no ordering header")
        headers[route.ordering_header] = args.order_key
    payloads = [read_payload(a) for a in args.payload]
    ids: list[str] = []
    with blocking.session(cfg.brokers[route.source.broker]) as session:
        for body in payloads:
            for _ in range(args.repeat):
                mid = args.message_id or new_message_id()  # never a 個人番号 look-alike
                now = time.time()
                props = blocking.Properties(message_id=mid, delivery_mode=2, content_type=args.content_type,
                                             correlation_id=args.correlation_id, timestamp=int(now),
                                             headers={**headers, H_SENT_AT: int(now * 1000)})
                session.publish_confirmed("", route.source.queue, body, props)
                ids.append(mid)
    if args.json:
        print(json.dumps({"route": route.name, "queue": route.source.queue, "sent": len(ids), "ids": ids}))
    else:
        for mid in ids:
            print(mid)
    return 0
