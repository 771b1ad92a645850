"""The ``jgw`` command line: one entry point, verbs grouped by task.

Each verb lives in ``gateway/commands/<name>.py`` and registers itself with ``register(sub)``; a
handler returns the exit status. A known error (``JgwError``) prints one line and exits with its
sysexits code; anything else prints "unexpected error" with one line and exits 70, with the
traceback only under ``--debug``. A command line argparse refuses exits 64 (EX_USAGE), not
argparse's 2, so a unit that restarts on failure does not restart forever on a typo. Options may
stand anywhere among a verb's arguments, ``--debug`` too. Output to a closed pipe
(``jgw status | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

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
  dlq            list, show, export, delete or replay dead letters
  quarantine     list, show, export or delete quarantined messages
  scan           check a file for a 個人番号 (exit 0 clean, 1 found, 2 error)
  envelope       inspect, verify, open or seal an envelope by hand

certificates:
  pki            keys and certificate requests; a development CA (init-dev)
  certs          install, check, rotate and roll back this node's certificates

evidence:
  audit          verify, read or recover the audit trail

exit codes: 0 ok, 1 check failed, 64 usage, 65 bad data, 66 no input, 69 unavailable,
            70 internal error, 75 try again, 77 permission, 78 configuration, 141 output pipe closed
            (scan: 2 for usage/encoding errors; envelope: 10-20 name the failed check)

CONFIG: every command that works on a node takes its config file first; left out, it is
$JGW_CONFIG, else /etc/jgw/jgw.toml.
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


#: What a shell reports for a command that SIGPIPE ended (128 + 13); jgw says nothing on stderr.
EXIT_BROKEN_PIPE = 141

_REST = re.compile(r"``([^`]+)``|:[a-z]+:`([^`]+)`")


def _plain_text(text: str) -> str:
    """Help text without reStructuredText markup (the descriptions come from module docstrings)."""
    return _REST.sub(lambda m: m.group(1) or m.group(2), text)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions without reST markup; a paragraph written on one line is wrapped to the
    terminal, one written on several lines (a table, a list) is kept as written."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(_plain_text(text))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for para in text.split("\n\n"):
            if "\n" in para.strip("\n"):
                out.append("".join(indent + line for line in para.splitlines(keepends=True)))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n\n".join(out)

    def _expand_help(self, action: argparse.Action) -> str:
        return _plain_text(super()._expand_help(action))


class _Subcommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose own options may stand anywhere among their positional arguments
    (``jgw dlq replay CONFIG --dry-run ID``): a leaf verb is parsed with parse_intermixed_args."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        name, rest = values[0], values[1:]
        if self.dest is not argparse.SUPPRESS:
            setattr(namespace, self.dest, name)
        try:
            sub = self._name_parser_map[name]
        except KeyError:
            choices = ", ".join(self._name_parser_map)
            raise argparse.ArgumentError(self, f"unknown command {name!r} (choose from {choices})") from None
        nested = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
        own = type(sub).parse_known_args is not argparse.ArgumentParser.parse_known_args
        if nested or own:  # a verb with its own verbs, or its own way of parsing (certs)
            subns, rest = sub.parse_known_args(rest, None)
        else:
            subns, rest = sub.parse_known_intermixed_args(rest, None)
        for key, value in vars(subns).items():
            setattr(namespace, key, value)
        if rest:
            vars(namespace).setdefault(argparse._UNRECOGNIZED_ARGS_ATTR, [])
            getattr(namespace, argparse._UNRECOGNIZED_ARGS_ATTR).extend(rest)


class JgwParser(argparse.ArgumentParser):
    """argparse with jgw's conventions: usage errors exit 64; help without reST markup."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # every verb's help is plain text; descriptions keep their line breaks (they are written so)
        kwargs["formatter_class"] = _Formatter
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Subcommands)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(os.EX_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = JgwParser(prog="jgw", description=OVERVIEW, usage="jgw [-h] [--version] [--debug] COMMAND ...")
    parser.add_argument("--version", action="version", version=f"jgw {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors "
                                                            "(anywhere on the command line)")
    # the overview above lists every command once, grouped by task: argparse does not list them again
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="jgw",
                                help=argparse.SUPPRESS)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere before "--" (after the verb too)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    if debug:
        argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            # a verb parser that is not a JgwParser exits 2 on a usage error: that is 64 here
            if exc.code == 2:
                raise SystemExit(os.EX_USAGE) from None
            raise
        args.debug = debug
        if not getattr(args, "func", None):
            parser.print_help()
            return os.EX_USAGE
        try:
            status: int = args.func(args)
            sys.stdout.flush()
            return status
        except JgwError as exc:
            print(f"jgw: {exc}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:
            raise
        except Exception as exc:  # an unexpected error is our bug: one line, code 70
            if debug:
                traceback.print_exc()
            print(f"jgw: unexpected error: {type(exc).__name__}: {exc} (run with --debug for details)",
                  file=sys.stderr)
            return 70
    except BrokenPipeError:
        # the reader went away (jgw status | head): nothing more to say, and say nothing more;
        # stdout is pointed at /dev/null so the interpreter's final flush does not complain
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
