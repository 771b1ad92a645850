"""Find a 個人番号 in payload bytes, in the encoding the route declares.

NAME
    detector - locate valid 個人番号 in opaque bytes without decoding them

DESCRIPTION
    A 個人番号 is twelve digits whose last digit is the mod-11 check digit of 総務省令第85号 §5
    (weights 2..7, 2..6 from the right; remainder 0 or 1 gives 0). Staff write it as twelve digits
    in a row, or in groups of four with a space or a hyphen between groups; the digits may be ASCII
    or full-width. Each declared encoding gives the byte forms of those digits and separators
    (ASCII 0x30-0x39, Shift_JIS 0x824F-0x8258, EUC-JP 0xA3B0-0xA3B9, UTF-16 ``3x 00`` / ``FF 1x``,
    EBCDIC zoned 0xF0-0xF9, IBM host DBCS 0x42F0-0x42F9, JEF/KEIS 0xA3B0-0xA3B9 between shift
    codes). Nothing is decoded: the payload is mapped to one mark per code unit with
    bytes.translate and the shapes of a number are found with bytes.find; exact bytes regexes run
    only where a full-width digit or a multi-byte separator could be part of one (``_Compiled``).

    A match is reported only when it stands alone: not inside a longer run of digits (a 13-digit
    法人番号, a 16-digit card number written 4-4-4-4), not right after a '+' (an E.164 phone number),
    and starting on a character boundary of the declared encoding (so the second byte of a
    Shift_JIS kanji followed by ASCII letters is never read as a full-width digit).

    The result is byte offsets, never the number: callers log and quarantine with offsets only.

    An undeclared (None, "") or unknown encoding raises ``EncodingError`` with ``code``
    "encoding-undeclared" or "encoding-unknown": on a route that must not carry the 個人番号 the
    caller refuses the message (fail closed). "any" scans every supported view of the bytes.

BUGS
    A 12-digit number that is not a 個人番号 but happens to satisfy the check digit (about one in
    ten random 12-digit strings, e.g. a YYYYMMDDhhmm time stamp) is reported: on a forbidden route
    that is a quarantine an operator can release, never a leak. ISO-2022-JP is not supported.

Security: reads hostile bytes; trusts nothing in them. Never returns or logs digits found.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from gateway.errors import DataError

# Weights for the 11 leading digits, left to right (総務省令第85号 §5: Q = 6,5,4,3,2,7,6,5,4,3,2).
_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)

ASCII_DIGITS = "0123456789"
FULLWIDTH_DIGITS = "０１２３４５６７８９"
#: Characters accepted between groups of four: spaces, hyphens and the dashes IMEs produce instead.
SEPARATORS = " -\u00a0\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u3000\u30fc\uff0d\uff70"
PLUS_SIGNS = "+\uff0b"


def check_digit_ok(digits: list[int] | tuple[int, ...]) -> bool:
    """True when the 12th digit is the check digit of the first 11."""
    remainder = sum(d * w for d, w in zip(digits, _WEIGHTS, strict=False)) % 11
    expected = 0 if remainder <= 1 else 11 - remainder
    return digits[11] == expected


class EncodingError(DataError):
    """The route's payload encoding cannot be scanned. ``code`` is the quarantine reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- character-boundary rules (only consulted for a candidate, never on the hot path) -----------

#: (data, pos, width of the form at pos) -> True when pos starts a character of that width.
_Sync = Callable[[bytes, int, int], bool]

def _sync_always(data: bytes, pos: int, width: int) -> bool:
    return True


def _sync_sjis(data: bytes, pos: int, width: int) -> bool:
    """A Shift_JIS byte after a run of n lead-range bytes starts a character iff n is even.

    The byte before that run is not a lead byte, so it ends a character (alone or as a trail);
    from there lead and trail alternate.
    """
    n = 0
    i = pos - 1
    while i >= 0 and (0x81 <= data[i] <= 0x9F or 0xE0 <= data[i] <= 0xFC):
        n += 1
        i -= 1
    return n % 2 == 0


