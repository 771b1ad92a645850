"""Structured logs: one line per event on stderr, logfmt or JSON, for journald and for people.

Every record becomes exactly one line: ``ts level logger msg`` followed by its fields, which come
from ``extra={...}`` or from ``log_event(logger, level, "message.quarantined", route=…, …)``.
Newlines in values are escaped, so a line is an event and ``grep`` works. Bytes never reach a line:
a ``bytes`` value is shown as ``<N bytes>``, so passing a payload by mistake leaks only its length.

Under systemd (``$JOURNAL_STREAM`` names our stderr) lines start with a ``<N>`` syslog priority, so
journald stores the level (``journalctl -u jgw -p warning`` works) and the timestamp is left to
journald. Levels, for an operator at 3 a.m. (``docs/operations.md``): ERROR needs a person now,
WARNING needs a look today, INFO is the lifecycle (start, ready, reload, link up/down, stop), DEBUG
is per message.

Security: writes to stderr only. Never pass payloads, 個人番号, 住民票コード or order keys as a
message or field; the redaction filter (``gateway.policy.redact``) installed through ``filters`` is the
second line of defence and sees the rendered message, the fields and the exception text.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import IO, Any

FORMATS = ("logfmt", "json")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}
#: Chatty libraries whose INFO lines are connection mechanics, not events an operator needs.
QUIET_LOGGERS = ("pika", "asyncssh")

_SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                    logging.DEBUG: 7}
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName", "_jgw_prepared"}
_RESERVED_KEYS = ("ts", "level", "logger", "msg", "exc")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_NEEDS_QUOTES = re.compile(r'[\s"=\\]|^$')


def _level_name(levelno: int) -> str:
    return logging.getLevelName(levelno).lower()


def _scalar(value: Any) -> str | int | float | bool | None:
    """What a field value may look like in a line: never raw bytes, never multi-line."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(str(_scalar(v)) for v in value)
    return str(value)


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: everything it carries beyond the standard attributes."""
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        name = _KEY_UNSAFE.sub("_", key)
        if name in _RESERVED_KEYS:
            name += "_"
        out[name] = _scalar(value)
    return out


class _Prepare(logging.Filter):
    """Renders message and exception text before any other filter, so a redactor sees final text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_jgw_prepared", False):
            return True
        record.msg = record.getMessage()
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None
        record._jgw_prepared = True
        return True


class _StructuredFormatter(logging.Formatter):
    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def _timestamp(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created).astimezone()
        return when.isoformat(timespec="milliseconds")

    def _prefix(self, record: logging.LogRecord) -> str:
        if not self.journal:
            return ""
        level = max((lv for lv in _SYSLOG_PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        return f"<{_SYSLOG_PRIORITY[level]}>"

    def head(self, record: logging.LogRecord) -> dict[str, Any]:
        head: dict[str, Any] = {}
        if not self.journal:
            head["ts"] = self._timestamp(record)
        head["level"] = _level_name(record.levelno)
        head["logger"] = record.name
        head["msg"] = record.getMessage()
        return head

    def tail(self, record: logging.LogRecord) -> dict[str, Any]:
        tail = record_fields(record)
        exc = record.exc_text
        if exc is None and record.exc_info:
            exc = self.formatException(record.exc_info)
        if exc:
            tail["exc"] = exc
        return tail


class LogfmtFormatter(_StructuredFormatter):
    """``key=value`` pairs; values with spaces, quotes or ``=`` are quoted, newlines escaped."""

    @staticmethod
    def value(v: Any) -> str:
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        text = str(v)
        if _NEEDS_QUOTES.search(text) or not text.isprintable():
            text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
            text = text.replace("\t", "\\t")
            text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
            return f'"{text}"'
        return text

    def format(self, record: logging.LogRecord) -> str:
        pairs = {**self.head(record), **self.tail(record)}
        return self._prefix(record) + " ".join(f"{k}={self.value(v)}" for k, v in pairs.items())


class JsonFormatter(_StructuredFormatter):
    """One JSON object per line, UTF-8 (Japanese text stays readable)."""

    def format(self, record: logging.LogRecord) -> str:
        return self._prefix(record) + json.dumps({**self.head(record), **self.tail(record)},
                                                  ensure_ascii=False, separators=(",", ":"), default=str)


def stderr_is_journal(stream: IO[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True when systemd connected this stream to journald ($JOURNAL_STREAM = device:inode)."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


class _JgwHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler ``setup_logging`` owns, so a reload replaces it instead of adding one."""


def setup_logging(format: str, level: str, *, filters: Sequence[logging.Filter] = (),
                  stream: IO[str] | None = None, journal: bool | None = None) -> None:
    """Send every log record of the process to stderr as one structured line.

    ``format`` is ``logfmt`` or ``json``; ``level`` one of ``LEVELS``. ``filters`` (for example the
    個人番号 redactor) run on our handler after the message and exception text are rendered.
    ``journal`` defaults to detecting journald on the stream. Calling it again (SIGHUP with a new
    log level or format) replaces the previous set-up.
    """
    if format not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {format!r}")
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    out = stream if stream is not None else sys.stderr
    use_journal = stderr_is_journal(out) if journal is None else journal
    handler = _JgwHandler(out)
    handler.setFormatter(LogfmtFormatter(journal=use_journal) if format == "logfmt"
                         else JsonFormatter(journal=use_journal))
    handler.addFilter(_Prepare())
    for f in filters:
        handler.addFilter(f)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _JgwHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level.lower()])
    # pika logs each failed reconnect attempt as several ERROR lines; jgw's own link events say it
    # once, with the broker and the reason. Library lines show only when debugging.
    for name in QUIET_LOGGERS:
        quiet = LEVELS[level.lower()] if level.lower() == "debug" else logging.CRITICAL
        logging.getLogger(name).setLevel(quiet)


def log_event(logger: logging.Logger, level: int | str, event: str, msg: str = "", /,
              **fields: Any) -> None:
    """Log one event with a stable name (``message.quarantined``) and its fields.

    ``msg`` is the human sentence (defaults to the event name). Field names that clash with
    ``LogRecord`` attributes get a trailing underscore instead of breaking the call.
    """
    levelno = LEVELS[level.lower()] if isinstance(level, str) else level
    if not logger.isEnabledFor(levelno):
        return
    extra = {"event": event}
    for key, value in fields.items():
        extra[f"{key}_" if key in _STANDARD_ATTRS or key == "event" else key] = value
    logger.log(levelno, msg or event, extra=extra, stacklevel=2)


def add_log_options(parser: Any, *, default_format: str | None = None,
                    default_level: str | None = None) -> None:
    """``--log-format`` and ``--log-level`` for a verb; None means "as the config file says"."""
    parser.add_argument("--log-format", choices=FORMATS, default=default_format,
                        help="one line per event on stderr as logfmt (default) or JSON")
    parser.add_argument("--log-level", choices=tuple(LEVELS), default=default_level,
                        help="error: needs a person now; warning: look today; info: lifecycle; "
                             "debug: every message")
