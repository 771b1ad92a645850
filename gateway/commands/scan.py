"""``jgw scan FILE... --encoding ENC``: look for a 個人番号 in files, the way a route's policy does.

For staff checking a file by hand before it is put on a route that must not carry the 個人番号.
Prints ``FILE: 個人番号 at byte offset N`` for each one found, never the number.

A file whose bytes are not valid in the declared encoding gets a warning on stderr (the scan may
miss digits written in another encoding); the exit status does not change.

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


#: The scanner's encodings that Python can check strictly (the host code pages cannot be checked:
#: every byte is valid EBCDIC).
_CHECKABLE = {"ascii": "ascii", "utf-8": "utf-8", "shift_jis": "cp932", "euc-jp": "euc_jp",
              "utf-16le": "utf-16-le", "utf-16be": "utf-16-be"}
_GUESSES = (("utf-8", "utf-8"), ("cp932", "cp932"), ("euc-jp", "euc_jp"))


def encoding_warning(name: str, data: bytes, encoding: str) -> str | None:
    """Say so when ``data`` is not valid in the declared encoding: a Shift_JIS file scanned as
    UTF-8 would otherwise report "nothing found" for digits the scan cannot see."""
    codec = _CHECKABLE.get(encoding)
    if codec is None or not data:
        return None
    try:
        data.decode(codec)
        return None
    except UnicodeDecodeError as exc:
        where = exc.start
    fits = []
    for label, other in _GUESSES:
        if other == codec:
            continue
        try:
            data.decode(other)
            fits.append(label)
        except UnicodeDecodeError:
            pass
    hint = f"; it is valid {' and '.join(fits)}" if fits else ""
    return (f"{name}: warning: not valid {encoding} (first bad byte at offset {where}){hint}: a 個人番号 written "
            f"in another encoding is not found this way; scan with the file's real --encoding, or 'any'")


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
        warning = encoding_warning(name, data, sc.encoding)
        if warning and not args.quiet:
            print(f"jgw scan: {warning}", file=sys.stderr)
        offsets = sc.find(data)
        if offsets:
            status = EXIT_FOUND
            if not args.quiet:
                for off in offsets:
                    print(f"{name}: 個人番号 at byte offset {off}")
    return status