def _sync_eucjp(data: bytes, pos: int, width: int) -> bool:
    if data[pos] < 0x80:
        return True
    i = pos - 1
    while i >= 0 and 0xA1 <= data[i] <= 0xFE:
        i -= 1
    start = i + 1
    if i >= 0 and data[i] == 0x8E:  # SS2: one more byte belongs to the previous character
        start = i + 2
    elif i >= 0 and data[i] == 0x8F:  # SS3: two more bytes
        start = i + 3
    return pos >= start and (pos - start) % 2 == 0


def _sync_even(base: int) -> _Sync:
    def sync(data: bytes, pos: int, width: int) -> bool:
        return (pos - base) % 2 == 0
    return sync


def _sync_shifted(shift_in: tuple[bytes, ...], shift_out: tuple[bytes, ...]) -> _Sync:
    """Host codes (IBM SO/SI, JEF KI/KO, KEIS): double-byte forms count only inside a shift-in
    segment and on an even offset from it; single-byte forms always count (fail towards finding)."""
    def sync(data: bytes, pos: int, width: int) -> bool:
        if width == 1:
            return True
        last_in = max(((data.rfind(s, 0, pos), len(s)) for s in shift_in), default=(-1, 0))
        last_out = max(data.rfind(s, 0, pos) for s in shift_out)
        start, length = last_in
        if start < 0 or last_out > start:
            return False
        return (pos - start - length) % 2 == 0
    return sync


# --- one view of the bytes: the digit, separator and plus forms of one encoding -----------------

def _byte_class(values: Iterable[int]) -> bytes:
    vals = sorted(set(values))
    parts: list[bytes] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        lo, hi = vals[i], vals[j]
        parts.append(b"\\x%02x" % lo if lo == hi else b"\\x%02x-\\x%02x" % (lo, hi))
        i = j + 1
    return b"[" + b"".join(parts) + b"]"


def _alternation(forms: Iterable[bytes]) -> bytes:
    """A regex matching any of ``forms``; longer forms first, grouped by all-but-last byte."""
    by_prefix: dict[bytes, set[int]] = {}
    for f in forms:
        by_prefix.setdefault(f[:-1], set()).add(f[-1])
    branches = []
    for prefix in sorted(by_prefix, key=lambda p: (-len(p), p)):
        branches.append(b"".join(b"\\x%02x" % b for b in prefix) + _byte_class(by_prefix[prefix]))
    return b"(?:" + b"|".join(branches) + b")"


@dataclass(frozen=True)
class _View:
    label: str
    digits: Mapping[bytes, int]
    separators: frozenset[bytes]
    plus: frozenset[bytes]
    sync: _Sync
    #: Digit forms the regex may look behind for exactly: they can never be the tail of another
    #: character at a position the view accepts (ASCII digits in Shift_JIS, every form in UTF-16
    #: at even offsets). Keeps long digit runs linear; other neighbours are checked in Python.
    safe_behind: frozenset[bytes]
    #: Separators that can stand between narrow (single-byte) digits; None: all of them. On host
    #: codes a double-byte separator sits between double-byte digits only (or shifted in and out).
    narrow_separators: frozenset[bytes] | None = None
    #: Host code with shift bytes: single- and double-byte forms never touch.
    shifted: bool = False


def _family_pattern(view: _View, digits: Iterable[bytes], seps: Iterable[bytes]) -> re.Pattern[bytes]:
    """The exact pattern for numbers written in one family of digit forms (ASCII or full-width).

    A number is written in one width: mixing ASCII and full-width digits inside one number is not
    searched for (it does not occur in forms; searching for it would make every digit a branch).
    """
    d = _alternation(digits)
    everything = _alternation(view.digits)
    s = _alternation(seps)
    behind = b"".join(b"(?<!" + _alternation([f for f in view.safe_behind if len(f) == n]) + b")"
                      for n in sorted({len(f) for f in view.safe_behind}))
    return re.compile(behind + d + b"{4}(?:" + s + b"?" + d + b"{4}){2}(?!" + everything + b")")


_D, _S = b"\x01", b"\x02"
#: A narrow number in mark space (one mark per code unit: 1 digit, 2 separator, 0 other), with the
#: unit before and after it, which must not be a digit: 4 shapes x 4 neighbour pairs.
_NEEDLES = tuple(left + shape + right
                 for shape in (_D * 12, _D * 4 + _S + _D * 4 + _S + _D * 4, _D * 4 + _S + _D * 8,
                               _D * 8 + _S + _D * 4)
                 for left in (b"\x00", _S) for right in (b"\x00", _S))


