"""What staff read matches what the code does: the log events of docs/operations.md, and every ``jgw``
command line in the runbooks parses with the real command-line parser.

A runbook with a misspelt verb or a flag that does not exist fails at 3 a.m., on a closed network,
with nobody to ask; a log event the doc does not list cannot be looked up. Both are checked here
against the code itself (the log calls in the daemon's modules, ``gateway.cli.build_parser``).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from gateway import reasons
from gateway.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
RUNBOOKS = sorted((REPO / "ops" / "runbooks").glob("*.md"))
DAEMON_MODULES = ["route/runner", "route/stages", "route/commit", "route/ends", "amqp/link", "amqp/connection",
                  "amqp/source", "amqp/sink", "service/relay", "tasks", "service/watchdog", "service/sdnotify",
                  "service/metrics_http", "files/route_source", "files/route_sink", "files/endpoint",
                  "cluster/stream"]
LEVELS = ("error", "warning", "info")
JGW = re.compile(r"^(?:/opt/jgw/venv/bin/)?jgw\s+(?!@)")


def _normal(msg: str) -> str:
    """printf-style placeholders in code, '…' in the doc: the same thing."""
    return re.sub(r"%[sdgr]", "…", msg)


def code_events() -> set[tuple[str, str]]:
    out = set()
    call = re.compile(r"log\.(error|warning|info|exception)\(\s*(\"[^\"]*\"(?:\s+if\s+\w+\s+else\s+\"[^\"]*\")?)")
    for name in DAEMON_MODULES:
        text = (REPO / "gateway" / f"{name}.py").read_text()
        found = call.findall(text)
        # a message built at run time (f-string, variable) would escape this check: there must be none
        assert len(found) == len(re.findall(r"log\.(?:error|warning|info|exception)\(", text)), name
        for level, literal in found:
            for msg in re.findall(r"\"([^\"]*)\"", literal):
                out.add(("error" if level == "exception" else level, _normal(msg)))
    return out


def doc_events() -> set[tuple[str, str]]:
    text = DOC.read_text()
    section = text[text.index("### The events"):]
    out = set()
    for row in re.findall(r"^\| [\w.]+ \| (\w+) \| (.+?) \| .*\|$", section, flags=re.M):
        level, cell = row
        for msg in re.findall(r"`([^`]+)`", cell):
            out.add((level, msg))
    return out


def test_every_log_event_is_in_the_doc_with_its_level() -> None:
    code, doc = code_events(), doc_events()
    assert len(code) > 30, "the log call pattern no longer finds the daemon's events"
    assert code - doc == set(), "log events missing from docs/operations.md (or documented at another level)"
    assert doc - code == set(), "docs/operations.md lists log events the code does not emit"


def command_lines(page: Path) -> list[str]:
    """``jgw …`` lines of the page's code blocks (indented or fenced), without trailing comments."""
    out, fenced = [], False
    for raw in page.read_text().splitlines():
        if raw.strip().startswith("```"):
            fenced = not fenced
            continue
        if not (fenced or raw.startswith("    ")):
            continue
        line = raw.strip()
        if JGW.match(line):
            out.append(re.sub(r"\s+#.*$", "", line))
    return out


def inline_commands(page: Path) -> list[str]:
    """``jgw VERB …`` in backticks in running text: at least the verbs must exist."""
    return [m for m in re.findall(r"`((?:/opt/jgw/venv/bin/)?jgw [^`]+)`", page.read_text())]


def parses(line: str) -> str | None:
    """None when the real parser accepts the line, else argparse's complaint."""
    words = shlex.split(line.replace("[", "").replace("]", "").replace(" ...", ""))[1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(words)
    except SystemExit as exc:
        return None if exc.code == 0 else err.getvalue().strip().splitlines()[-1]
    return None


PAGES = [*RUNBOOKS, DOC, REPO / "README.md", REPO / "systemd" / "README.md", REPO / "certs" / "README.md"]


def expand(line: str) -> list[str]:
    """A synopsis line (``jgw dlq list|show|replay CONFIG``, two commands joined by "and") as the
    command lines it stands for."""
    out = []
    for part in re.split(r"\s+and\s+", line):
        words = part.split()
        alt = next((i for i, w in enumerate(words) if "|" in w), None)
        if alt is None:
            out.append(part)
        else:
            out += [" ".join([*words[:alt], choice, *words[alt + 1:]]) for choice in words[alt].split("|")]
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_runbook_command_lines_parse(page: Path) -> None:
    bad = []
    for line in command_lines(page):
        # a synopsis (alternatives, "...") may leave out arguments, but not misname a verb or a flag
        synopsis = "|" in line or line.endswith("...")
        for one in expand(line):
            why = parses(one)
            if why and not (synopsis and "the following arguments are required" in why):
                bad.append(f"{one}  ->  {why}")
    assert bad == [], "\n".join(bad)


def verbs() -> dict[str, set[str]]:
    """jgw's commands and, for each, its sub-verbs (empty for a command without any)."""
    import argparse

    out: dict[str, set[str]] = {}
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in top.choices.items():
        inner = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        out[name] = set(inner[0].choices) if inner else set()
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_runbook_mentions_name_real_verbs(page: Path) -> None:
    known, bad = verbs(), []
    log_messages = {msg for _level, msg in doc_events()}
    for text in inline_commands(page):
        words = text.split()[1:]
        if not words or words[0].startswith("-") or words[0].isupper() or text in log_messages:
            continue  # `jgw --version`, `jgw COMMAND --help`, the `jgw ready` log line
        command, sub = words[0], words[1] if len(words) > 1 else ""
        wrong_sub = bool(known.get(command)) and re.fullmatch(r"[a-z][a-z-]*", sub) is not None \
            and sub not in known[command]
        if command not in known or wrong_sub:
            bad.append(text)
    assert bad == [], f"{page.name}: unknown jgw verbs in {bad}"


def test_the_checks_can_fail() -> None:
    """A wrong flag, a wrong verb and a missing argument are all caught."""
    assert parses("jgw dlq replay /etc/jgw/jgw.toml --everything") is not None
    assert parses("jgw dlq purge /etc/jgw/jgw.toml") is not None
    assert parses("jgw quarantine show") is not None  # CONFIG may be left out (default), the id may not
    assert parses("jgw dlq replay /etc/jgw/jgw.toml MESSAGE_ID [MESSAGE_ID ...]") is None


def test_the_reason_table_of_the_doc_is_the_one_in_the_code() -> None:
    """docs/operations.md's reason codes are generated from gateway/reasons.py: every code, its
    disposition, exit status and text, in the table's order (most severe first)."""
    text = DOC.read_text()
    block = text[text.index("<!-- reasons:begin -->\n") + len("<!-- reasons:begin -->\n"):
                 text.index("<!-- reasons:end -->")]
    assert block == reasons.markdown(), "regenerate with: python -m gateway.reasons"
