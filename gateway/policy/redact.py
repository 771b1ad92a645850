"""Keep 個人番号 out of log lines, evidence and labels, and keep every id findable.

NAME
    redact - mask a 個人番号 where one can be; a keyed digest for an id that must be masked

DESCRIPTION
    Where a 個人番号 can be in text (docs/policy.md §6, "the text rule"): twelve digits written as
    staff write one (twelve in a row, or groups 4-4-4, 4-8, 8-4 with one space- or hyphen-like
    character between groups; any Unicode decimal digits, widths may mix) that stand alone:

    * not part of a longer number: no digit touches the twelve, and the same separator does not go
      on to another group of digits (``1234-5678-9012-3456``, a 13-digit 法人番号, the 16 digits of an
      audit segment name are not candidates);
    * not right after a plus sign (an E.164 phone number);
    * not inside a longer word: an ASCII letter on *both* sides (``3f2a757491186252bc`` in a hex id;
      one letter on one side is still a candidate: ``A757491186252``, ``番号757491186252`` are);
    * and the twelfth digit is the check digit of the first eleven.

    ``redact_text(s)`` masks the digits of every candidate with '*', again until none is left (a
    masked neighbour can make a run stand alone). ``contains_personal_number(s)`` says whether there is
    one. ``ord-757491-186252`` (6-6) or a hex id is left as it is; ``shori-1234-5678-9018`` and a bare
    ``757491186252`` are candidates.

    An id (message id, correlation id: any field in ``ID_FIELDS`` or named ``*_id``) is never masked
    digit by digit, which would make it unfindable: an id holding a candidate is replaced as a whole by
    its keyed digest ``id_digest(value, key)`` = ``id#`` + 24 letters (the first 96 bits of
    HMAC-SHA-256 under the node's id key, written in ``gateway.ids.ALPHABET``, so a digest holds no
    digit and is never masked itself). ``jgw audit show --id``, ``jgw audit id``, ``jgw dlq list`` and
    the runbooks' log search compute the same digest from the id an operator has. The key
    (``IdKey``) is 32 random bytes in ``<state_dir>/id-digest.key``, mode 0600, created on first use;
    without it no one can test a guessed 個人番号 against a digest (there are only 10**11 of them).

    ``RedactingFilter`` rewrites a ``logging.LogRecord`` in place before any handler formats it: the
    formatted message (args merged), every extra attribute (strings, numbers, containers, other
    objects by their str(); id fields by ``safe_id``), the exception text and the stack text. Install
    it on handlers, not on loggers: a logger's filters do not see records propagated from child loggers.

        handler.addFilter(RedactingFilter(IdKey.in_state_dir(state_dir)))   # or install_redaction()

Security: reads log records and audit fields produced by jgw itself; trusts nothing in their
arguments. Reads (and on first use creates) the id key file; never logs it or a masked value.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import stat
import threading
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import DataError, NoInputError, PermissionError_, UnavailableError
from gateway.ids import spell
from gateway.policy.detector import PLUS_SIGNS, SEPARATORS, check_digit_ok

MASK = "*"
_SEPS = SEPARATORS + "\t"
_SEP_CLASS = "".join(re.escape(c) for c in _SEPS)
# The digits a 個人番号 is written with, as the payload detector reads them: ASCII and full-width
# (other scripts' decimal digits, e.g. Tangsa or Devanagari, are not how anyone writes one, and the
# detector does not read them either: a run that ends in one is still twelve digits to it).
_D = "0-9\uff10-\uff19"
_DIGIT_CHARS = frozenset("0123456789\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")
# A chain of at least 12 digits, each pair separated by at most one separator character (maximal).
_CHAIN = re.compile(rf"[{_D}](?:[{_SEP_CLASS}]?[{_D}]){{11,}}")
_DIGITS = re.compile(rf"[{_D}]+")
_DIGIT = re.compile(rf"[{_D}]")
#: Group lengths of the written forms of a 個人番号.
_FORMS: tuple[tuple[int, ...], ...] = ((12,), (4, 8), (8, 4), (4, 4, 4))
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

#: Fields that hold ids: replaced whole by their digest when they hold a candidate, never masked.
ID_FIELDS = frozenset({"msg", "msgs", "message_id", "corr", "corrs", "correlation_id", "id", "ids", "out_id",
                       "target"})
ID_DIGEST_PREFIX = "id#"
ID_DIGEST_LETTERS = 24
ID_KEY_NAME = "id-digest.key"
ID_KEY_BYTES = 32
_ID_CONTEXT = b"jgw-id-digest/1\x00"

# LogRecord attributes that are not "extra" fields (kept as they are: jgw code sets them).
_STANDARD = frozenset(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message", "asctime", "_jgw_redacted"}


def _digit_value(ch: str) -> int:
    return ord(ch) - 48 if "0" <= ch <= "9" else unicodedata.digit(ch)


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


def _chain_candidates(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the candidates (the text rule) inside the digit chain ``text[start:end]``."""
    groups = [(m.start(), m.end()) for m in _DIGITS.finditer(text, start, end)]
    seps = [text[groups[i][1]] for i in range(len(groups) - 1)]  # one separator between groups
    lengths = [e - s for s, e in groups]
    spans: list[tuple[int, int]] = []
    n = len(groups)
    for i in range(n):
        for form in _FORMS:
            j = i + len(form)
            if j > n or tuple(lengths[i:j]) != form:
                continue
            used = set(seps[i:j - 1])
            if (i > 0 and seps[i - 1] in used) or (j < n and seps[j - 1] in used):
                continue  # the same separator goes on to more digits: part of a longer number
            a, b = groups[i][0], groups[j - 1][1]
            before = text[a - 1] if a > 0 else ""
            after = text[b] if b < len(text) else ""
            if before and before in PLUS_SIGNS:
                continue
            if before in _ASCII_LETTERS and after in _ASCII_LETTERS:
                continue
            digits = [_digit_value(c) for c in text[a:b] if c in _DIGIT_CHARS]
            if check_digit_ok(digits):
                spans.append((a, b))
    return spans


