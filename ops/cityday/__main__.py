"""``make cityday``: a city's day over every route of config/examples (ops/cityday/day.py, docs/cityday.md).

Prints the per-route and per-system table, writes ``cityday-out/report.json`` and ends with one
summary line (``... lost=0``). Exit status 0 when nothing was lost, order and pairing held, nothing
ended where it must not, and ``jgw audit verify`` passed at every site; 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.options import redact_url
from ops.cityday.day import ROOT, Scale, ok, run, summary, table
from tests.lab.sshd import usable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.cityday", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "cityday-out", help="run directory (wiped first)")
    parser.add_argument("--seed", type=int, default=20261203, help="traffic and fault schedule seed")
    parser.add_argument("--tick-seconds", type=float, default=Scale.tick_seconds,
                        help="real seconds for ten simulated minutes")
    args = parser.parse_args(argv)
    reason = usable()
    if reason:
        print(f"cityday: the file routes need a private OpenSSH sshd: {reason}", file=sys.stderr)
        return 69
    rep = run(args.out, seed=args.seed, scale=Scale(tick_seconds=args.tick_seconds))
    print(table(rep), flush=True)
    print(f"cityday: report {args.out / 'report.json'}; {rep['elapsed_seconds']} s in all", flush=True)
    print(summary(rep), flush=True)
    return 0 if ok(rep) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        print(f"cityday: FAILED: {type(exc).__name__}: {redact_url(str(exc))}", file=sys.stderr)
        raise
