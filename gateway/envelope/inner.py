"""The inner record: what the envelope encrypts, so ``open`` can restore the message exactly.

Everything the source system handed us goes here: the body as opaque bytes, every AMQP header
(typed, in order) and the AMQP properties jgw carries. Nothing is decoded, normalised or
transcoded; ``decode(encode(c)) == c`` holds for every value pika hands us.

    inner  = salt[16] | fields          (salt: random, so the signed digest of the inner record
                                         cannot confirm a guess of the payload)
    fields = (tag u8 | len u32 | value)*, tags strictly increasing, body (tag 0x0F) last and required
    table  = count u32 | (key: u16 len | UTF-8) (value)*   keys unique, order kept
    value  = type u8 | data     N none, t true, f false, i int64, d float64 (IEEE, big-endian),
                                s u32 len | UTF-8, x u32 len | bytes, D u16 len | decimal text,
                                T u16 len | ISO 8601 datetime, A u32 count | value*, F table

Security: decodes bytes that were authenticated (signature, AEAD, digest) before we get here, but
still treats them as hostile: bounded counts and depth, strict types, no eval of anything.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.envelope.codec import DEFAULT_LIMITS, Limits, malformed
from gateway.envelope.errors import EnvelopeError

SALT_BYTES = 16

F_CONTENT_TYPE = 0x01
F_CONTENT_ENCODING = 0x02
F_CORRELATION_ID = 0x03
F_TYPE = 0x04
F_APP_ID = 0x05
F_TIMESTAMP = 0x06
F_HEADERS = 0x07
F_BODY = 0x0F
_TEXT_FIELDS = {F_CONTENT_TYPE: "content_type", F_CONTENT_ENCODING: "content_encoding",
                F_CORRELATION_ID: "correlation_id", F_TYPE: "type", F_APP_ID: "app_id"}

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True, slots=True)
class Contents:
    """The source message as the envelope carries it. ``body`` is opaque; ``headers`` keep order."""

    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    app_id: str | None = None
    timestamp: int | None = None

    def __repr__(self) -> str:
        return f"Contents(size={len(self.body)}, headers={len(self.headers)})"


class Unrepresentable(Exception):
    """A source value the inner record cannot carry (our side: the message is refused at seal)."""


def encode(contents: Contents, salt: bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Raises ``EnvelopeError('unsealable')`` for values the format cannot carry exactly, or that a
    receiver with the same limits would refuse (too many header items, nested too deeply)."""
    if len(salt) != SALT_BYTES:
        raise ValueError("salt must be 16 bytes")
    out = bytearray(salt)
    budget = _Budget(limits)
    try:
        for tag, name in _TEXT_FIELDS.items():
            value = getattr(contents, name)
            if value is not None:
                if not isinstance(value, str):
                    raise Unrepresentable(f"property {name} is {type(value).__name__}, not text")
                _field(out, tag, _utf8(value))
        if contents.timestamp is not None:
            ts = contents.timestamp
            if isinstance(ts, bool) or not isinstance(ts, int) or not _INT64_MIN <= ts <= _INT64_MAX:
                raise Unrepresentable("property timestamp is not a 64-bit integer")
            _field(out, F_TIMESTAMP, _I64.pack(ts))
        if contents.headers:
            table = bytearray()
            _encode_table(table, contents.headers, 0, budget)
            _field(out, F_HEADERS, bytes(table))
        if not isinstance(contents.body, bytes):
            raise Unrepresentable("body is not bytes")
        _field(out, F_BODY, contents.body)
    except Unrepresentable as exc:
        raise EnvelopeError("unsealable", str(exc)) from exc
    return bytes(out)


def _field(out: bytearray, tag: int, value: bytes) -> None:
    out += bytes([tag]) + _U32.pack(len(value))
    out += value


def _utf8(value: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise Unrepresentable(f"text is not encodable as UTF-8 (position {exc.start})") from exc


class _Budget:
    """The receiver's limits, applied while encoding so we never seal what a peer must refuse."""

    __slots__ = ("items", "limits")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.items = 0

    def spend(self, n: int, depth: int) -> None:
        self.items += n
        if self.items > self.limits.max_inner_headers:
            raise Unrepresentable(f"more than {self.limits.max_inner_headers} header items")
        if depth > self.limits.max_inner_depth:
            raise Unrepresentable(f"headers nested deeper than {self.limits.max_inner_depth}")


def _encode_table(out: bytearray, table: Mapping[str, Any], depth: int, budget: _Budget) -> None:
    budget.spend(len(table), depth)
    out += _U32.pack(len(table))
    for key, value in table.items():
        if not isinstance(key, str):
            raise Unrepresentable(f"header key of type {type(key).__name__}")
        raw = _utf8(key)
        if len(raw) > 0xFFFF:
            raise Unrepresentable("header key too long")
        out += _U16.pack(len(raw)) + raw
        _encode_value(out, value, depth, budget)


def _encode_value(out: bytearray, value: Any, depth: int, budget: _Budget) -> None:
    if value is None:
        out += b"N"
    elif value is True:
        out += b"t"
    elif value is False:
        out += b"f"
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unrepresentable("header integer outside 64 bits")
        out += b"i" + _I64.pack(value)
    elif isinstance(value, float):
        out += b"d" + _F64.pack(value)
    elif isinstance(value, str):
        raw = _utf8(value)
        out += b"s" + _U32.pack(len(raw)) + raw
    elif isinstance(value, bytes | bytearray):
        out += b"x" + _U32.pack(len(value)) + bytes(value)
    elif isinstance(value, decimal.Decimal):
        text = str(value).encode("ascii")
        out += b"D" + _U16.pack(len(text)) + text
    elif isinstance(value, dt.datetime):
        text = value.isoformat().encode("ascii")
        out += b"T" + _U16.pack(len(text)) + text
    elif isinstance(value, list | tuple):
        if isinstance(value, tuple):
            raise Unrepresentable("header value is a tuple; only lists round-trip")
        budget.spend(len(value), depth + 1)
        out += b"A" + _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1, budget)
    elif isinstance(value, Mapping):
        out += b"F"
        _encode_table(out, value, depth + 1, budget)
    else:
        raise Unrepresentable(f"header value of type {type(value).__name__}")


