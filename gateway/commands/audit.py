"""``jgw audit verify|head|show|recover``: check and read the node's audit trail.

verify PATH [--anchor SEQ:HASH]...
    Check every segment under PATH (the audit directory, or one segment file): each record's hash,
    the chain between records and between segments, expiry records, and exported anchors. Prints
    each problem as ``FILE: record N (seq S): what`` and exits 0 when intact, 1 when anything was
    edited, removed, reordered or torn, 66 when there is nothing to verify, 64 on a bad argument.
head PATH
    Print ``SEQ HASH`` of the last record, to export somewhere the node cannot write (then verify
    later with ``--anchor SEQ:HASH``).
show PATH [--from SEQ] [--event EV] [--json]
    Print records (ids, routes, sizes, digests, outcomes; there is no payload in the trail).
recover PATH --actor NAME
    After investigating a damaged segment reported by ``verify`` (jgw refuses to start on one),
    move the damaged tail to a read-only side file and record who did it. jgw must be stopped.

Security: reads and (recover only) writes the local audit directory.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from gateway import audit
from gateway.errors import UsageError

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
    v.add_argument("--quiet", "-q", action="store_true", help="print problems only")
    v.set_defaults(func=run_verify)
    h = verbs.add_parser("head", help="print SEQ HASH of the last record, for export")
    h.add_argument("path", metavar="PATH")
    h.set_defaults(func=run_head)
    s = verbs.add_parser("show", help="print records")
    s.add_argument("path", metavar="PATH")
    s.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ")
    s.add_argument("--event", action="append", default=[], metavar="EV", help="only these events; may repeat")
    s.add_argument("--json", action="store_true", help="one JSON object per line")
    s.set_defaults(func=run_show)
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
    if not args.quiet:
        for finding in report.notices:
            print(f"notice   {finding}")
        span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
        state = "intact" if report.intact else f"NOT intact: {len(report.problems)} problem(s)"
        print(f"{args.path}: {report.segments} segment(s), {report.records} record(s), {span}: {state}")
    return EXIT_INTACT if report.intact else EXIT_TAMPERED


def run_head(args: argparse.Namespace) -> int:
    report = audit.verify(args.path)
    if report.head is None:
        print(f"{args.path}: no records")
        return EXIT_TAMPERED
    print(f"{report.last_seq} {report.head}")
    return EXIT_INTACT if report.intact else EXIT_TAMPERED


def run_show(args: argparse.Namespace) -> int:
    wanted = set(args.event)
    for _name, _number, rec in audit.records(args.path):
        if rec["seq"] < args.from_seq or (wanted and rec["ev"] not in wanted):
            continue
        if args.json:
            print(json.dumps(rec, ensure_ascii=False, sort_keys=True))
        else:
            rest = " ".join(f"{k}={rec[k]}" for k in sorted(rec) if k not in ("seq", "prev", "t", "ev"))
            print(f"{rec['seq']:>8} {rec['t']} {rec['ev']:<13} {rest}")
    return 0


def run_recover(args: argparse.Namespace) -> int:
    aside = audit.recover(args.path, args.actor)
    if aside is None:
        print(f"{args.path}: nothing to recover")
    else:
        print(f"{args.path}: damaged tail moved to {aside}")
    return 0