class _Compiled:
    """A view compiled for scanning. ``find`` is the hot path.

    Three passes, each over bytes at C speed, so the regex engine sees only what could be a number:
    1. narrow numbers (ASCII or single-byte digits, one-unit separators): the payload is mapped to
       one mark per code unit (bytes.translate) and the four shapes are found with bytes.find;
    2. narrow numbers with a multi-byte separator (U+3000 in UTF-8 …): the exact regex, only in a
       region where such a separator touches a digit;
    3. full-width / double-byte numbers: the exact regex from each full-width digit on.
    """

    def __init__(self, view: _View) -> None:
        self.view = view
        self.unit = 2 if view.label.startswith("utf-16") else 1
        narrow = [f for f in view.digits if _is_narrow(view, f)]
        wide = [f for f in view.digits if not _is_narrow(view, f)]
        narrow_seps = view.separators if view.narrow_separators is None else view.narrow_separators
        self.narrow = _family_pattern(view, narrow, narrow_seps)
        self.wide = _family_pattern(view, wide, view.separators) if wide else None
        self.wide_digit = re.compile(_alternation(wide)) if wide else None
        single = [f for f in narrow_seps if len(f) == self.unit]
        multi = [f for f in narrow_seps if len(f) > self.unit]
        self.multi_forms = tuple(multi)
        self._mark_groups = self._marks_plan(narrow, single)
        # Where a multi-byte separator may touch a narrow digit: digit → 1, a separator's first or
        # last byte → 2; the needles find the touching pairs, which are then checked exactly.
        adj = bytearray(256)
        for f in multi:
            adj[f[0]] = adj[f[-1]] = 2
        for f in narrow:
            adj[f[0]] = 1
        self.adjacent_table = bytes(adj)
        self.adjacent_needles = (b"\x01\x02", b"\x02\x01")
        self.window = 24 * max(len(f) for f in (*view.digits, *view.separators))
        d = _alternation(view.digits)
        self.token = re.compile(b"(" + d + b")|" + _alternation(view.separators))
        self.forms_by_len = sorted({len(f) for f in (*view.digits, *view.separators, *view.plus)})

    def _marks_plan(self, narrow: list[bytes], single: list[bytes]) -> list[tuple[bytes, bytes | None, int]]:
        """Translate tables giving one mark per code unit: 1 narrow digit, 2 separator, 0 other.

        Byte views need one table. UTF-16 units are pairs (first, second): a unit's mark is the
        first byte's table value AND-ed with a 0xFF/0x00 mask on the second byte, one group per
        distinct second byte, OR-ed together as big integers (no Python loop over the payload).
        """
        if self.unit == 1:
            table = bytearray(256)
            for f in narrow:
                table[f[0]] = 1
            for f in single:
                table[f[0]] = 2
            return [(bytes(table), None, 0)]
        forms = [(1, f) for f in narrow] + [(2, f) for f in single]
        # Key on the byte position with fewer distinct values (the high byte of each unit).
        key = 1 if len({f[1] for _, f in forms}) <= len({f[0] for _, f in forms}) else 0
        groups: dict[int, bytearray] = {}
        for mark, f in forms:
            groups.setdefault(f[key], bytearray(256))[f[1 - key]] = mark
        plan: list[tuple[bytes, bytes | None, int]] = []
        for value, table in sorted(groups.items()):
            mask = bytearray(256)
            mask[value] = 0xFF
            plan.append((bytes(table), bytes(mask), key))
        return plan

    def _marks(self, data: bytes) -> bytes:
        if self.unit == 1:
            return data.translate(self._mark_groups[0][0])
        n = len(data) // 2
        halves = (data[0:2 * n:2], data[1:2 * n:2])
        acc = 0
        for table, mask, key in self._mark_groups:
            assert mask is not None
            acc |= int.from_bytes(halves[1 - key].translate(table), "big") & \
                int.from_bytes(halves[key].translate(mask), "big")
        return acc.to_bytes(n, "big")

    def _char_before(self, data: bytes, pos: int) -> bytes | None:
        v = self.view
        for n in self.forms_by_len:
            if pos - n < 0:
                break
            form = data[pos - n:pos]
            if (form in v.digits or form in v.separators or form in v.plus) and v.sync(data, pos - n, n):
                return form
        return None

    def _char_after(self, data: bytes, pos: int) -> bytes | None:
        v = self.view
        for n in self.forms_by_len:
            form = data[pos:pos + n]
            if len(form) == n and (form in v.digits or form in v.separators):
                return form
        return None

    def _accept(self, data: bytes, start: int, end: int) -> bool:
        v = self.view
        tokens = [(m.group(1), m.end() - m.start()) for m in self.token.finditer(data, start, end)]
        digits = [v.digits[t] for t, _ in tokens if t is not None]
        if len(digits) != 12 or not check_digit_ok(digits):
            return False
        if not v.sync(data, start, tokens[0][1]):
            return False
        if v.shifted and len({w for t, w in tokens if t is not None}) > 1:
            return False  # host codes cannot mix single- and double-byte forms without a shift code
        used = {data[m.start():m.end()] for m in self.token.finditer(data, start, end) if m.group(1) is None}
        before = self._char_before(data, start)
        if before is not None:
            if before in v.digits or before in v.plus:
                return False
            if before in used:
                earlier = self._char_before(data, start - len(before))
                if earlier is not None and earlier in v.digits:
                    return False
        after = self._char_after(data, end)
        if after is not None and after in v.digits:
            return False
        if after is not None and after in used:
            later = self._char_after(data, end + len(after))
            if later is not None and later in v.digits:
                return False
        return True

    def find(self, data: bytes, limit: int | None) -> list[int]:
        hits: set[int] = set()
        unit = self.unit
        # 1. narrow numbers with one-unit separators, in mark space.
        marks = self._marks(data)
        narrow_present = marks.find(b"\x01") >= 0
        if narrow_present:
            padded = b"\x00" + marks + b"\x00"
            for needle in _NEEDLES:
                i = padded.find(needle)
                while i >= 0:  # the number spans units i .. i + len(needle) - 2 of marks
                    start, end = i * unit, (i + len(needle) - 2) * unit
                    if self._accept(data, start, end):
                        hits.add(start)
                    i = padded.find(needle, i + 1)
        if limit is not None and len(hits) >= limit:
            return sorted(hits)[:limit]
        # 2. narrow numbers with a multi-byte separator: only around a separator touching a digit.
        if self.multi_forms and narrow_present:
            touching = data.translate(self.adjacent_table)
            for needle in self.adjacent_needles:
                i = touching.find(needle)
                while i >= 0:
                    if self._separator_at(data, i + 1) or self._separator_before(data, i + 1):
                        self._scan(self.narrow, data, max(0, i - self.window), i + self.window, hits)
                    i = touching.find(needle, i + 1)
        # 3. full-width / double-byte numbers: try the exact pattern at each full-width digit.
        if self.wide is not None and self.wide_digit is not None:
            pos = 0
            search, match = self.wide_digit.search, self.wide.match
            while True:
                d = search(data, pos)
                if d is None:
                    break
                m = match(data, d.start())
                if m is not None and self._accept(data, m.start(), m.end()):
                    hits.add(m.start())
                    pos = m.end()
                else:
                    pos = d.start() + 1
        out = sorted(hits)
        return out[:limit] if limit is not None else out

    def _separator_at(self, data: bytes, pos: int) -> bool:
        return any(data.startswith(f, pos) for f in self.multi_forms)

    def _separator_before(self, data: bytes, pos: int) -> bool:
        return any(data.endswith(f, 0, pos) for f in self.multi_forms)

    def _scan(self, pattern: re.Pattern[bytes], data: bytes, pos: int, stop: int, hits: set[int]) -> None:
        search = pattern.search
        while pos < stop:
            m = search(data, pos, stop)
            if m is None:
                return
            if self._accept(data, m.start(), m.end()):
                hits.add(m.start())
                pos = m.end()
            else:
                pos = m.start() + 1


