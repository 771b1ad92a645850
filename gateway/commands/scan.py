"""``jgw scan FILE... --encoding ENC``: look for a 個人番号 in files, the way a route's policy does.

For staff checking a file by hand before it is put on a route that must not carry the 個人番号.
Prints ``FILE: 個人番号 at byte offset N`` for each one found, never the number.

Exit status follows grep(1), not sysexits, because "found" is an answer, not a failure, and
scripts test it the same way (``if jgw scan …; then``): 0 nothing found, 1 found in at least one
file, 2 usage error, unknown or missing encoding, or a file that cannot be read.

Security: reads local files named by the operator; prints offsets only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.policy.detector import EncodingError, known_encodings, scanner

EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan", help="look for a 個人番号 in files (exit 0 none, 1 found, 2 error)",
        description=__doc__.split("\n\n")[0] + "\n\nExit status: 0 nothing found, 1 found, 2 usage, "
        "encoding or read error (grep-style, not sysexits).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", metavar="FILE", nargs="+", help="file to scan ('-' for standard input)")
    p.add_argument("--encoding", "-e", required=True, metavar="ENC",
                   help="payload encoding: utf-8, shift_jis/cp932, euc-jp, utf-16[le|be], ebcdic/cp037, "
                        "cp930/cp939, jef, keis, or 'any' for every view. Known names: "
                        + ", ".join(known_encodings()))
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing; only the exit status")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        sc = scanner(args.encoding)
    except EncodingError as exc:
        print(f"jgw scan: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    status = EXIT_CLEAN
    for name in args.files:
        try:
            if name == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(name, "rb") as fh:
                    data = fh.read()
        except OSError as exc:
            print(f"jgw scan: {name}: cannot read: {exc.strerror}", file=sys.stderr)
            return EXIT_ERROR
        offsets = sc.find(data)
        if offsets:
            status = EXIT_FOUND
            if not args.quiet:
                for off in offsets:
                    print(f"{name}: 個人番号 at byte offset {off}")
    return status