# ----------------------------------------------------------------------------------------------


class _Cursor:
    __slots__ = ("data", "items", "limits", "pos")

    def __init__(self, data: bytes, limits: Limits) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.items = 0  # header entries and list items seen, against max_inner_headers

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise malformed(f"inner record truncated at offset {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, s: struct.Struct) -> Any:
        return s.unpack(self.take(s.size))[0]

    def count(self, n: int) -> None:
        self.items += n
        if self.items > self.limits.max_inner_headers:
            raise malformed(f"inner record has more than {self.limits.max_inner_headers} header items")


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Contents:
    size = len(data)
    if size < SALT_BYTES:
        raise malformed(f"inner record truncated at offset 0 ({size} bytes)")
    pos = SALT_BYTES
    values: dict[str, Any] = {}
    last = 0
    body: bytes | None = None
    while pos < size:
        if pos + 5 > size:
            raise malformed(f"inner record truncated at offset {pos}")
        tag = data[pos]
        n = _U32.unpack_from(data, pos + 1)[0]
        if tag <= last:
            raise malformed(f"inner record: field {tag} out of order or repeated")
        last = tag
        pos += 5
        if n > size - pos:
            raise malformed(f"inner record truncated at offset {pos}")
        raw = data[pos:pos + n]
        pos += n
        if tag in _TEXT_FIELDS:
            values[_TEXT_FIELDS[tag]] = _text(raw, f"property {_TEXT_FIELDS[tag]}")
        elif tag == F_TIMESTAMP:
            if n != 8:
                raise malformed("inner record: timestamp is not 8 bytes")
            values["timestamp"] = _I64.unpack(raw)[0]
        elif tag == F_HEADERS:
            t = _Cursor(raw, limits)
            values["headers"] = _decode_table(t, 0)
            if t.pos != n:
                raise malformed("inner record: trailing bytes after headers")
        elif tag == F_BODY:
            body = raw
            if pos != size:
                raise malformed("inner record: bytes after the body")
        else:
            raise malformed(f"inner record: unknown field {tag}")
    if body is None:
        raise malformed("inner record: no body")
    return Contents(body=body, **values)


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"inner record: {what} is not UTF-8") from exc


def _decode_table(c: _Cursor, depth: int) -> dict[str, Any]:
    if depth > c.limits.max_inner_depth:
        raise malformed(f"inner record: headers nested deeper than {c.limits.max_inner_depth}")
    n = c.unpack(_U32)
    c.count(n)
    out: dict[str, Any] = {}
    for _ in range(n):
        key = _text(c.take(c.unpack(_U16)), "header key")
        if key in out:
            raise malformed("inner record: header key repeated")
        out[key] = _decode_value(c, depth)
    return out


def _decode_value(c: _Cursor, depth: int) -> Any:
    kind = c.take(1)
    if kind == b"N":
        return None
    if kind == b"t":
        return True
    if kind == b"f":
        return False
    if kind == b"i":
        return c.unpack(_I64)
    if kind == b"d":
        return c.unpack(_F64)
    if kind == b"s":
        return _text(c.take(c.unpack(_U32)), "header text")
    if kind == b"x":
        return c.take(c.unpack(_U32))
    if kind == b"D":
        text = c.take(c.unpack(_U16))
        try:
            value = decimal.Decimal(text.decode("ascii"))
        except (UnicodeDecodeError, decimal.InvalidOperation) as exc:
            raise malformed("inner record: bad decimal header value") from exc
        if str(value).encode("ascii") != text:
            raise malformed("inner record: decimal header value not in canonical form")
        return value
    if kind == b"T":
        text = c.take(c.unpack(_U16))
        try:
            stamp = dt.datetime.fromisoformat(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise malformed("inner record: bad datetime header value") from exc
        if stamp.isoformat().encode("ascii") != text:
            raise malformed("inner record: datetime header value not in canonical form")
        return stamp
    if kind == b"A":
        if depth + 1 > c.limits.max_inner_depth:
            raise malformed(f"inner record: headers nested deeper than {c.limits.max_inner_depth}")
        n = c.unpack(_U32)
        c.count(n)
        return [_decode_value(c, depth + 1) for _ in range(n)]
    if kind == b"F":
        return _decode_table(c, depth + 1)
    raise malformed(f"inner record: unknown header value type {kind!r}")