def find_candidates(text: str) -> list[tuple[int, int]]:
    """(start, end) of every place in ``text`` where a 個人番号 can be (the text rule), in order."""
    if _too_few_digits(text):
        return []
    spans: list[tuple[int, int]] = []
    for m in _CHAIN.finditer(text):
        spans += _chain_candidates(text, m.start(), m.end())
    return spans


def redact_text(text: str) -> str:
    """``text`` with the digits of every candidate replaced by '*'. Fast (and ``is text``) when clean."""
    spans = find_candidates(text)
    while spans:
        chars = list(text)
        for a, b in spans:
            for k in range(a, b):
                if chars[k] in _DIGIT_CHARS:
                    chars[k] = MASK
        text = "".join(chars)
        spans = find_candidates(text)
    return text


def contains_personal_number(text: str) -> bool:
    """True when ``text`` holds a candidate: for tests of logs, labels, headers and operator output."""
    return bool(find_candidates(text))


# --- ids: findable, never masked ------------------------------------------------------------------

def is_id_field(name: str) -> bool:
    return name in ID_FIELDS or name.endswith("_id")


def id_digest(value: str, key: bytes) -> str:
    """``id#`` + 24 letters: the keyed digest an id is recorded and logged as when it must be masked.

    HMAC-SHA-256(key, "jgw-id-digest/1\\0" || UTF-8 of ``value``), first 96 bits, in
    ``gateway.ids.ALPHABET`` (no digits). Any tool holding the node's key finds the id from its value."""
    mac = hmac.new(key, _ID_CONTEXT + value.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return ID_DIGEST_PREFIX + spell(mac[:ID_DIGEST_LETTERS // 2])


def safe_id(value: str, key: IdKey | bytes | None) -> str:
    """``value`` as it may be shown, logged or recorded: itself when it holds no candidate, else its
    keyed digest. Without a key (a tool that cannot read it) the candidate digits are masked instead:
    never shown, but then not findable either."""
    if not contains_personal_number(value):
        return value
    raw = key.get() if isinstance(key, IdKey) else key
    return id_digest(value, raw) if raw is not None else redact_text(value)


def id_matches(shown: str, wanted: str, key: IdKey | bytes | None) -> bool:
    """Is ``shown`` (a value from the trail, a log line or a queue listing) the id ``wanted``?"""
    if shown == wanted:
        return True
    raw = key.get() if isinstance(key, IdKey) else key
    return raw is not None and shown.startswith(ID_DIGEST_PREFIX) and hmac.compare_digest(
        shown, id_digest(wanted, raw))


class IdKey:
    """The node's id-digest key: ``<state_dir>/id-digest.key``, 32 random bytes, mode 0600.

    ``load()`` reads it, creating it on first use (atomically: written to a private temporary file,
    then linked into place, so two processes starting together agree on one key). A key file readable
    by group or others is refused (PermissionError_, exit 77); a short one is DataError (65).
    ``get()`` is ``load()`` for the logging filter: it never raises and returns None when the key
    cannot be had (then ids are masked, not digested)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.create = create
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, *, create: bool = True) -> IdKey:
        return cls(Path(state_dir) / ID_KEY_NAME, create=create)

    def __repr__(self) -> str:
        return f"IdKey({str(self.path)!r})"

    def load(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._read()
            return self._key

    def get(self) -> bytes | None:
        try:
            return self.load()
        except (OSError, DataError, NoInputError, PermissionError_, UnavailableError):
            return None

    def digest(self, value: str) -> str:
        return id_digest(value, self.load())

    def _read(self) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not self.create:
                raise NoInputError(f"{self.path}: no id digest key (jgw creates it on first start)") from None
            self._make()
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except PermissionError as exc:
            raise PermissionError_(f"{self.path}: {exc.strerror}") from exc
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                raise PermissionError_(f"{self.path} has mode {mode:04o}; the id digest key must be 0600 "
                                       "or stricter")
            data = os.read(fd, 4096)
        finally:
            os.close(fd)
        if len(data) < ID_KEY_BYTES:
            raise DataError(f"{self.path}: id digest key of {len(data)} bytes, expected {ID_KEY_BYTES}")
        return data

    def _make(self) -> None:
        directory = self.path.parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = directory / f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, os.urandom(ID_KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another process made it first: use theirs
            finally:
                tmp.unlink()
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except PermissionError as exc:
            raise PermissionError_(f"{self.path}: cannot create the id digest key: {exc.strerror}") from exc
        except OSError as exc:
            raise UnavailableError(f"{self.path}: cannot create the id digest key: {exc.strerror}") from exc


def redact_value(value: Any, _depth: int = 0, *, id_key: IdKey | bytes | None = None,
                 as_id: bool = False) -> Any:
    """A value safe to log: strings redacted (ids, with ``as_id``, replaced by their digest),
    numbers kept unless their digits hold a candidate (then the masked string), containers rebuilt,
    other objects by their redacted str()."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return safe_id(value, id_key) if as_id else redact_text(value)
    if isinstance(value, int | float):
        text = str(value)
        masked = safe_id(text, id_key) if as_id else redact_text(text)
        return value if masked == text else masked
    if _depth > 6:
        return redact_text(repr(value))
    if isinstance(value, Mapping):
        return {redact_value(k, _depth + 1): redact_value(v, _depth + 1, id_key=id_key,
                                                            as_id=as_id or (isinstance(k, str) and is_id_field(k)))
                for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v, _depth + 1, id_key=id_key, as_id=as_id) for v in value]
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
    """Mask every candidate in every part of a record that reaches a log line; id fields
    (``is_id_field``) holding one become their keyed digest under ``id_key``."""

    def __init__(self, id_key: IdKey | bytes | None = None) -> None:
        super().__init__()
        self.id_key = id_key

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
                setattr(record, key, redact_value(value, id_key=self.id_key, as_id=is_id_field(key)))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        record._jgw_redacted = True
        return True


def install_redaction(logger: logging.Logger | None = None, id_key: IdKey | bytes | None = None) -> RedactingFilter:
    """Add one RedactingFilter to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    filt = RedactingFilter(id_key)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(filt)
    return filt
