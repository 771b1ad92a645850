"""``jgw dlq list|show|export|delete|replay`` and ``jgw quarantine list|show|export|delete``.

Dead letters failed delivery (after the retry tiers, or the broker's delivery limit); once the
cause is fixed, ``replay`` puts them back on their route's source queue with their original
message id, so the route's dedup store keeps the sink from seeing one twice. Quarantined messages
were refused for security or policy reasons and are not replayed: their source must fix and resend.

``export`` writes each selected message, bytes exactly as set aside plus its properties and headers,
into a new directory for an auditor (a sealed message's file opens with ``jgw envelope``);
``delete`` removes the selected messages for good, as ``postsuper -d`` does, with a ``--reason``.
Select by message id, ``--route``, or ``--all``. ``--dry-run`` takes the same path and changes
nothing. Every replay, export and delete is recorded in the audit trail with the human behind it.

Listing takes each message without acknowledging it and gives it back: it never removes one, and
set-aside queues have no delivery limit that a look could use up (docs/operations.md).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import decimal
import hashlib
import json
import logging
import os
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.amqp import blocking
from gateway.amqp.topology import DEAD_LETTER_QUEUE, QUARANTINE_QUEUE
from gateway.audit import payload_digest
from gateway.commands import CONFIG_HELP, load_config, looks_like_config
from gateway.commands.actor import actor, record
from gateway.commands.setaside import (
    Progress,
    Scan,
    SetAside,
    local_time,
    replay_properties,
    route_source,
    scan,
    shown_id,
)
from gateway.config import BrokerConfig, Config
from gateway.errors import NoInputError, UnavailableError, UsageError
from gateway.route.chain import load_material

log = logging.getLogger("jgw.dlq")

#: On RabbitMQ 4.x a quorum queue without an explicit limit drops a message after 20 deliveries.
DELIVERY_COUNT_WARNING = 10

EXIT_CODES = ("exit status: 0 done; 1 some selected message was not found or not handled (each one is "
              "named on stderr); 64 usage; 66 unknown route or config file; 69 broker or daemon "
              "unreachable; 78 configuration.")

JSON_HELP = ("machine-readable: a JSON array, one object per message (id, route, reason, detail, failed_at "
             "in local time with offset, age_seconds, attempt, size, origin_queue, broker)")

VERBS = {
    "dlq": (DEAD_LETTER_QUEUE, "list, show, export, delete or replay dead letters",
            "Dead letters: messages jgw could not deliver after every retry, or that the broker "
            "dead-lettered (delivery limit). Fix the cause, then replay them."),
    "quarantine": (QUARANTINE_QUEUE, "list, show, export or delete quarantined messages",
                   "Quarantined messages: refused by a security or policy check (signature, size, "
                   "個人番号, encoding). Never replayed: the source must fix and resend; export them for "
                   "the investigation, then delete them."),
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb, (queue, helptext, intro) in VERBS.items():
        p = sub.add_parser(verb, help=helptext, description=f"{intro}\n\n{EXIT_CODES}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
        lst = acts.add_parser("list", help="id, route, reason, time and size of each message (never the payload)",
                              description=f"List what is in {queue}, one message at a time (bounded memory; "
                                          "a progress line on stderr when it is a terminal). Each message is "
                                          "given back: nothing is removed, nothing is used up. Ids that hold a "
                                          f"個人番号-shaped number are masked as in the logs. {EXIT_CODES}")
        _config(lst)
        lst.add_argument("--route", help="only this route (an unknown route is an error naming the known ones)")
        lst.add_argument("--limit", type=int, metavar="N",
                         help="stop after N messages (the total line says how many were left unread)")
        lst.add_argument("--json", action="store_true", help=JSON_HELP)
        lst.set_defaults(func=cmd_list, queue=queue)

        show = acts.add_parser("show", help="one message: properties and jgw headers",
                               description=f"Show one message of {queue} by id: properties and jgw headers; "
                                           "the source system's header values only with --headers, the "
                                           f"payload only with --payload. JSON on stdout. {EXIT_CODES}")
        _config(show)
        show.add_argument("id", metavar="ID", help=f"message id (jgw {verb} list shows them)")
        show.add_argument("--headers", action="store_true", help="also show the source system's header values")
        show.add_argument("--payload", action="store_true", help="write the payload bytes to stdout")
        show.set_defaults(func=cmd_show, queue=queue)

        exp = acts.add_parser("export", help="write messages, bytes and headers, to a new directory",
                              description=f"Write each selected message of {queue} to DIR (which must not "
                                          "exist or be empty): NNNNN.bin holds the bytes exactly as set "
                                          "aside (a sealed message is the envelope: jgw envelope inspect|verify|"
                                          "open NNNNN.bin), NNNNN.json the properties and every header with "
                                          "its AMQP type. Files are 0600. The messages stay set aside. "
                                          f"Recorded in the audit trail. {EXIT_CODES}")
        _config(exp)
        _selection(exp)
        exp.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory to create")
        exp.set_defaults(func=cmd_export, queue=queue)

        dele = acts.add_parser("delete", help="remove messages for good (recorded, with --reason)",
                               description=f"Remove each selected message from {queue} for good, as "
                                           "postsuper -d does: only the selected messages are acknowledged, "
                                           "one by one, each after its audit record (who, which, why) is "
                                           "written; the others go back untouched. Export first if anyone "
                                           f"may need them. {EXIT_CODES}")
        _config(dele)
        _selection(dele)
        dele.add_argument("--reason", metavar="TEXT", help="why they are deleted (required; recorded)")
        dele.set_defaults(func=cmd_delete, queue=queue)

        if verb == "dlq":
            rep = acts.add_parser("replay", help="put dead letters back on their route (after fixing the cause)",
                                  description="Publish each selected dead letter back to its route's source "
                                              "queue (confirmed), then remove it from jgw.dead-letter. Keeps the "
                                              "message id, so the route's dedup store prevents a duplicate at "
                                              "the sink. Recorded in the audit trail. Exit 0 when all were "
                                              f"replayed, 1 when some failed. {EXIT_CODES}")
            _config(rep)
            _selection(rep)
            rep.set_defaults(func=cmd_replay, queue=queue)


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", metavar="CONFIG", help=CONFIG_HELP)


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="*", metavar="ID", help="message ids")
    p.add_argument("--route", help="every message of this route (with IDs: only those of this route)")
    p.add_argument("--all", action="store_true", help="every message (of --route, if given)")
    p.add_argument("--dry-run", action="store_true", help="take the same path, say what would be done, "
                                                           "change nothing (output says 'simulated')")


# ---------------------------------------------------------------------------------------------- selection

@dataclass
class Selection:
    ids: set[str]
    route: str | None
    everything: bool
    found: set[str] = field(default_factory=set)

    def matches(self, item: SetAside) -> bool:
        if self.route is not None and item.route != self.route:
            return False
        if self.ids:
            return item.message_id in self.ids
        return self.everything or self.route is not None


def _select(args: argparse.Namespace, cfg: Config, verb: str) -> Selection:
    if args.route is not None:
        route_source(cfg, args.route)
    if not args.ids and not args.all and args.route is None:
        raise UsageError(f"name the message ids to {verb}, or --route ROUTE, or --all")
    if args.ids and args.all:
        raise UsageError("give message ids or --all, not both")
    return Selection(ids=set(args.ids), route=args.route, everything=args.all)


def _brokers(cfg: Config, route: str | None) -> list[str]:
    if route is not None:
        r = cfg.routes[route]
        if r.source.file is not None:
            raise UsageError(f"route {route!r} takes files: what it set aside is in the quarantine/ and "
                             f"dead-letter/ subdirectories of {r.source.file.directory}, not in a queue")
        return [r.source.broker]
    return sorted({r.source.broker for r in cfg.routes.values() if r.source.file is None})


def _ssl_factory(cfg: Config) -> blocking.SslFactory:
    """The node's live TLS identity for a TLS broker (mTLS, EXTERNAL login), as the daemon uses it;
    the certificates are loaded on first use, so a node without TLS brokers never reads them."""
    loaded: list[Any] = []

    def factory(broker: BrokerConfig) -> ssl.SSLContext | None:
        if broker.tls is None:
            return None
        if not loaded:
            loaded.append(load_material(cfg))
        return None if loaded[0] is None else loaded[0].ssl_context_for(broker.tls)
    return factory


def _messages(cfg: Config, queue: str, route: str | None, label: str
              ) -> Iterator[tuple[blocking.Session, Scan, SetAside]]:
    """Every message of ``queue`` on each broker this selection can concern, one at a time."""
    for broker in _brokers(cfg, route):
        with blocking.session(cfg.brokers[broker], _ssl_factory(cfg)) as session:
            state = Scan(broker, queue)
            progress = Progress(label)
            warned = False
            try:
                for item in scan(session, state, cfg, progress):
                    if not warned and item.delivery_count >= DELIVERY_COUNT_WARNING \
                            and session.server_version[:1].isdigit() and int(session.server_version.split(".")[0]) >= 4:
                        progress.done()
                        print(f"jgw: warning: {queue} on {broker} (RabbitMQ {session.server_version}): a message "
                              f"was delivered {item.delivery_count} times; RabbitMQ 4 drops a quorum queue's "
                              "message at its delivery limit (20 by default): apply the jgw-set-aside policy "
                              "(docs/operations.md)", file=sys.stderr)
                        warned = True
                    yield session, state, item
            finally:
                progress.done()


def _missing(sel: Selection, queue: str) -> int:
    for mid in sorted(sel.ids - sel.found):
        print(f"{shown_id(mid)}: not found in {queue}", file=sys.stderr)
    return len(sel.ids - sel.found)


# ---------------------------------------------------------------------------------------------- list, show

def cmd_list(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if args.route is not None:
        route_source(cfg, args.route)
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    out = sys.stdout
    shown = read = 0
    states: dict[str, Scan] = {}
    first = True
    if args.json:
        out.write("[")
    else:
        out.write(f"{'ID':<36} {'ROUTE':<24} {'REASON':<20} {'SET ASIDE':<25} {'AGE':>8} {'SIZE':>8}  DETAIL\n")
    for session, state, item in _messages(cfg, args.queue, args.route, "listing"):
        states[session.broker.name] = state
        read += 1
        if args.route is not None and item.route != args.route:
            continue
        row = {"broker": session.broker.name, **item.summary()}
        if args.json:
            out.write(("\n  " if first else ",\n  ") + json.dumps(row, ensure_ascii=False))
        else:
            age = "?" if row["age_seconds"] is None else f"{row['age_seconds']:.0f}s"
            out.write(f"{row['id']:<36} {row['route']:<24} {row['reason']:<20} {row['failed_at'] or '?':<25} "
                      f"{age:>8} {row['size']:>8}  {row['detail']}\n")
        first = False
        shown += 1
        if args.limit is not None and shown >= args.limit:
            break
    depth_total = sum(st.depth or 0 for st in states.values())
    if args.json:
        out.write("\n]\n" if not first else "]\n")
    else:
        which = f" of route {args.route}" if args.route else ""
        line = f"{shown} message(s){which} in {args.queue}"
        if args.route:
            line += f" ({read} read)"
        if args.limit is not None and shown >= args.limit:
            line += f"; stopped at --limit {args.limit}, {max(0, depth_total - read)} not read"
        out.write(line + "\n")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    if args.config is None and looks_like_config(args.id):
        raise UsageError(f"{args.id}: that is the config file; name the message id too")
    cfg = load_config(args)
    wanted = args.id
    read = 0
    for session, _state, item in _messages(cfg, args.queue, None, "searching"):
        read += 1
        if item.message_id != wanted:
            continue
        if args.payload:
            sys.stdout.buffer.write(item.body)
            return 0
        p = item.properties
        info = {"broker": session.broker.name, **item.summary(), "content_type": p.content_type,
                "correlation_id": shown_id(p.correlation_id) or None, "timestamp": _amqp_time(p.timestamp),
                "delivery_count": item.delivery_count, "jgw_headers": item.jgw_headers(),
                "other_headers": item.other_header_names()}
        if args.headers:
            info["other_headers"] = {k: blocking.plain(item.headers[k]) for k in item.other_header_names()}
        print(json.dumps(info, ensure_ascii=False, indent=2, default=str))
        return 0
    raise NoInputError(f"no message with id {shown_id(wanted)!r} in {args.queue} ({read} message(s) there; "
                       f"jgw {'dlq' if args.queue == DEAD_LETTER_QUEUE else 'quarantine'} list shows them)")


def _amqp_time(ts: int | None) -> str | None:
    return local_time(float(ts)) if isinstance(ts, int) else None


# ---------------------------------------------------------------------------------------------- export

def _typed(value: Any) -> Any:
    """An AMQP field value as JSON that keeps its type: bytes, timestamps and decimals are tagged."""
    if isinstance(value, bytes | bytearray):
        return {"bytes_base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"timestamp": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, dict):
        return {str(k): _typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_typed(v) for v in value]
    return value


PROPERTY_NAMES = ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                  "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id")


def _check_out_dir(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not an empty directory (nothing written; choose a new one)")
    parent = out.parent if out.parent != Path("") else Path(".")
    if not os.access(parent if not out.exists() else out, os.W_OK):
        raise UsageError(f"--out {out}: cannot create files there as uid {os.getuid()}")


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_export(args: argparse.Namespace) -> int:
    cfg = load_config(args, ids="ids")
    sel = _select(args, cfg, "export")
    _check_out_dir(args.out)
    if not args.dry_run:
        args.out.mkdir(mode=0o700, parents=True, exist_ok=True)
    who = actor()
    n = 0
    for session, _state, item in _messages(cfg, args.queue, sel.route, "exporting"):
        if not sel.matches(item):
            continue
        sel.found.add(item.message_id)
        n += 1
        stem = f"{n:05d}"
        if args.dry_run:
            print(f"{shown_id(item.message_id)}: would export to {args.out / (stem + '.bin')} ({item.size} bytes, "
                  f"route {item.route}, {item.reason})")
            continue
        p = item.properties
        meta = {"queue": args.queue, "broker": session.broker.name, "route": item.route, "reason": item.reason,
                "detail": item.detail, "failed_at": local_time(item.failed_at), "size": item.size,
                "sha256": hashlib.sha256(item.body).hexdigest(), "body_file": f"{stem}.bin",
                "exported_at": local_time(dt.datetime.now().timestamp()), "exported_by": who,
                "properties": {k: _typed(getattr(p, k)) for k in PROPERTY_NAMES if getattr(p, k) is not None},
                "headers": _typed(dict(p.headers or {}))}
        _write_new(args.out / f"{stem}.bin", item.body)
        _write_new(args.out / f"{stem}.json",
                   (json.dumps(meta, ensure_ascii=False, indent=2, default=str) + "\n").encode("utf-8"))
        record(cfg, "operator", action="export", queue=args.queue, msg=item.message_id, route=item.route,
               target=str(args.out / f"{stem}.bin"), digest=payload_digest(item.body), size=item.size)
        print(f"{shown_id(item.message_id)}: exported to {args.out / (stem + '.bin')} ({item.size} bytes)")
    failed = _missing(sel, args.queue)
    note = " (simulated, nothing written)" if args.dry_run else ""
    print(f"{'would export' if args.dry_run else 'exported'} {n} message(s) from {args.queue} to {args.out}{note}")
    return 0 if failed == 0 else 1


# ---------------------------------------------------------------------------------------------- delete

def cmd_delete(args: argparse.Namespace) -> int:
    cfg = load_config(args, ids="ids")
    sel = _select(args, cfg, "delete")
    if not args.reason or not args.reason.strip():
        raise UsageError("--reason TEXT is required: say why these messages are deleted (it is recorded)")
    deleted = 0
    states: dict[str, Scan] = {}
    for session, state, item in _messages(cfg, args.queue, sel.route, "deleting"):
        states[session.broker.name] = state
        if not sel.matches(item):
            continue
        sel.found.add(item.message_id)
        if args.dry_run:
            print(f"{shown_id(item.message_id)}: would delete (route {item.route}, {item.reason}, {item.size} bytes)")
            deleted += 1
            continue
        # the record first: a delete that cannot be recorded does not happen
        record(cfg, "operator", action="delete", queue=args.queue, msg=item.message_id, route=item.route,
               target=args.queue, set_aside_reason=item.reason, why=args.reason, digest=payload_digest(item.body),
               size=item.size)
        session.ack(item.delivery_tag)
        deleted += 1
        print(f"{shown_id(item.message_id)}: deleted (route {item.route}, {item.reason})")
    failed = _missing(sel, args.queue)
    note = " (simulated, nothing changed)" if args.dry_run else ""
    print(f"{'would delete' if args.dry_run else 'deleted'} {deleted} message(s) from {args.queue}{note}")
    for broker, state in states.items():  # the others are back: only those deleted went
        print(f"{args.queue} on {broker}: {state.depth} before, {state.after} now")
    return 0 if failed == 0 else 1


# ---------------------------------------------------------------------------------------------- replay

def cmd_replay(args: argparse.Namespace) -> int:
    cfg = load_config(args, ids="ids")
    sel = _select(args, cfg, "replay")
    replayed, failed = 0, 0
    verb = "would replay" if args.dry_run else "replayed"
    for session, _state, item in _messages(cfg, args.queue, sel.route, "replaying"):
        if not sel.matches(item):
            continue
        sel.found.add(item.message_id)
        route = cfg.routes.get(item.route)
        shown = shown_id(item.message_id)
        if route is None or route.source.broker != session.broker.name:
            print(f"{shown}: not replayed: route {item.route!r} is not a route of this config on broker "
                  f"{session.broker.name}", file=sys.stderr)
            failed += 1
            continue
        if args.dry_run:
            print(f"{shown}: {verb} to {route.name} ({route.source.queue})")
            replayed += 1
            continue
        try:
            session.publish_confirmed("", route.source.queue, item.body, replay_properties(item))
        except (NoInputError, UnavailableError) as exc:
            print(f"{shown}: not replayed: {exc}", file=sys.stderr)
            failed += 1
            continue
        record(cfg, "replay", msg=item.message_id, route=route.name, reason=item.reason, seed=route.seed or "",
               digest=payload_digest(item.body), size=len(item.body), outcome="replayed")
        session.ack(item.delivery_tag)
        replayed += 1
        log.warning("dead letter replayed", extra={"message_id": item.message_id, "route": route.name,
                                                   "reason": item.reason})
        print(f"{shown}: {verb} to {route.name} ({route.source.queue})")
    failed += _missing(sel, args.queue)
    note = " (simulated, nothing changed)" if args.dry_run else ""
    print(f"{verb} {replayed}, failed {failed}{note}")
    return 0 if failed == 0 else 1

