"""``jgw audit verify|head|show|recover``: check and read the node's audit trail.

verify PATH [--anchor SEQ:HASH]... [--dedup FILE]
    Check every segment under PATH (the audit directory, or one segment file): each record's hash,
    the chain between records and between segments, expiry records, and exported anchors. Prints
    each problem as ``FILE: record N (seq S): what`` and exits 0 when intact, 1 when anything was
    edited, removed, reordered or torn, 66 when there is nothing to verify, 64 on a bad argument.
    With ``--dedup STATE_DIR/dedup.sqlite3``, also every id the dedup store holds as delivered must
    have its deliver record in the trail (exit 1 and ``DISAGREES`` lines when not).
head PATH
    Print ``SEQ HASH`` of the last record, to export somewhere the node cannot write (then verify
    later with ``--anchor SEQ:HASH``).
show PATH [--from SEQ] [--event EV] [--id ID] [--id-key FILE] [--utc] [--json]
    Print records (ids, routes, sizes, digests, outcomes; there is no payload in the trail), times
    in the operator's time zone with its offset (--utc: as recorded, UTC). An unknown event is an
    error naming the known ones; when nothing matches, stderr says so. ``--id ID`` (may repeat)
    keeps the records whose message id or correlation id is ID, in clear or as its keyed digest: an
    id that may hold a 個人番号 is recorded as ``id#...`` (docs/audit.md).
id PATH ID... [--id-key FILE]
    Print each ID as the trail and the logs show it: itself, or its ``id#...`` digest. For the log
    search: ``journalctl -u jgw | grep -F "message_id=$(jgw audit id PATH ID)"``.

The id-digest key is ``id-digest.key`` in the node's state directory, by default the parent of PATH
(the audit directory's default place is ``<state_dir>/audit``); ``--id-key`` names it elsewhere.
recover PATH --actor NAME
    After investigating a damaged segment reported by ``verify`` (jgw refuses to start on one),
    move the damaged tail to a read-only side file and record who did it. jgw must be stopped.

Security: reads and (recover only) writes the local audit directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any

from gateway import audit
from gateway.audit.format import OWN_EVENTS
from gateway.errors import NoInputError, UsageError
from gateway.policy.redact import IdKey, contains_personal_number

EXIT_INTACT, EXIT_TAMPERED = 0, 1


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="verify, read or recover the audit trail",
                       description=__doc__.split("\n\nSecurity:")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="audit_command", metavar="VERB", required=True)
    v = verbs.add_parser("verify", help="detect edited, removed or reordered records (exit 0 intact, 1 not)")
    v.add_argument("path", metavar="PATH", help="audit directory or one segment file")
    v.add_argument("--anchor", action="append", default=[], metavar="SEQ:HASH",
                   help="a head exported earlier (jgw audit head); may repeat")
    v.add_argument("--dedup", metavar="FILE", help="the node's dedup store (STATE_DIR/dedup.sqlite3): every id "
                   "it holds as delivered must have a deliver record")
    v.add_argument("--quiet", "-q", action="store_true", help="print problems only")
    v.set_defaults(func=run_verify)
    h = verbs.add_parser("head", help="print SEQ HASH of the last record, for export")
    h.add_argument("path", metavar="PATH")
    h.set_defaults(func=run_head)
    s = verbs.add_parser("show", help="print records")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ")
    s.add_argument("--event", action="append", default=[], metavar="EV", help="only these events; may repeat")
    s.add_argument("--id", dest="ids", action="append", default=[], metavar="ID",
                   help="only records of this message or correlation id (clear or as its digest); may repeat")
    s.add_argument("--id-key", metavar="FILE", help="the node's id-digest key (default: PATH/../id-digest.key)")
    s.add_argument("--utc", action="store_true", help="show times in UTC as recorded, not in local time")
    s.add_argument("--json", action="store_true", help="one JSON object per line, exactly as recorded (UTC)")
    s.set_defaults(func=run_show)
    i = verbs.add_parser("id", help="print ids as the trail and the logs show them (clear, or id#digest)")
    i.add_argument("path", metavar="PATH", help="audit directory (its parent holds the id key)")
    i.add_argument("ids", nargs="+", metavar="ID")
    i.add_argument("--id-key", metavar="FILE", help="the node's id-digest key (default: PATH/../id-digest.key)")
    i.set_defaults(func=run_id)
    r = verbs.add_parser("recover", help="set a damaged tail aside (jgw stopped)")
    r.add_argument("path", metavar="PATH")
    r.add_argument("--actor", required=True, help="who is doing this (recorded)")
    r.set_defaults(func=run_recover)


def _anchors(values: list[str]) -> dict[int, str]:
    out = {}
    for v in values:
        m = re.fullmatch(r"(\d+):([0-9a-f]{64})", v.strip())
        if not m:
            raise UsageError(f"--anchor {v!r}: expected SEQ:HASH (64 lower-case hex digits)")
        out[int(m.group(1))] = m.group(2)
    return out


def run_verify(args: argparse.Namespace) -> int:
    report = audit.verify(args.path, _anchors(args.anchor))
    for finding in report.problems:
        print(f"TAMPERED {finding}")
    disagree = audit.check_dedup(args.path, args.dedup) if args.dedup else []
    for finding in disagree:
        print(f"DISAGREES {finding}")
    if not args.quiet:
        for finding in report.notices:
            print(f"notice   {finding}")
        span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
        state = "intact" if report.intact else f"NOT intact: {len(report.problems)} problem(s)"
        print(f"{args.path}: {report.segments} segment(s), {report.records} record(s), {span}: {state}")
        if args.dedup:
            print(f"{args.dedup}: " + (f"{len(disagree)} delivered id(s) without a deliver record" if disagree
                                       else "every delivered id has its deliver record"))
    return EXIT_INTACT if report.intact and not disagree else EXIT_TAMPERED


def run_head(args: argparse.Namespace) -> int:
    report = audit.verify(args.path)
    if report.head is None:
        print(f"{args.path}: no records")
        return EXIT_TAMPERED
    print(f"{report.last_seq} {report.head}")
    return EXIT_INTACT if report.intact else EXIT_TAMPERED


def _shown_time(text: str, utc: bool) -> str:
    """A record's time (RFC 3339 UTC) in the operator's zone with its offset, or as recorded."""
    if utc:
        return text
    try:
        when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return text
    return when.astimezone().isoformat(timespec="milliseconds")


#: Record fields an id can be in (``--id``); a grouped deliver record holds lists of them.
ID_RECORD_FIELDS = ("msg", "corr", "target", "msgs", "corrs")


def _id_key(args: argparse.Namespace) -> IdKey:
    if args.id_key:
        return IdKey(args.id_key, create=False)
    path = Path(args.path)
    directory = path if path.is_dir() else path.parent
    return IdKey.in_state_dir(directory.resolve().parent, create=False)


def _id_forms(args: argparse.Namespace) -> set[str]:
    """Every form the ``--id`` values can take in the trail: clear, and digested under the key."""
    forms = set(args.ids)
    needs_key = [i for i in args.ids if contains_personal_number(i)]
    if needs_key:
        key = _id_key(args)
        try:
            forms |= {key.digest(i) for i in needs_key}
        except NoInputError:
            print(f"jgw audit: no id key at {key.path} (--id-key FILE): an id recorded as its digest "
                  "cannot be matched", file=sys.stderr)
    return forms


def run_id(args: argparse.Namespace) -> int:
    key = _id_key(args)
    for value in args.ids:
        print(key.digest(value) if contains_personal_number(value) else value)
    return 0


def _holds(value: Any, ids: set[str]) -> bool:
    if isinstance(value, str):
        return value in ids
    return isinstance(value, list) and any(isinstance(v, str) and v in ids for v in value)


def run_show(args: argparse.Namespace) -> int:
    wanted = set(args.event)
    known = sorted(audit.EVENTS | OWN_EVENTS)
    unknown = sorted(wanted - set(known))
    if unknown:
        raise UsageError(f"--event {unknown[0]!r}: no such event (events: {', '.join(known)})")
    shown = total = 0
    last_seq = None
    ids = _id_forms(args) if args.ids else None
    for _name, _number, rec in audit.records(args.path):
        total += 1
        last_seq = rec["seq"]
        if rec["seq"] < args.from_seq or (wanted and rec["ev"] not in wanted):
            continue
        if ids is not None and not any(_holds(rec.get(f), ids) for f in ID_RECORD_FIELDS):
            continue
        shown += 1
        if args.json:
            print(json.dumps(rec, ensure_ascii=False, sort_keys=True))
        else:
            rest = " ".join(f"{k}={rec[k]}" for k in sorted(rec) if k not in ("seq", "prev", "t", "ev"))
            print(f"{rec['seq']:>8} {_shown_time(rec['t'], args.utc)} {rec['ev']:<13} {rest}")
    if shown == 0:
        which = f" of event {', '.join(sorted(wanted))}" if wanted else ""
        since = f" from seq {args.from_seq}" if args.from_seq else ""
        print(f"jgw audit show: no records{which}{since} ({total} record(s) in {args.path}, last seq {last_seq})",
              file=sys.stderr)
    return 0


def run_recover(args: argparse.Namespace) -> int:
    aside = audit.recover(args.path, args.actor)
    if aside is None:
        print(f"{args.path}: nothing to recover")
    else:
        print(f"{args.path}: damaged tail moved to {aside}")
    return 0
