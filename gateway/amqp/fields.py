"""AMQP 0-9-1 field tables, type-exact: ``encode_table(parse_table(b)) == b`` for every table we accept.

A relay must forward headers it does not understand without changing them: an ``int8`` stays an
``int8``, a ``float32`` keeps its bits, a non-UTF-8 long string stays bytes. pika decodes
``float``/``double`` to ``int`` and writes every small int as ``I``; this module is the type-exact
replacement.

The model. Decoding gives a Python native where the reverse direction is unambiguous, and a small
subclass that remembers its wire type where it is not. Every value still behaves as the native
(``Int8(5) == 5``, ``isinstance(UInt32(1), int)``, ``LongStr`` is ``bytes``)::

    wire  meaning                   decodes to                  a native written gets it
    t     boolean (octet 0 or 1)    bool                        bool
    b     int8                      Int8(int)
    B     uint8                     UInt8(int)
    s     int16 (RabbitMQ's 's')    Int16(int)
    u     uint16                    UInt16(int)
    I     int32                     int                         int in [-2**31, 2**31)
    i     uint32                    UInt32(int)
    l     int64                     Int64(int)                  int outside int32, inside int64
    f     float32                   Float32(float), keeps bits
    d     float64                   float                       float
    D     decimal (scale octet,     decimal.Decimal with that   Decimal (exponent kept: 1.50
          uint32 digits)            exponent (scale 2 -> 1.50)  is scale 2, 150)
    S     long string               str if valid UTF-8,         str
                                    else LongStr(bytes)
    x     byte array                bytes                       bytes, bytearray, memoryview
    A     array                     list                        list, tuple
    T     timestamp (uint64 secs)   Timestamp(int)              datetime (aware, or naive = UTC;
                                                                sub-second part dropped)
    F     table                     dict                        any Mapping
    V     void                      None                        None

Keys are shortstrs: ``str`` when valid UTF-8, else ``bytes`` (both are accepted on writing).

What is refused on decode (``RemoteProtocolError``, AMQP code 502), each because it could not be
written back byte for byte or is hostile: a boolean octet other than 0 and 1; a key that appears
twice in one table; an unknown type letter (including the spec's unused ``U``/``L``); lengths that
run past their container; nesting deeper than ``MAX_DEPTH`` (32) containers, counting the
outermost table as 1. On encode (``LocalProtocolError``): an int out of range for its wire type,
an int outside int64, a key over 255 bytes, a str with lone surrogates, a negative or non-finite
Decimal, an unknown Python type, or nesting deeper than ``MAX_DEPTH``.

Security: reads hostile bytes (message headers from any publisher, method arguments from the
broker). Trusts nothing: every length is checked against its container before it is used, and
recursion is bounded by ``MAX_DEPTH``. No I/O.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeAlias

from gateway.amqp.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_DEPTH",
    "FieldTable",
    "FieldValue",
    "Float32",
    "Int8",
    "Int16",
    "Int64",
    "LongStr",
    "Timestamp",
    "UInt8",
    "UInt16",
    "UInt32",
    "decode_table_at",
    "encode_table",
    "encode_table_into",
    "parse_table",
    "typed_value",
    "wire_type",
]

#: Containers (tables and arrays) that may enclose a value, the outermost table counting as 1.
MAX_DEPTH = 32


class Int8(int):
    """A signed 8-bit integer (wire type ``b``)."""

    __slots__ = ()
    amqp_type = "b"

    def __repr__(self) -> str:
        return f"Int8({int(self)})"


class UInt8(int):
    """An unsigned 8-bit integer (wire type ``B``)."""

    __slots__ = ()
    amqp_type = "B"

    def __repr__(self) -> str:
        return f"UInt8({int(self)})"


class Int16(int):
    """A signed 16-bit integer (wire type ``s``, as RabbitMQ reads it)."""

    __slots__ = ()
    amqp_type = "s"

    def __repr__(self) -> str:
        return f"Int16({int(self)})"


class UInt16(int):
    """An unsigned 16-bit integer (wire type ``u``)."""

    __slots__ = ()
    amqp_type = "u"

    def __repr__(self) -> str:
        return f"UInt16({int(self)})"


class UInt32(int):
    """An unsigned 32-bit integer (wire type ``i``)."""

    __slots__ = ()
    amqp_type = "i"

    def __repr__(self) -> str:
        return f"UInt32({int(self)})"


class Int64(int):
    """A signed 64-bit integer (wire type ``l``; RabbitMQ's ``x-delivery-count`` is one)."""

    __slots__ = ()
    amqp_type = "l"

    def __repr__(self) -> str:
        return f"Int64({int(self)})"


class Timestamp(int):
    """Seconds since the epoch, unsigned 64-bit (wire type ``T``)."""

    __slots__ = ()
    amqp_type = "T"

    def __repr__(self) -> str:
        return f"Timestamp({int(self)})"

    @property
    def datetime(self) -> _dt.datetime:
        """The time as an aware UTC datetime (raises OverflowError past year 9999)."""
        return _dt.datetime.fromtimestamp(int(self), _dt.UTC)


class Float32(float):
    """A 32-bit float (wire type ``f``). Decoded ones keep their four wire bytes, so NaN payloads and
    signalling NaNs survive; one built in Python is rounded to float32 when written."""

    __slots__ = ("wire",)
    amqp_type = "f"
    wire: bytes

    def __new__(cls, value: float = 0.0) -> Float32:
        try:
            wire = _F32.pack(value)
        except (OverflowError, struct.error) as exc:
            raise LocalProtocolError(f"{value!r} does not fit a float32") from exc
        return cls.from_wire(wire)

    @classmethod
    def from_wire(cls, wire: bytes) -> Float32:
        self = float.__new__(cls, _F32.unpack(wire)[0])
        self.wire = wire
        return self

    def __repr__(self) -> str:
        return f"Float32({float(self)!r})"

    def __reduce__(self) -> tuple[Callable[[bytes], Float32], tuple[bytes]]:
        return (Float32.from_wire, (self.wire,))


class LongStr(bytes):
    """A long string (wire type ``S``) whose bytes are not valid UTF-8; valid ones decode to ``str``."""

    __slots__ = ()
    amqp_type = "S"

    def __repr__(self) -> str:
        return f"LongStr({bytes(self)!r})"


FieldValue: TypeAlias = Any
"""Any value a field table can hold (see the table in the module docstring)."""
FieldTable: TypeAlias = dict[Any, Any]
"""A decoded table: keys are str (or bytes when not UTF-8), values as in the module docstring."""

_U8 = struct.Struct(">B")
_I8 = struct.Struct(">b")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")
_DEC = struct.Struct(">BI")

# --------------------------------------------------------------------------------------------
# decoding: every reader takes (data, offset, end, depth) and returns (value, new offset).
# ``end`` is the end of the enclosing container; nothing is read at or past it.
# --------------------------------------------------------------------------------------------

_Reader = Callable[[bytes, int, int, int], tuple[Any, int]]


def _short(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"field table truncated: {what} runs past its container")


def _fixed(st: struct.Struct, cls: type | None) -> _Reader:
    size = st.size
    unpack_from = st.unpack_from

    if cls is None:
        def read_native(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
            if end - off < size:
                raise _short(f"a {size}-byte value")
            return unpack_from(data, off)[0], off + size
        return read_native

    new = int.__new__

    def read(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
        if end - off < size:
            raise _short(f"a {size}-byte value")
        return new(cls, unpack_from(data, off)[0]), off + size
    return read


def _read_bool(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if off >= end:
        raise _short("a boolean")
    v = data[off]
    if v > 1:
        raise RemoteProtocolError(f"boolean octet {v} is neither 0 nor 1")
    return v == 1, off + 1


def _read_f32(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if end - off < 4:
        raise _short("a float32")
    return Float32.from_wire(bytes(data[off:off + 4])), off + 4


def _read_decimal(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if end - off < 5:
        raise _short("a decimal")
    scale, digits = _DEC.unpack_from(data, off)
    return Decimal(digits).scaleb(-scale), off + 5


def _read_longstr(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if end - off < 4:
        raise _short("a long string length")
    (n,) = _U32.unpack_from(data, off)
    off += 4
    if end - off < n:
        raise _short("a long string")
    raw = data[off:off + n]
    try:
        return raw.decode(), off + n
    except UnicodeDecodeError:
        return LongStr(raw), off + n


def _read_bytes(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if end - off < 4:
        raise _short("a byte array length")
    (n,) = _U32.unpack_from(data, off)
    off += 4
    if end - off < n:
        raise _short("a byte array")
    return bytes(data[off:off + n]), off + n


def _read_array(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_DEPTH:
        raise RemoteProtocolError(f"field values nested deeper than {MAX_DEPTH} containers")
    if end - off < 4:
        raise _short("an array length")
    (n,) = _U32.unpack_from(data, off)
    off += 4
    if end - off < n:
        raise _short("an array")
    stop = off + n
    out: list[Any] = []
    readers = _READERS
    depth += 1
    while off < stop:
        reader = readers.get(data[off])
        if reader is None:
            raise RemoteProtocolError(f"unknown field type {data[off]:#04x} in an array")
        value, off = reader(data, off + 1, stop, depth)
        out.append(value)
    return out, off


def _read_table(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    if depth >= MAX_DEPTH:
        raise RemoteProtocolError(f"field values nested deeper than {MAX_DEPTH} containers")
    return decode_table_at(data, off, end, depth + 1)


def _read_void(data: bytes, off: int, end: int, depth: int) -> tuple[Any, int]:
    return None, off


_READERS: dict[int, _Reader] = {
    ord("t"): _read_bool,
    ord("b"): _fixed(_I8, Int8),
    ord("B"): _fixed(_U8, UInt8),
    ord("s"): _fixed(_I16, Int16),
    ord("u"): _fixed(_U16, UInt16),
    ord("I"): _fixed(_I32, None),
    ord("i"): _fixed(_U32, UInt32),
    ord("l"): _fixed(_I64, Int64),
    ord("f"): _read_f32,
    ord("d"): _fixed(_F64, None),
    ord("D"): _read_decimal,
    ord("S"): _read_longstr,
    ord("x"): _read_bytes,
    ord("A"): _read_array,
    ord("T"): _fixed(_U64, Timestamp),
    ord("F"): _read_table,
    ord("V"): _read_void,
}


def decode_table_at(data: bytes, off: int, end: int, depth: int = 1) -> tuple[FieldTable, int]:
    """Decode the table (4-byte length, then key/value pairs) at ``off``; return it and the offset
    after it. Nothing at or past ``end`` is read. ``depth`` is this table's depth (outermost: 1)."""
    if end - off < 4:
        raise _short("a table length")
    (n,) = _U32.unpack_from(data, off)
    off += 4
    if end - off < n:
        raise _short("a table")
    stop = off + n
    out: FieldTable = {}
    readers = _READERS
    while off < stop:
        klen = data[off]
        off += 1
        if stop - off < klen + 1:  # the key, then at least its type letter
            raise _short("a key")
        raw = data[off:off + klen]
        off += klen
        try:
            key: str | bytes = raw.decode()
        except UnicodeDecodeError:
            key = bytes(raw)
        if key in out:
            raise RemoteProtocolError("a key appears twice in one table")
        kind = data[off]
        off += 1
        if kind == 83 and stop - off >= 4:  # 'S', the common case, inline
            n = data[off] << 24 | data[off + 1] << 16 | data[off + 2] << 8 | data[off + 3]
            off += 4
            if stop - off < n:
                raise _short("a long string")
            raw = data[off:off + n]
            off += n
            try:
                out[key] = raw.decode()
            except UnicodeDecodeError:
                out[key] = LongStr(raw)
            continue
        if kind == 73 and stop - off >= 4:  # 'I', inline too
            out[key] = _I32.unpack_from(data, off)[0]
            off += 4
            continue
        reader = readers.get(kind)
        if reader is None:
            raise RemoteProtocolError(f"unknown field type {kind:#04x} in a table")
        out[key], off = reader(data, off, stop, depth)
    return out, off


def parse_table(data: bytes) -> FieldTable:
    """Decode one whole encoded table (with its 4-byte length) that must fill ``data`` exactly."""
    table, off = decode_table_at(data, 0, len(data))
    if off != len(data):
        raise RemoteProtocolError(f"{len(data) - off} bytes after the end of a table")
    return table


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------

_Writer = Callable[[bytearray, Any, int], None]


def _range_error(value: int, kind: str) -> LocalProtocolError:
    return LocalProtocolError(f"{int(value)} is out of range for {kind}")


def _packer(letter: bytes, st: struct.Struct, kind: str) -> _Writer:
    fmt = struct.Struct(">c" + st.format.lstrip(">"))
    pack = fmt.pack

    def write(out: bytearray, value: Any, depth: int) -> None:
        try:
            out += pack(letter, value)
        except struct.error:
            raise _range_error(value, kind) from None
    return write


def _write_int(out: bytearray, value: int, depth: int) -> None:
    if -0x80000000 <= value <= 0x7FFFFFFF:
        out += _TAG_I32.pack(b"I", value)
    elif -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF:
        out += _TAG_I64.pack(b"l", value)
    else:
        raise _range_error(value, "any AMQP integer type (int64 at most)")


def _write_bool(out: bytearray, value: bool, depth: int) -> None:
    out += b"t\x01" if value else b"t\x00"


def _write_f32(out: bytearray, value: Float32, depth: int) -> None:
    out += b"f"
    out += value.wire


def _write_f64(out: bytearray, value: float, depth: int) -> None:
    out += _TAG_F64.pack(b"d", value)


def _write_decimal(out: bytearray, value: Decimal, depth: int) -> None:
    if not value.is_finite():
        raise LocalProtocolError(f"decimal {value} is not finite")
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    number = 0
    for d in digits:
        number = number * 10 + d
    if exponent > 0:
        number *= 10 ** exponent
        exponent = 0
    if sign and number:
        raise LocalProtocolError(f"decimal {value} is negative: AMQP decimals are unsigned")
    if -exponent > 255 or number > 0xFFFFFFFF:
        raise LocalProtocolError(f"decimal {value} needs more than scale 255 or 32-bit digits")
    out += b"D"
    out += _DEC.pack(-exponent, number)


def _write_str(out: bytearray, value: str, depth: int) -> None:
    try:
        raw = value.encode()
    except UnicodeEncodeError as exc:
        raise LocalProtocolError("a string with lone surrogates cannot be written as UTF-8") from exc
    out += _TAG_U32.pack(b"S", len(raw))
    out += raw


def _write_longstr(out: bytearray, value: bytes, depth: int) -> None:
    out += _TAG_U32.pack(b"S", len(value))
    out += value


def _write_bytes(out: bytearray, value: bytes, depth: int) -> None:
    out += _TAG_U32.pack(b"x", len(value))
    out += value


def _write_array(out: bytearray, value: Any, depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"field values nested deeper than {MAX_DEPTH} containers")
    out += b"A\x00\x00\x00\x00"
    start = len(out)
    for item in value:
        _write_value(out, item, depth + 1)
    _U32.pack_into(out, start - 4, len(out) - start)


def _write_table_value(out: bytearray, value: Mapping[Any, Any], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise LocalProtocolError(f"field values nested deeper than {MAX_DEPTH} containers")
    out += b"F"
    encode_table_into(out, value, depth + 1)


def _write_timestamp(out: bytearray, value: int, depth: int) -> None:
    try:
        out += _TAG_U64.pack(b"T", value)
    except struct.error:
        raise _range_error(value, "a timestamp (uint64 seconds)") from None


def _write_datetime(out: bytearray, value: _dt.datetime, depth: int) -> None:
    if value.tzinfo is None:
        value = value.replace(tzinfo=_dt.UTC)
    _write_timestamp(out, math.floor(value.timestamp()), depth)


def _write_void(out: bytearray, value: None, depth: int) -> None:
    out += b"V"


_TAG_I32 = struct.Struct(">ci")
_TAG_I64 = struct.Struct(">cq")
_TAG_U32 = struct.Struct(">cI")
_TAG_U64 = struct.Struct(">cQ")
_TAG_F64 = struct.Struct(">cd")

_WRITERS: dict[type, _Writer] = {
    str: _write_str,
    bool: _write_bool,
    int: _write_int,
    float: _write_f64,
    bytes: _write_bytes,
    bytearray: _write_bytes,
    dict: _write_table_value,
    list: _write_array,
    tuple: _write_array,
    type(None): _write_void,
    Int8: _packer(b"b", _I8, "int8"),
    UInt8: _packer(b"B", _U8, "uint8"),
    Int16: _packer(b"s", _I16, "int16"),
    UInt16: _packer(b"u", _U16, "uint16"),
    UInt32: _packer(b"i", _U32, "uint32"),
    Int64: _packer(b"l", _I64, "int64"),
    Timestamp: _write_timestamp,
    Float32: _write_f32,
    LongStr: _write_longstr,
    Decimal: _write_decimal,
    _dt.datetime: _write_datetime,
}

# for subclasses we do not know: the first base that matches decides (order matters: bool < int)
_FALLBACK: tuple[tuple[type, _Writer], ...] = (
    (bool, _write_bool),
    (Int8, _WRITERS[Int8]), (UInt8, _WRITERS[UInt8]), (Int16, _WRITERS[Int16]), (UInt16, _WRITERS[UInt16]),
    (UInt32, _WRITERS[UInt32]), (Int64, _WRITERS[Int64]), (Timestamp, _write_timestamp),
    (int, _write_int),
    (Float32, _write_f32), (float, _write_f64),
    (LongStr, _write_longstr), (str, _write_str),
    (bytes, _write_bytes), (bytearray, _write_bytes), (memoryview, lambda o, v, d: _write_bytes(o, bytes(v), d)),
    (Decimal, _write_decimal), (_dt.datetime, _write_datetime),
    (Mapping, _write_table_value), (list, _write_array), (tuple, _write_array),
)


def typed_value(amqp_type: str, plain: Any) -> Any:
    """The value of this model for a plain Python value that carries its field type (the envelope's
    inner record restores headers this way): ``typed_value("b", 5)`` is ``Int8(5)``."""
    cls = _TYPED.get(amqp_type)
    if cls is not None:
        return cls(plain)
    if amqp_type == "S" and isinstance(plain, bytes):
        return LongStr(plain)
    if amqp_type in _NATIVE_LETTERS:
        return plain
    raise LocalProtocolError(f"unknown AMQP field type {amqp_type[:4]!r}")


def _write_value(out: bytearray, value: Any, depth: int) -> None:
    writer = _WRITERS.get(type(value))
    if writer is None:
        for base, w in _FALLBACK:
            if isinstance(value, base):
                writer = w
                break
        else:
            letter = getattr(value, "amqp_type", None)
            if isinstance(letter, str) and hasattr(value, "value"):  # a typed value of another model
                _write_value(out, typed_value(letter, value.value), depth)
                return
            raise LocalProtocolError(f"a {type(value).__name__} cannot be written in an AMQP field table")
    writer(out, value, depth)


_TYPED: dict[str, Callable[[Any], Any]] = {"b": Int8, "B": UInt8, "s": Int16, "u": UInt16, "i": UInt32, "l": Int64,
                                          "T": Timestamp, "f": Float32}
_NATIVE_LETTERS = frozenset("tIdSxDAFV")


def _write_key(out: bytearray, key: Any) -> None:
    if isinstance(key, str):
        try:
            raw = key.encode()
        except UnicodeEncodeError as exc:
            raise LocalProtocolError("a key with lone surrogates cannot be written as UTF-8") from exc
    elif isinstance(key, bytes | bytearray):
        raw = bytes(key)
    else:
        raise LocalProtocolError(f"a table key must be str or bytes, not {type(key).__name__}")
    if len(raw) > 255:
        raise LocalProtocolError(f"a table key is {len(raw)} bytes; a shortstr holds 255 at most")
    out.append(len(raw))
    out += raw


def encode_table_into(out: bytearray, table: Mapping[Any, Any] | None, depth: int = 1) -> None:
    """Append ``table`` (4-byte length, then key/value pairs) to ``out``; ``None`` writes an empty table."""
    start = len(out)
    out += b"\x00\x00\x00\x00"
    if table:
        for key, value in table.items():
            _write_key(out, key)
            _write_value(out, value, depth)
    _U32.pack_into(out, start, len(out) - start - 4)


def encode_table(table: Mapping[Any, Any] | None) -> bytes:
    """The wire form of ``table``, with its 4-byte length."""
    out = bytearray()
    encode_table_into(out, table)
    return bytes(out)


def wire_type(value: Any) -> str:
    """The type letter ``value`` is written with (``I`` for 5, ``b`` for Int8(5), ``S`` for "x")."""
    out = bytearray()
    _write_value(out, value, 1)
    return chr(out[0])
