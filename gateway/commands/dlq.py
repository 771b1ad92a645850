"""``jgw dlq list|show|replay`` and ``jgw quarantine list|show``: what was set aside, and why.

Dead letters failed delivery (after the retry tiers, or the broker's delivery limit); once the
cause is fixed, ``replay`` puts them back on their route's source queue with their original
message id, so the route's dedup store keeps the sink from seeing one twice. Quarantined messages
were refused for security or policy reasons and are not replayed: their source must fix and resend.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from gateway import admin
from gateway import config as config_mod
from gateway.audit import payload_digest
from gateway.errors import NoInputError, UnavailableError, UsageError
from gateway.topology import DEAD_LETTER_QUEUE, QUARANTINE_QUEUE

log = logging.getLogger("jgw.dlq")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, queue, helptext in (("dlq", DEAD_LETTER_QUEUE, "list, show or replay dead letters"),
                                  ("quarantine", QUARANTINE_QUEUE, "list or show quarantined messages")):
        p = sub.add_parser(verb, help=helptext, description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
        lst = acts.add_parser("list", help="id, route, reason, age and size of each message (never the payload)")
        lst.add_argument("config")
        lst.add_argument("--route", help="only this route")
        lst.add_argument("--json", action="store_true")
        lst.set_defaults(func=cmd_list, queue=queue)
        show = acts.add_parser("show", help="one message: properties and jgw headers")
        show.add_argument("config")
        show.add_argument("id", help="message id")
        show.add_argument("--headers", action="store_true", help="also show the source system's header values")
        show.add_argument("--payload", action="store_true", help="write the payload bytes to stdout")
        show.set_defaults(func=cmd_show, queue=queue)
        if verb == "dlq":
            rep = acts.add_parser("replay", help="put dead letters back on their route (after fixing the cause)",
                                  description="Publish each selected dead letter back to its route's source "
                                              "queue (confirmed), then remove it from jgw.dead-letter. Keeps the "
                                              "message id, so the route's dedup store prevents a duplicate at "
                                              "the sink. Exit 0 when all were replayed, 1 when some failed.")
            rep.add_argument("config")
            rep.add_argument("ids", nargs="*", metavar="ID")
            rep.add_argument("--all", action="store_true", help="every dead letter (of --route, if given)")
            rep.add_argument("--route", help="only this route")
            rep.add_argument("--dry-run", action="store_true", help="say what would be replayed; change nothing")
            rep.set_defaults(func=cmd_replay, queue=queue)


def _brokers(cfg: config_mod.Config) -> list[str]:
    return sorted({r.source.broker for r in cfg.routes.values()})


def cmd_list(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    rows: list[dict[str, Any]] = []
    for broker in _brokers(cfg):
        with admin.channel(cfg.brokers[broker]) as ch:
            for entry in admin.fetch_all(ch, args.queue, cfg, broker):
                if args.route and entry.route != args.route:
                    continue
                rows.append({"broker": broker, **entry.summary()})
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ID':<36} {'ROUTE':<24} {'REASON':<20} {'AGE':>8} {'SIZE':>8}  DETAIL")
    for r in rows:
        age = "?" if r["age_seconds"] is None else f"{r['age_seconds']:.0f}s"
        print(f"{r['id']:<36} {r['route']:<24} {r['reason']:<20} {age:>8} {r['size']:>8}  {r['detail']}")
    print(f"{len(rows)} message(s) in {args.queue}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    for broker in _brokers(cfg):
        with admin.channel(cfg.brokers[broker]) as ch:
            for entry in admin.fetch_all(ch, args.queue, cfg, broker):
                if entry.message_id != args.id:
                    continue
                if args.payload:
                    sys.stdout.buffer.write(entry.body)
                    return 0
                p = entry.properties
                info = {"broker": broker, **entry.summary(), "content_type": p.content_type,
                        "correlation_id": p.correlation_id, "timestamp": p.timestamp,
                        "jgw_headers": entry.jgw_headers(), "other_headers": entry.other_header_names()}
                if args.headers:
                    info["other_headers"] = {k: admin._plain((p.headers or {})[k]) for k in entry.other_header_names()}
                print(json.dumps(info, ensure_ascii=False, indent=2, default=str))
                return 0
    raise NoInputError(f"no message with id {args.id!r} in {args.queue}")


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if not args.ids and not args.all:
        raise UsageError("name the message ids to replay, or --all")
    wanted = set(args.ids)
    replayed, failed = 0, 0
    found: set[str] = set()
    verb = "would replay" if args.dry_run else "replayed"
    for broker in _brokers(cfg):
        with admin.channel(cfg.brokers[broker]) as ch:
            pub = ch.connection.channel()
            pub.confirm_delivery()
            for entry in admin.fetch_all(ch, args.queue, cfg, broker):
                if (wanted and entry.message_id not in wanted) or (args.route and entry.route != args.route):
                    continue
                found.add(entry.message_id)
                route = cfg.routes.get(entry.route)
                if route is None or route.source.broker != broker:
                    print(f"{entry.message_id}: not replayed: route {entry.route!r} is not a route of this config "
                          f"on broker {broker}", file=sys.stderr)
                    failed += 1
                    continue
                if args.dry_run:
                    print(f"{entry.message_id}: {verb} to {route.name} ({route.source.queue})")
                    replayed += 1
                    continue
                try:
                    admin.publish_confirmed(pub, "", route.source.queue, entry.body, admin.replay_properties(entry))
                except (NoInputError, UnavailableError) as exc:
                    print(f"{entry.message_id}: not replayed: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                admin.record_operator(cfg, "replay", msg=entry.message_id, route=route.name, reason=entry.reason,
                                      seed=route.seed or "", digest=payload_digest(entry.body),
                                      size=len(entry.body), outcome="replayed")
                ch.basic_ack(entry.delivery_tag)
                replayed += 1
                log.warning("dead letter replayed", extra={"message_id": entry.message_id, "route": route.name,
                                                           "reason": entry.reason})
                print(f"{entry.message_id}: {verb} to {route.name} ({route.source.queue})")
    missing = wanted - found
    for mid in sorted(missing):
        print(f"{mid}: not found in {args.queue}", file=sys.stderr)
    failed += len(missing)
    note = " (simulated, nothing changed)" if args.dry_run else ""
    print(f"{verb} {replayed}, failed {failed}{note}")
    return 0 if failed == 0 else 1
