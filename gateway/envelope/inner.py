"""The inner record: what the envelope encrypts, so ``open`` can restore the message exactly.

Everything the source system handed us goes here: the body as opaque bytes, every AMQP header
(typed, in order) and the AMQP properties jgw carries. Nothing is decoded, normalised or
transcoded: ``decode(encode(c))`` restores every header name and value with its exact type, or
``encode`` refuses the message (``unsealable``); it never carries an altered value.

    inner  = salt[16] | fields          (salt: random, so the signed digest of the inner record
                                         cannot confirm a guess of the payload)
    fields = (tag u8 | len u32 | value)*, tags strictly increasing, body (tag 0x0F) last and required;
             headers are field 0x07 (a table: every name is text) or 0x08 (a named table: some name
             is bytes, e.g. not UTF-8), never both
    table  = count u32 | (name: u16 len | UTF-8) (value)*                names unique, order kept
    ntable = count u32 | (kind u8 's' UTF-8 | 'x' bytes) (u16 len | name) (value)*
                                        (kind, name) unique, order kept, at least one 'x'
    value  = type u8 | data     N none, t true, f false, i int64, d float64 (IEEE, big-endian),
                                s u32 len | UTF-8, x u32 len | bytes, D u16 len | decimal text,
                                T u16 len | ISO 8601 datetime, A u32 count | value*, F table,
                                G ntable, W field-type u8 | value (a value with its AMQP type)

A plain Python value (what pika hands us) is written with the letter of its Python type, exactly as
before 0x08, G and W existed, so records without bytes names or typed values are byte for byte what
earlier versions wrote and read. A value that carries its AMQP 0-9-1 field type (an ``amqp_type``
attribute of one letter, as the typed values of an AMQP codec do, or ``Typed``) is written as W, the
field type, then its plain value; ``decode`` gives it back as ``Typed(field type, value)`` (or
whatever the ``typed`` factory builds from the pair), so a sink can publish it with the same type.

Security: decodes bytes that were authenticated (signature, AEAD, digest) before we get here, but
still treats them as hostile: bounded counts and depth, strict types, no eval of anything. Encoding
never recurses deeper than the receiver's depth limit (so a cyclic or absurdly deep value is refused,
not a RecursionError).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
from collections.abc import Callable, Mapping
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
F_HEADERS_NAMED = 0x08
F_BODY = 0x0F
_TEXT_FIELDS = {F_CONTENT_TYPE: "content_type", F_CONTENT_ENCODING: "content_encoding",
                F_CORRELATION_ID: "correlation_id", F_TYPE: "type", F_APP_ID: "app_id"}

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_F32 = struct.Struct(">f")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

#: A header name as the AMQP client hands it over: text, or bytes when it is not UTF-8.
HeaderName = str | bytes


@dataclass(frozen=True, slots=True)
class Contents:
    """The source message as the envelope carries it. ``body`` is opaque; ``headers`` keep order."""

    body: bytes
    headers: Mapping[Any, Any] = field(default_factory=dict)  # names: HeaderName
    content_type: str | None = None
    content_encoding: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    app_id: str | None = None
    timestamp: int | None = None

    def __repr__(self) -> str:
        return f"Contents(size={len(self.body)}, headers={len(self.headers)})"


@dataclass(frozen=True, slots=True)
class Typed:
    """A header value with its AMQP 0-9-1 field type (``amqp_type``, one letter of ``FIELD_TYPES``).

    ``open`` restores a typed value as this when no ``typed`` factory is given; sealing it again
    carries the same type. ``value`` is the plain Python value (int, float, str, bytes, ...)."""

    amqp_type: str
    value: Any

    def __repr__(self) -> str:  # header values are never shown
        return f"Typed({self.amqp_type!r})"


#: Builds a typed value on decode from (field type, plain value).
TypedFactory = Callable[[str, Any], Any]


def _int_range(lo: int, hi: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and lo <= v <= hi


def _float32(v: Any) -> bool:
    if type(v) is not float:
        return False
    if math.isnan(v) or math.isinf(v):
        return True
    try:
        return bool(_F32.unpack(_F32.pack(v))[0] == v)
    except OverflowError:
        return False


def _short_string(v: Any) -> bool:
    return type(v) is str and len(v.encode("utf-8", "surrogatepass")) <= 255


def _amqp_decimal(v: Any) -> bool:
    if type(v) is not decimal.Decimal or not v.is_finite():
        return False
    _sign, digits, exponent = v.as_tuple()
    assert isinstance(exponent, int)
    unscaled = int("".join(map(str, digits)) or "0")
    return -255 <= exponent <= 0 and unscaled <= 2**32 - 1


#: AMQP 0-9-1 field types (the specification's letters and RabbitMQ's), with the plain values each
#: may carry. ``s`` is a short string in the specification and a 16-bit integer in RabbitMQ.
FIELD_TYPES: dict[str, Callable[[Any], bool]] = {
    "t": lambda v: type(v) is bool,
    "b": _int_range(-(2**7), 2**7 - 1), "B": _int_range(0, 2**8 - 1),
    "U": _int_range(-(2**15), 2**15 - 1), "u": _int_range(0, 2**16 - 1),
    "s": lambda v: _int_range(-(2**15), 2**15 - 1)(v) or _short_string(v),
    "I": _int_range(-(2**31), 2**31 - 1), "i": _int_range(0, 2**32 - 1),
    "L": _int_range(_INT64_MIN, _INT64_MAX), "l": _int_range(_INT64_MIN, _INT64_MAX),
    "f": _float32, "d": lambda v: type(v) is float,
    "D": _amqp_decimal,
    "S": lambda v: type(v) in (str, bytes), "x": lambda v: type(v) is bytes,
    "T": lambda v: type(v) is dt.datetime or _int_range(0, _INT64_MAX)(v),
    "A": lambda v: type(v) is list, "F": lambda v: type(v) is dict,
    "V": lambda v: v is None,
}


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
                if type(value) is not str:
                    raise Unrepresentable(f"property {name} is {type(value).__name__}, not text")
                _field(out, tag, _utf8(value))
        if contents.timestamp is not None:
            ts = contents.timestamp
            if type(ts) is not int or not _INT64_MIN <= ts <= _INT64_MAX:
                raise Unrepresentable("property timestamp is not a 64-bit integer")
            _field(out, F_TIMESTAMP, _I64.pack(ts))
        if contents.headers:
            table = bytearray()
            named = _encode_table(table, contents.headers, 0, budget)
            _field(out, F_HEADERS_NAMED if named else F_HEADERS, bytes(table))
        if type(contents.body) is not bytes:
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


def _encode_table(out: bytearray, table: Mapping[Any, Any], depth: int, budget: _Budget) -> bool:
    """Write ``table`` (a table, or a named table when some name is bytes); True for the latter."""
    budget.spend(len(table), depth)
    named = False
    for key in table:
        if type(key) is bytes:
            named = True
        elif type(key) is not str:
            raise Unrepresentable(f"header key of type {type(key).__name__}")
    out += _U32.pack(len(table))
    for key, value in table.items():
        raw = key if type(key) is bytes else _utf8(key)
        if len(raw) > 0xFFFF:
            raise Unrepresentable("header key too long")
        if named:
            out += b"x" if type(key) is bytes else b"s"
        out += _U16.pack(len(raw)) + raw
        _encode_value(out, value, depth, budget)
    return named


def plain_value(value: Any) -> Any:
    """The plain Python value inside a typed one (``Typed``, or a subclass of int, str, ... of an
    AMQP codec): what the inner record stores after the field type."""
    if isinstance(value, Typed):
        return value.value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return value[:]  # a str subclass sliced is a str
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, decimal.Decimal):
        return decimal.Decimal(value)
    if isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, value.hour, value.minute, value.second,
                           value.microsecond, value.tzinfo, fold=value.fold)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    raise Unrepresentable(f"typed header value of type {type(value).__name__}")


def _encode_value(out: bytearray, value: Any, depth: int, budget: _Budget) -> None:
    kind = type(value)
    if value is None:
        out += b"N"
    elif value is True:
        out += b"t"
    elif value is False:
        out += b"f"
    elif kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise Unrepresentable("header integer outside 64 bits")
        out += b"i" + _I64.pack(value)
    elif kind is float:
        out += b"d" + _F64.pack(value)
    elif kind is str:
        raw = _utf8(value)
        out += b"s" + _U32.pack(len(raw)) + raw
    elif kind is bytes:
        out += b"x" + _U32.pack(len(value)) + value
    elif kind is decimal.Decimal:
        text = str(value).encode("ascii")
        if len(text) > 0xFFFF:
            raise Unrepresentable("header decimal too long")
        out += b"D" + _U16.pack(len(text)) + text
    elif kind is dt.datetime:
        out += b"T" + _datetime_text(value)
    elif kind is list:
        budget.spend(len(value), depth + 1)
        out += b"A" + _U32.pack(len(value))
        for item in value:
            _encode_value(out, item, depth + 1, budget)
    elif kind is dict:
        mark = len(out)
        out += b"F"
        if _encode_table(out, value, depth + 1, budget):
            out[mark] = ord("G")
    elif isinstance(getattr(value, "amqp_type", None), str):
        _encode_typed(out, value, depth, budget)
    else:
        raise Unrepresentable(f"header value of type {kind.__name__}")


def _encode_typed(out: bytearray, value: Any, depth: int, budget: _Budget) -> None:
    wire = value.amqp_type
    check = FIELD_TYPES.get(wire)
    if check is None or len(wire) != 1:
        raise Unrepresentable(f"header value of unknown AMQP field type {wire[:4]!r}")
    plain = plain_value(value)
    if not check(plain):
        raise Unrepresentable(f"header value does not fit AMQP field type {wire!r} ({type(plain).__name__})")
    out += b"W" + wire.encode("ascii")
    _encode_value(out, plain, depth, budget)


def _datetime_text(value: dt.datetime) -> bytes:
    """``len u16 | isoformat()``, when that restores this very datetime (zone name and fold too)."""
    tz = value.tzinfo
    if tz is not None and type(tz) is not dt.timezone:
        raise Unrepresentable(f"header datetime zone of type {type(tz).__name__}: only fixed offsets "
                              "round-trip")
    text = value.isoformat()
    back = dt.datetime.fromisoformat(text)
    if back != value or back.tzname() != value.tzname() or back.fold != value.fold:
        raise Unrepresentable("header datetime does not round-trip through ISO 8601 (zone name or fold)")
    return _U16.pack(len(text)) + text.encode("ascii")


# ----------------------------------------------------------------------------------------------


def _typed(amqp_type: str, value: Any) -> Any:
    return Typed(amqp_type, value)


class _Cursor:
    __slots__ = ("data", "items", "limits", "pos", "typed")

    def __init__(self, data: bytes, limits: Limits, typed: TypedFactory) -> None:
        self.data = data
        self.pos = 0
        self.limits = limits
        self.items = 0  # header entries and list items seen, against max_inner_headers
        self.typed = typed

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


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS, *, typed: TypedFactory | None = None) -> Contents:
    """The contents of an inner record, or ``EnvelopeError('envelope-malformed')``.

    ``typed`` builds each value that carries an AMQP field type from (field type, plain value);
    by default it is restored as ``Typed``."""
    size = len(data)
    if size < SALT_BYTES:
        raise malformed(f"inner record truncated at offset 0 ({size} bytes)")
    pos = SALT_BYTES
    values: dict[str, Any] = {}
    last = 0
    body: bytes | None = None
    factory = typed or _typed
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
        elif tag in (F_HEADERS, F_HEADERS_NAMED):
            if "headers" in values:
                raise malformed("inner record: headers given twice (fields 7 and 8)")
            t = _Cursor(raw, limits, factory)
            values["headers"] = _decode_table(t, 0, named=tag == F_HEADERS_NAMED)
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


def _decode_table(c: _Cursor, depth: int, *, named: bool = False) -> dict[HeaderName, Any]:
    if depth > c.limits.max_inner_depth:
        raise malformed(f"inner record: headers nested deeper than {c.limits.max_inner_depth}")
    n = c.unpack(_U32)
    c.count(n)
    out: dict[HeaderName, Any] = {}
    any_bytes = False
    for _ in range(n):
        key: HeaderName
        if named:
            kind = c.take(1)
            if kind == b"x":
                key = c.take(c.unpack(_U16))
                any_bytes = True
            elif kind == b"s":
                key = _text(c.take(c.unpack(_U16)), "header key")
            else:
                raise malformed(f"inner record: unknown header name kind {kind!r}")
        else:
            key = _text(c.take(c.unpack(_U16)), "header key")
        if key in out:
            raise malformed("inner record: header key repeated")
        out[key] = _decode_value(c, depth)
    if named and not any_bytes:
        raise malformed("inner record: named table without a bytes name (not canonical)")
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
    if kind == b"G":
        return _decode_table(c, depth + 1, named=True)
    if kind == b"W":
        wire = c.take(1).decode("latin-1")
        check = FIELD_TYPES.get(wire)
        if check is None:
            raise malformed(f"inner record: unknown AMQP field type {wire!r}")
        if c.data[c.pos:c.pos + 1] == b"W":
            raise malformed("inner record: a field type on a typed value")
        plain = _decode_value(c, depth)
        if not check(plain):
            raise malformed(f"inner record: value does not fit AMQP field type {wire!r}")
        return c.typed(wire, plain)
    raise malformed(f"inner record: unknown header value type {kind!r}")