def _text_forms(codecs: tuple[str, ...], chars: str) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for codec in codecs:
        for ch in chars:
            try:
                out.setdefault(ch.encode(codec), ch)
            except UnicodeEncodeError:
                continue
    return out


def _text_view(label: str, codecs: tuple[str, ...], sync: _Sync, extra_seps: Iterable[bytes] = (),
               safe: bool = True) -> _View:
    digits: dict[bytes, int] = {}
    for form, ch in _text_forms(codecs, ASCII_DIGITS + FULLWIDTH_DIGITS).items():
        digits[form] = int(ch)
    seps = frozenset(_text_forms(codecs, SEPARATORS)) | frozenset(extra_seps)
    plus = frozenset(_text_forms(codecs, PLUS_SIGNS))
    behind = frozenset(f for f in digits if len(f) == 1) if safe else frozenset(digits)
    return _View(label, digits, seps, plus, sync, behind)


def _host_view(label: str, dbcs_digit_base: bytes | None, dbcs_seps: Iterable[bytes], dbcs_plus: bytes | None,
               sync: _Sync, shift: tuple[bytes, bytes] | None = None) -> _View:
    digits = {bytes((0xF0 + d,)): d for d in range(10)}
    sbcs_seps = {b"\x40", b"\x60"}
    seps = set(sbcs_seps)
    plus = {b"\x4e"}
    if dbcs_digit_base is not None and shift is not None:
        for d in range(10):
            digits[dbcs_digit_base[:1] + bytes((dbcs_digit_base[1] + d,))] = d
        seps |= set(dbcs_seps)
        shift_in, shift_out = shift
        # A separator of the other width, shifted in and out again: "1234" SO 0x4040 SI "5678".
        seps |= {shift_in + s + shift_out for s in dbcs_seps}
        seps |= {shift_out + s + shift_in for s in sbcs_seps}
        if dbcs_plus:
            plus.add(dbcs_plus)
    narrow_seps = frozenset(f for f in seps if len(f) == 1 or f[:1] in (b"\x0e", b"\x28", b"\x0a"))
    return _View(label, digits, frozenset(seps), frozenset(plus), sync,
                 frozenset(f for f in digits if len(f) == 1), narrow_separators=narrow_seps,
                 shifted=dbcs_digit_base is not None)


