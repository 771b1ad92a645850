"""Keep 個人番号-shaped values out of log lines.

NAME
    redact - mask 個人番号-shaped digits in text; a logging.Filter that applies it to every record

DESCRIPTION
    ``redact_text(s)`` finds every chain of digits in ``s`` (any Unicode decimal digits: ASCII,
    full-width, others), where a single space or hyphen-like character may stand between two digits,
    and masks every digit of the chain with '*' when any twelve consecutive digits of it satisfy the
    個人番号 check digit. This is wider than the policy detector on purpose: a log line is not a
    payload, and an over-masked time stamp costs nothing while a leaked number cannot be recalled.
    Numbers written in other ways (words, one digit per line) are not recognised.

    ``RedactingFilter`` rewrites a ``logging.LogRecord`` in place before any handler formats it: the
    formatted message (args merged), every extra attribute (strings, numbers, containers, other
    objects by their str()), the exception text and the stack text. Install it on handlers, not on
    loggers: a logger's filters do not see records propagated from child loggers.

        handler.addFilter(RedactingFilter())      # or install_redaction() for the root handlers

Security: reads log records produced by jgw itself; trusts nothing in their arguments.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from gateway.policy.detector import SEPARATORS, check_digit_ok

MASK = "*"
# A chain of at least 12 digits, each pair separated by at most one separator character.
_SEP_CLASS = "".join(re.escape(c) for c in SEPARATORS + "\t")
_CHAIN = re.compile(rf"\d(?:[{_SEP_CLASS}]?\d){{11,}}")
_DIGIT = re.compile(r"\d")

# LogRecord attributes that are not "extra" fields (kept as they are: jgw code sets them).
_STANDARD = frozenset(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message", "asctime", "_jgw_redacted"}


def _digit_value(ch: str) -> int:
    return ord(ch) - 48 if "0" <= ch <= "9" else unicodedata.digit(ch)


def _chain_is_personal(chain: str) -> bool:
    digits = [_digit_value(c) for c in chain if c.isdecimal()]
    return any(check_digit_ok(digits[i:i + 12]) for i in range(len(digits) - 11))


# ASCII prefilter: digit → 'd', space/hyphen/tab → 's', anything else → 'x'.
_MARKS = bytes(ord("d") if 0x30 <= b <= 0x39 else ord("s") if b in b" -\t" else ord("x") for b in range(256))


def _too_few_digits(text: str) -> bool:
    """Cheap exit for the common case (ids, counts, names): an ASCII string in which no run of
    digits and separators holds 12 digits cannot hold a chain. Bytes operations only."""
    if not text.isascii():
        return False
    for piece in text.encode().translate(_MARKS).split(b"x"):
        if len(piece) >= 12 and piece.count(b"d") >= 12:
            return False
    return True


def redact_text(text: str) -> str:
    """``text`` with every digit of a 個人番号-shaped chain replaced by '*'. Fast when clean."""
    if _too_few_digits(text) or not _CHAIN.search(text):
        return text
    return _CHAIN.sub(lambda m: _DIGIT.sub(MASK, m.group()) if _chain_is_personal(m.group()) else m.group(),
                      text)


def contains_personal_number(text: str) -> bool:
    """True when ``redact_text`` would change ``text``: for tests of logs, labels and headers."""
    return not _too_few_digits(text) and any(_chain_is_personal(m.group()) for m in _CHAIN.finditer(text))


def redact_value(value: Any, _depth: int = 0) -> Any:
    """A value safe to log: strings redacted, numbers kept unless their digits look like a
    個人番号 (then the masked string), containers rebuilt, other objects by their redacted str()."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, int | float):
        text = str(value)
        masked = redact_text(text)
        return value if masked == text else masked
    if _depth > 6:
        return redact_text(repr(value))
    if isinstance(value, Mapping):
        return {redact_value(k, _depth + 1): redact_value(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v, _depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, bytes | bytearray):
        return redact_text(repr(bytes(value)))
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__}>"
    masked = redact_text(text)
    return value if masked == text else masked


class RedactingFilter(logging.Filter):
    """Mask 個人番号-shaped values in every part of a record that reaches a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_jgw_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg = redact_text(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, redact_value(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._jgw_redacted = True
        return True


def install_redaction(logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one RedactingFilter to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    filt = RedactingFilter()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt
