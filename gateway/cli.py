"""The ``jgw`` command line: one entry point, verbs grouped by task.

Each verb lives in ``gateway/commands/<name>.py`` and registers itself with ``register(sub)``; a
handler returns the exit status. A known error (``JgwError``) prints one line and exits with its
sysexits code; anything else prints "unexpected error" with one line and exits 70, with the
traceback only under ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from gateway import __version__
from gateway.errors import JgwError

OVERVIEW = """\
jgw: store-and-forward message gateway (relay, seal/open, 個人番号 policy, evidence)

run the gateway:
  run            run the relay daemon for a node (systemd: Type=notify; SIGHUP reloads certificates)
  check-config   validate a config file and print the effective routes
  routes         list routes with their seed flows, or the seed catalog
  status         routes, link state, queue depth and oldest-message age
  reload         reload certificates in the running daemon (as SIGHUP) and wait for the result

move and inspect messages:
  send           inject payloads on a route as its source system would
  dlq            list, show or replay dead letters
  quarantine     list or show quarantined messages
  scan           check a file for a 個人番号 (exit 0 clean, 1 found, 2 error)
  envelope       inspect, verify, open or seal an envelope by hand

certificates:
  pki            keys and certificate requests; a development CA (init-dev)
  certs          install, check, rotate and roll back this node's certificates

evidence:
  audit          verify, read or recover the audit trail

exit codes: 0 ok, 1 check failed, 64 usage, 65 bad data, 66 no input, 69 unavailable,
            70 internal error, 75 try again, 77 permission, 78 configuration
            (scan: 2 for usage/encoding errors; envelope: 10-20 name the failed check)
"""

# Verb modules, in the order their help appears. Each exposes register(subparsers).
COMMAND_MODULES: tuple[str, ...] = (
    "gateway.commands.run",
    "gateway.commands.check_config",
    "gateway.commands.routes",
    "gateway.commands.status",
    "gateway.commands.reload",
    "gateway.commands.send",
    "gateway.commands.dlq",
    "gateway.commands.scan",
    "gateway.commands.envelope",
    "gateway.commands.pki",
    "gateway.commands.certs",
    "gateway.commands.audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jgw", description=OVERVIEW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jgw {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 64
    try:
        status: int = args.func(args)
        return status
    except JgwError as exc:
        print(f"jgw: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unexpected error is our bug: one line, code 70
        if args.debug:
            traceback.print_exc()
        print(f"jgw: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