def _is_narrow(view: _View, form: bytes) -> bool:
    """ASCII / single-byte digits, as opposed to full-width or double-byte ones."""
    if len(form) == 1:
        return True
    return view.label.startswith("utf-16") and (form[0] == 0 or form[1] == 0)


def _utf16_view(label: str, codec: str, base: int) -> _View:
    return _text_view(label, (codec,), _sync_even(base), safe=False)


_UTF8 = _text_view("utf-8", ("utf-8",), _sync_always)
_ASCII = _View("ascii", {bytes((0x30 + d,)): d for d in range(10)}, frozenset({b" ", b"-"}),
               frozenset({b"+"}), _sync_always, frozenset(bytes((0x30 + d,)) for d in range(10)))
_SJIS = _text_view("shift_jis", ("cp932", "shift_jis"), _sync_sjis)
_EUCJP = _text_view("euc-jp", ("euc_jp", "euc_jis_2004"), _sync_eucjp,
                    extra_seps=(b"\xa1\xdd", b"\xa1\xbc", b"\x8e\xb0"))
_EBCDIC = _host_view("ebcdic", None, (), None, _sync_always)
_IBM = _host_view("ibm-host", b"\x42\xf0", (b"\x40\x40", b"\x42\x60"), b"\x42\x4e",
                  _sync_shifted((b"\x0e",), (b"\x0f",)), (b"\x0e", b"\x0f"))
_JEF = _host_view("jef", b"\xa3\xb0", (b"\xa1\xa1", b"\xa1\xdd", b"\xa1\xbc"), b"\xa1\xdc",
                  _sync_shifted((b"\x28", b"\x38"), (b"\x29",)), (b"\x28", b"\x29"))
_KEIS = _host_view("keis", b"\xa3\xb0", (b"\xa1\xa1", b"\xa1\xdd", b"\xa1\xbc"), b"\xa1\xdc",
                   _sync_shifted((b"\x0a\x42",), (b"\x0a\x41",)), (b"\x0a\x42", b"\x0a\x41"))


