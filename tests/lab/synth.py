"""Synthetic 個人番号 and payloads for tests, the demo and benchmarks.

Every 個人番号 in this project's tests comes from here: twelve digits with a check digit computed
per 総務省令第85号 §5, drawn from a seeded ``random.Random`` so a failing case can be replayed.
Nothing here is, or is derived from, a real person's number.

Also: look-alikes that must never be taken for a 個人番号 (13-digit 法人番号 with a valid check
digit, phone numbers, dates, 12-digit strings with a wrong check digit), the written forms staff
use (spaces or hyphens between groups of four, full-width digits), and payload builders that put
a number at a known byte offset in any encoding the policy scanner declares.

Security: generates data only; talks to nothing. Numbers are random, never real.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

# Weights for the 11 leading digits, left to right (P11..P1 with Q = 6,5,4,3,2,7,6,5,4,3,2).
_WEIGHTS = (6, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_FW = str.maketrans("0123456789", "０１２３４５６７８９")


def check_digit(first11: str) -> int:
    """The 個人番号 check digit of 11 ASCII digits (remainder 0 or 1 gives 0)."""
    if len(first11) != 11 or not first11.isascii() or not first11.isdigit():
        raise ValueError("need 11 ASCII digits")
    remainder = sum(int(d) * w for d, w in zip(first11, _WEIGHTS, strict=True)) % 11
    return 0 if remainder <= 1 else 11 - remainder


def is_valid(number: str) -> bool:
    return len(number) == 12 and number.isascii() and number.isdigit() and \
        check_digit(number[:11]) == int(number[11])


def valid_personal_number(rng: random.Random) -> str:
    """Twelve ASCII digits with a valid check digit."""
    first = "".join(rng.choice("0123456789") for _ in range(11))
    return first + str(check_digit(first))


def invalid_check_digit(rng: random.Random) -> str:
    """Twelve ASCII digits whose last digit is any digit but the right one."""
    first = "".join(rng.choice("0123456789") for _ in range(11))
    good = check_digit(first)
    return first + str(rng.choice([d for d in range(10) if d != good]))


def corporate_number(rng: random.Random) -> str:
    """A 13-digit 法人番号 with a valid check digit (the first digit; mod 9, weights 1,2 from the right)."""
    body = "".join(rng.choice("0123456789") for _ in range(12))
    total = sum(int(d) * (1 if n % 2 == 1 else 2) for n, d in enumerate(reversed(body), start=1))
    return str(9 - total % 9) + body


def phone_number(rng: random.Random) -> str:
    """A Japanese phone number as staff write it: 03-1234-5678, 090-1234-5678, 0120-123-456."""
    kind = rng.randrange(4)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    if kind == 0:
        return f"03-{digits(4)}-{digits(4)}"
    if kind == 1:
        return f"0{rng.choice('789')}0-{digits(4)}-{digits(4)}"
    if kind == 2:
        return f"0120-{digits(3)}-{digits(3)}"
    return f"0{rng.randrange(1, 10)}{digits(2)}-{digits(2)}-{digits(4)}"


def date_string(rng: random.Random) -> str:
    y, m, d = rng.randrange(1900, 2100), rng.randrange(1, 13), rng.randrange(1, 29)
    return rng.choice((f"{y:04d}-{m:02d}-{d:02d}", f"{y:04d}{m:02d}{d:02d}", f"{y:04d}/{m:02d}/{d:02d}"))


# The written forms of a 12-digit number. The scanner must find every one of them.
FORMATS: tuple[str, ...] = ("plain", "spaced", "hyphenated", "fullwidth", "fullwidth-spaced",
                            "fullwidth-hyphenated", "ideographic-space", "mixed-separators")


def format_number(number: str, style: str) -> str:
    """Write a 12-digit number in one of ``FORMATS``."""
    a, b, c = number[:4], number[4:8], number[8:]
    fw = number.translate(_FW)
    fa, fb, fc = fw[:4], fw[4:8], fw[8:]
    forms = {
        "plain": number,
        "spaced": f"{a} {b} {c}",
        "hyphenated": f"{a}-{b}-{c}",
        "fullwidth": fw,
        "fullwidth-spaced": f"{fa}\u3000{fb}\u3000{fc}",
        "fullwidth-hyphenated": f"{fa}－{fb}－{fc}",
        "ideographic-space": f"{a}\u3000{b}\u3000{c}",
        "mixed-separators": f"{a}-{b} {c}",
    }
    return forms[style]


def formats_for(encoding: str) -> tuple[str, ...]:
    """The written forms that exist in an encoding (single-byte EBCDIC has no full-width digits)."""
    if encoding in SINGLE_BYTE_ENCODINGS:
        return tuple(f for f in FORMATS if not f.startswith("fullwidth") and f != "ideographic-space")
    return FORMATS


# Encodings a route may declare that synth can build payloads in (see gateway.policy.detector).
TEXT_ENCODINGS: tuple[str, ...] = ("utf-8", "shift_jis", "cp932", "euc-jp", "utf-16-le", "utf-16-be",
                                   "utf-16")
EBCDIC_ENCODINGS: tuple[str, ...] = ("cp037", "cp930", "cp939", "jef", "keis")
ALL_ENCODINGS: tuple[str, ...] = TEXT_ENCODINGS + EBCDIC_ENCODINGS
SINGLE_BYTE_ENCODINGS: tuple[str, ...] = ("cp037",)

# Filler: 住民記録-like words (no real names, no addresses of anyone).
_FILLER = ("異動届", "転入", "転出", "氏名", "ヤマダ", "タロウ", "住所", "市町村", "処理結果", "受付",
           "OK", "rec", " ", "、", "。", "ー", "※", "（注）", "ｶﾅ", "様", "記載事項")
_EBCDIC_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz.,:;"


@dataclass(frozen=True)
class Payload:
    data: bytes
    #: Byte offsets where each inserted number starts, in insertion order.
    offsets: tuple[int, ...]


def encode(text: str, encoding: str) -> bytes:
    """Encode text the way a business system would, including host (EBCDIC) codes.

    cp930/cp939 put double-byte text between SO (0x0E) and SI (0x0F) in IBM host DBCS, where a
    full-width digit is 0x42F0+d; JEF puts it between KI (0x28) and KO (0x29), KEIS between 0x0A42
    and 0x0A41, both as JIS + 0x8080 (the same bytes as EUC-JP for JIS X 0208). Characters without a
    host code here become '?' (0x6F): synth only needs digits, separators and filler.
    """
    if encoding in ("cp930", "cp939"):
        return _encode_host(text, b"\x0e", b"\x0f", _ibm_dbcs)
    if encoding == "jef":
        return _encode_host(text, b"\x28", b"\x29", _jis_dbcs)
    if encoding == "keis":
        return _encode_host(text, b"\x0a\x42", b"\x0a\x41", _jis_dbcs)
    if encoding == "utf-16":
        return text.encode("utf-16")  # with a BOM, native order as Python writes it
    try:
        return text.encode(encoding)
    except UnicodeEncodeError:
        # JIS-based codecs write the full-width hyphen as U+2212 (the same bytes, 0x817C / 0xA1DD).
        return text.replace("－", "\u2212").encode(encoding, errors="replace")


def _ibm_dbcs(ch: str) -> bytes:
    if "０" <= ch <= "９":
        return bytes((0x42, 0xF0 + ord(ch) - ord("０")))
    if ch == "\u3000":
        return b"\x40\x40"
    if ch == "－":
        return b"\x42\x60"
    # Any other double-byte character: a kanji-area code (0x45..0x55 lead), stable per character.
    code = ord(ch)
    return bytes((0x45 + code % 16, 0x41 + code % 0xBD))


def _jis_dbcs(ch: str) -> bytes:
    try:
        raw = ch.replace("－", "\u2212").encode("euc-jp")
    except UnicodeEncodeError:
        return b"\xa2\xa3"  # ■
    return raw if len(raw) == 2 and raw[0] >= 0xA1 else b"\xa2\xa3"


def _encode_host(text: str, shift_in: bytes, shift_out: bytes, dbcs: object) -> bytes:
    out = bytearray()
    double = False
    for ch in text:
        wide = not (ch.isascii() and ch.isprintable())
        if wide != double:
            out += shift_in if wide else shift_out
            double = wide
        if wide:
            out += dbcs(ch)  # type: ignore[operator]
        else:
            out += ch.encode("cp037") if ch in _EBCDIC_SAFE or ch.isdigit() or ch in "-+/" else b"\x6f"
    if double:
        out += shift_out
    return bytes(out)


def filler(rng: random.Random, length: int, *, ascii_only: bool = False) -> str:
    """Japanese-ish text with no digits at all (so inserted numbers are the only digit runs)."""
    words = [w for w in _FILLER if w.isascii()] if ascii_only else list(_FILLER)
    out: list[str] = []
    size = 0
    while size < length:
        w = rng.choice(words)
        out.append(w)
        size += len(w)
    return "".join(out)


def payload(rng: random.Random, encoding: str, texts: Sequence[str] = (), *, size: int = 256,
            ascii_only: bool = False) -> Payload:
    """Filler text in ``encoding`` with each of ``texts`` inserted, separated by non-digit text.

    Returns the bytes and the byte offset where each inserted text starts. Texts are put after a
    word separator so no inserted digit touches another digit.
    """
    host = encoding in EBCDIC_ENCODINGS
    parts: list[str] = []
    inserted: set[int] = set()
    per_gap = max(8, size // (len(texts) + 1))
    for t in texts:
        parts.append(filler(rng, rng.randrange(4, per_gap + 4), ascii_only=ascii_only or host) + " ")
        inserted.add(len(parts))
        parts.append(t)
        parts.append(" ")
    parts.append(filler(rng, per_gap, ascii_only=ascii_only or host))
    offsets: list[int] = []
    out = bytearray()
    if encoding == "utf-16":  # either byte order, announced by a BOM
        enc = rng.choice(("utf-16-le", "utf-16-be"))
        out += b"\xff\xfe" if enc == "utf-16-le" else b"\xfe\xff"
    else:
        enc = encoding
    shift_in = {"cp930": b"\x0e", "cp939": b"\x0e", "jef": b"\x28", "keis": b"\x0a\x42"}.get(enc, b"")
    for i, part in enumerate(parts):
        raw = encode(part, enc)
        if i in inserted:
            skip = len(shift_in) if shift_in and raw.startswith(shift_in) else 0
            offsets.append(len(out) + skip)
        out += raw
    return Payload(bytes(out), tuple(offsets))


_KANA = "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワ"


def fixed_record(rng: random.Random, encoding: str = "cp932", number: str | None = None) -> Payload:
    """One fixed-length 住民記録-like record, the digit-dense kind a CS 電文 is.

    Fields: 5-digit 市町村コード, an 11-digit 住民票コード-like run, a katakana name padded with
    U+3000, two 8-digit dates, a 6-digit serial; with ``number`` a 12-digit 個人番号 field after the
    name. Everything is synthetic. Returns the bytes and, with ``number``, its offset.
    """
    name = "".join(rng.choice(_KANA) for _ in range(rng.randrange(2, 6))) + "\u3000" + \
        "".join(rng.choice(_KANA) for _ in range(rng.randrange(2, 6)))
    head = f"{rng.randrange(100000):05d} {rng.randrange(10**11):011d} {name.ljust(12, chr(0x3000))} "
    tail = (f"{rng.randrange(1900, 2100):04d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d} "
            f"{rng.randrange(1900, 2100):04d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d} "
            f"{rng.randrange(10**6):06d}\n")
    if number is None:
        return Payload(encode(head + tail, encoding), ())
    first = encode(head, encoding)
    return Payload(first + encode(number + " " + tail, encoding), (len(first),))