# Declared names (lower case, '_' read as '-') → the views scanned.
_ALIASES: dict[str, str] = {
    "ascii": "ascii", "us-ascii": "ascii",
    "utf-8": "utf-8", "utf8": "utf-8",
    "shift-jis": "shift_jis", "shiftjis": "shift_jis", "sjis": "shift_jis", "cp932": "shift_jis",
    "ms932": "shift_jis", "windows-31j": "shift_jis", "ms-kanji": "shift_jis", "x-sjis": "shift_jis",
    "euc-jp": "euc-jp", "eucjp": "euc-jp", "euc-jis-2004": "euc-jp", "euc-jisx0213": "euc-jp",
    "utf-16": "utf-16", "utf16": "utf-16", "ucs-2": "utf-16",
    "utf-16le": "utf-16le", "utf-16-le": "utf-16le", "ucs-2le": "utf-16le",
    "utf-16be": "utf-16be", "utf-16-be": "utf-16be", "ucs-2be": "utf-16be",
    "ebcdic": "ebcdic", "cp037": "ebcdic", "cp500": "ebcdic", "cp1140": "ebcdic", "cp273": "ebcdic",
    "cp1047": "ebcdic", "ibm037": "ebcdic", "ibm500": "ebcdic",
    "cp930": "ibm-host", "cp939": "ibm-host", "cp1390": "ibm-host", "cp1399": "ibm-host",
    "ibm930": "ibm-host", "ibm939": "ibm-host",
    "jef": "jef", "keis": "keis",
    "any": "any",
}


def canonical_encoding(name: str | None) -> str:
    """The scanner name for a declared encoding, or EncodingError (undeclared / unknown)."""
    if name is None or not name.strip():
        raise EncodingError("encoding-undeclared", "no payload encoding declared")
    key = name.strip().lower().replace("_", "-")
    if key not in _ALIASES:
        # The declared name comes from config, never from a payload: safe to show, but bounded.
        raise EncodingError("encoding-unknown", f"unknown payload encoding {name[:40]!r} "
                                                f"(known: {', '.join(known_encodings())})")
    return _ALIASES[key]


def known_encodings() -> tuple[str, ...]:
    return tuple(sorted(_ALIASES))


_LE = _utf16_view("utf-16le", "utf-16-le", 0)
_BE = _utf16_view("utf-16be", "utf-16-be", 0)
_VIEWS: dict[str, tuple[_View, ...]] = {
    "ascii": (_ASCII,), "utf-8": (_UTF8,), "shift_jis": (_SJIS,), "euc-jp": (_EUCJP,),
    "utf-16": (_LE, _BE), "utf-16le": (_LE,), "utf-16be": (_BE,),
    "ebcdic": (_EBCDIC,), "ibm-host": (_IBM,), "jef": (_JEF,), "keis": (_KEIS,),
    # Every view: utf-8 covers ASCII, the host views cover plain EBCDIC.
    "any": (_UTF8, _SJIS, _EUCJP, _LE, _BE, _IBM, _JEF, _KEIS),
}
_COMPILED: dict[str, _Compiled] = {}


def _compiled(view: _View) -> _Compiled:
    c = _COMPILED.get(view.label)
    if c is None:
        c = _COMPILED[view.label] = _Compiled(view)
    return c


class Scanner:
    """The compiled scan for one declared encoding. Thread-safe; build once per route."""

    def __init__(self, encoding: str | None) -> None:
        self.encoding = canonical_encoding(encoding)
        self._views = tuple(_compiled(v) for v in _VIEWS[self.encoding])

    def find(self, data: bytes, *, limit: int | None = None) -> list[int]:
        """Byte offsets where a 個人番号 starts, ascending (at most ``limit``)."""
        views = self._views
        if self.encoding == "utf-16" and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            views = (_compiled(_LE if data[:2] == b"\xff\xfe" else _BE),)  # the BOM decides
        if len(views) == 1:
            return views[0].find(data, limit)
        hits: set[int] = set()
        for v in views:
            hits.update(v.find(data, limit))
        out = sorted(hits)
        return out[:limit] if limit is not None else out

    def first(self, data: bytes) -> int | None:
        hits = self.find(data, limit=1)
        return hits[0] if hits else None


@lru_cache(maxsize=64)
def scanner(encoding: str | None) -> Scanner:
    """The cached Scanner for a declared encoding (raises EncodingError)."""
    return Scanner(encoding)


def find_personal_numbers(data: bytes, encoding: str | None, *, limit: int | None = None) -> list[int]:
    """Byte offsets of every 個人番号 in ``data`` read in ``encoding``. Never the numbers."""
    return scanner(encoding).find(data, limit=limit)
