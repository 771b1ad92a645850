"""The 14 basic content properties, decoded lazily and forwarded byte for byte.

A delivery keeps the raw property block (the content header after class, weight and body size).
Nothing is decoded until an attribute is read; then the flag words and the simple fields are
decoded once, and ``headers`` (the only costly one) only when it is read itself. ``encode()``
returns the raw block unchanged while nothing was changed, so a route without stages forwards the
publisher's properties exactly as they came, including types this gateway has no use for.
``replace(**changes)`` returns a new ``Properties``; an unchanged ``headers`` table is carried over
as its wire bytes, so replacing ``message_id`` does not re-encode the headers either.

Values: shortstr properties are ``str`` (or ``bytes`` when the wire bytes are not UTF-8);
``delivery_mode`` and ``priority`` are ints 0-255; ``timestamp`` is an int (seconds; a datetime is
accepted when building); ``headers`` is a read-only mapping of the field-table model of
``gateway.amqp.fields`` (nested tables are plain dicts: treat them as read-only too, and build
changes with ``replace(headers={**props.headers, ...})``). Absent properties are ``None``.

Flag words: the parser accepts continuation words (bit 0 set) as long as they carry no flags (the
basic class has 14 properties, all in the first word); anything written is one canonical word.

Decode errors are ``RemoteProtocolError`` and surface on first access (or ``validate()``), so one
malformed message can be set aside without taking its connection down.

Security: reads hostile bytes (any publisher's properties). Lengths are checked before use; the
header table goes through ``gateway.amqp.fields`` with its depth limit.
"""

from __future__ import annotations

import datetime as _dt
import math
import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.amqp import fields
from gateway.amqp.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["EMPTY_PROPERTIES_BLOCK", "PROPERTY_NAMES", "Properties"]

#: In wire order; bit 15 of the first flag word is the first.
PROPERTY_NAMES = (
    "content_type", "content_encoding", "headers", "delivery_mode", "priority", "correlation_id",
    "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id",
)
_SHORTSTR = frozenset(PROPERTY_NAMES) - {"headers", "delivery_mode", "priority", "timestamp"}
EMPTY_PROPERTIES_BLOCK = b"\x00\x00"
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_UNSET: Any = object()
_EMPTY_MAP: Mapping[str | bytes, Any] = MappingProxyType({})


def _shortstr(data: bytes, off: int, end: int, name: str) -> tuple[str | bytes, int]:
    if off >= end:
        raise RemoteProtocolError(f"property block truncated at {name}")
    n = data[off]
    off += 1
    if end - off < n:
        raise RemoteProtocolError(f"property block truncated in {name}")
    raw = data[off:off + n]
    try:
        return raw.decode(), off + n
    except UnicodeDecodeError:
        return bytes(raw), off + n


def _put_shortstr(out: bytearray, value: Any, name: str) -> None:
    if type(value) is str and value.isascii() and len(value) <= 255:
        out.append(len(value))
        out += value.encode()
        return
    if isinstance(value, str):
        try:
            raw = value.encode()
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"{name} has lone surrogates") from exc
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value)
    else:
        raise LocalProtocolError(f"{name} must be str or bytes, not {type(value).__name__}")
    if len(raw) > 255:
        raise LocalProtocolError(f"{name} is {len(raw)} bytes; a shortstr holds 255 at most")
    out.append(len(raw))
    out += raw


class Properties:
    """Basic content properties; immutable (use ``replace``). See the module docstring."""

    __slots__ = (
        "_app_id", "_cluster_id", "_content_encoding", "_content_type", "_correlation_id", "_delivery_mode",
        "_expiration", "_headers", "_headers_raw", "_message_id", "_pending", "_priority", "_raw", "_reply_to",
        "_timestamp", "_type", "_user_id",
    )

    _content_type: str | bytes | None
    _content_encoding: str | bytes | None
    _headers: fields.FieldTable | None
    _headers_raw: bytes | None
    _delivery_mode: int | None
    _priority: int | None
    _correlation_id: str | bytes | None
    _reply_to: str | bytes | None
    _expiration: str | bytes | None
    _message_id: str | bytes | None
    _timestamp: int | None
    _type: str | bytes | None
    _user_id: str | bytes | None
    _app_id: str | bytes | None
    _cluster_id: str | bytes | None
    _raw: bytes | None
    _pending: bool

    def __init__(self, *, content_type: str | bytes | None = None, content_encoding: str | bytes | None = None,
                 headers: Mapping[Any, Any] | None = None, delivery_mode: int | None = None,
                 priority: int | None = None, correlation_id: str | bytes | None = None,
                 reply_to: str | bytes | None = None, expiration: str | bytes | None = None,
                 message_id: str | bytes | None = None, timestamp: int | _dt.datetime | None = None,
                 type: str | bytes | None = None, user_id: str | bytes | None = None,
                 app_id: str | bytes | None = None, cluster_id: str | bytes | None = None) -> None:
        self._raw = None
        self._pending = False
        self._headers_raw = None
        self._content_type = content_type
        self._content_encoding = content_encoding
        self._headers = dict(headers) if headers is not None else None
        self._delivery_mode = delivery_mode
        self._priority = priority
        self._correlation_id = correlation_id
        self._reply_to = reply_to
        self._expiration = expiration
        self._message_id = message_id
        if isinstance(timestamp, _dt.datetime):
            if timestamp.tzinfo is None:
                timestamp = timestamp.replace(tzinfo=_dt.UTC)
            timestamp = math.floor(timestamp.timestamp())
        self._timestamp = timestamp
        self._type = type
        self._user_id = user_id
        self._app_id = app_id
        self._cluster_id = cluster_id

    @classmethod
    def from_wire(cls, block: bytes) -> Properties:
        """Properties backed by a raw property block (flag words, then the values); nothing is
        decoded yet."""
        self = object.__new__(cls)
        self._raw = block
        self._pending = True
        self._headers_raw = None
        self._headers = None
        return self

    # -- decoding ------------------------------------------------------------------------------

    def _decode(self) -> None:
        data = self._raw
        assert data is not None
        end = len(data)
        if end < 2:
            raise RemoteProtocolError("property block has no flag word")
        (flags,) = _U16.unpack_from(data, 0)
        off = 2
        word = flags
        while word & 1:
            if end - off < 2:
                raise RemoteProtocolError("property block truncated in a flag continuation word")
            (word,) = _U16.unpack_from(data, off)
            off += 2
            if word & 0xFFFE:
                raise RemoteProtocolError("property flags beyond the 14 basic properties")
        if flags & 0b10:
            raise RemoteProtocolError("property flag 15 is set; the basic class has 14 properties")
        # straight-line, one test per flag: this runs once per relayed message
        ss = _shortstr
        if flags & 0x8000:
            self._content_type, off = ss(data, off, end, "content_type")
        else:
            self._content_type = None
        if flags & 0x4000:
            self._content_encoding, off = ss(data, off, end, "content_encoding")
        else:
            self._content_encoding = None
        if flags & 0x2000:
            if end - off < 4:
                raise RemoteProtocolError("property block truncated at headers")
            n = 4 + _U32.unpack_from(data, off)[0]
            if end - off < n:
                raise RemoteProtocolError("property block truncated in headers")
            self._headers_raw = data[off:off + n]
            off += n
        if flags & 0x1800:
            if flags & 0x1000:
                if off >= end:
                    raise RemoteProtocolError("property block truncated at delivery_mode")
                self._delivery_mode = data[off]
                off += 1
            else:
                self._delivery_mode = None
            if flags & 0x0800:
                if off >= end:
                    raise RemoteProtocolError("property block truncated at priority")
                self._priority = data[off]
                off += 1
            else:
                self._priority = None
        else:
            self._delivery_mode = self._priority = None
        if flags & 0x0700:
            self._correlation_id, off = ss(data, off, end, "correlation_id") if flags & 0x0400 else (None, off)
            self._reply_to, off = ss(data, off, end, "reply_to") if flags & 0x0200 else (None, off)
            self._expiration, off = ss(data, off, end, "expiration") if flags & 0x0100 else (None, off)
        else:
            self._correlation_id = self._reply_to = self._expiration = None
        if flags & 0x0080:
            self._message_id, off = ss(data, off, end, "message_id")
        else:
            self._message_id = None
        if flags & 0x0040:
            if end - off < 8:
                raise RemoteProtocolError("property block truncated at timestamp")
            self._timestamp = _U64.unpack_from(data, off)[0]
            off += 8
        else:
            self._timestamp = None
        if flags & 0x003C:
            self._type, off = ss(data, off, end, "type") if flags & 0x0020 else (None, off)
            self._user_id, off = ss(data, off, end, "user_id") if flags & 0x0010 else (None, off)
            self._app_id, off = ss(data, off, end, "app_id") if flags & 0x0008 else (None, off)
            self._cluster_id, off = ss(data, off, end, "cluster_id") if flags & 0x0004 else (None, off)
        else:
            self._type = self._user_id = self._app_id = self._cluster_id = None
        if off != end:
            raise RemoteProtocolError(f"{end - off} bytes after the last property")
        self._pending = False

    def validate(self) -> Properties:
        """Decode everything now (headers included); raise RemoteProtocolError if anything is malformed."""
        self.headers  # noqa: B018 - decodes
        return self

    # -- encoding ------------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The property block: the raw one as received when nothing changed, else a fresh encoding."""
        raw = self._raw
        if raw is not None:
            return raw
        raw = self._raw = self._encode()
        return raw

    def _encode(self) -> bytes:
        # straight-line like _decode: the sink side runs this for every message a stage changed
        out = bytearray(b"\x00\x00")
        flags = 0
        put = _put_shortstr
        if self._content_type is not None:
            flags |= 0x8000
            put(out, self._content_type, "content_type")
        if self._content_encoding is not None:
            flags |= 0x4000
            put(out, self._content_encoding, "content_encoding")
        if self._headers_raw is not None:
            flags |= 0x2000
            out += self._headers_raw
        elif self._headers is not None:
            flags |= 0x2000
            fields.encode_table_into(out, self._headers)
        for bit, name, value in ((0x1000, "delivery_mode", self._delivery_mode), (0x0800, "priority", self._priority)):
            if value is not None:
                if not isinstance(value, int) or not 0 <= value <= 255:
                    raise LocalProtocolError(f"{name} {value!r} is not an octet")
                flags |= bit
                out.append(value)
        if self._correlation_id is not None:
            flags |= 0x0400
            put(out, self._correlation_id, "correlation_id")
        if self._reply_to is not None:
            flags |= 0x0200
            put(out, self._reply_to, "reply_to")
        if self._expiration is not None:
            flags |= 0x0100
            put(out, self._expiration, "expiration")
        if self._message_id is not None:
            flags |= 0x0080
            put(out, self._message_id, "message_id")
        if self._timestamp is not None:
            flags |= 0x0040
            try:
                out += _U64.pack(self._timestamp)
            except struct.error:
                raise LocalProtocolError(f"timestamp {self._timestamp!r} is not a uint64") from None
        if self._type is not None:
            flags |= 0x0020
            put(out, self._type, "type")
        if self._user_id is not None:
            flags |= 0x0010
            put(out, self._user_id, "user_id")
        if self._app_id is not None:
            flags |= 0x0008
            put(out, self._app_id, "app_id")
        if self._cluster_id is not None:
            flags |= 0x0004
            put(out, self._cluster_id, "cluster_id")
        _U16.pack_into(out, 0, flags)
        return bytes(out)

    def replace(self, **changes: Any) -> Properties:
        """A copy with ``changes`` applied (``None`` removes a property)."""
        unknown = set(changes) - set(PROPERTY_NAMES)
        if unknown:
            raise TypeError(f"unknown properties: {', '.join(sorted(unknown))}")
        if self._pending:
            self._decode()
        new = object.__new__(Properties)
        for name in PROPERTY_NAMES:
            object.__setattr__(new, "_" + name, getattr(self, "_" + name))
        new._raw = None
        new._pending = False
        new._headers_raw = self._headers_raw
        if "headers" in changes:
            h = changes.pop("headers")
            new._headers = dict(h) if h is not None else None
            new._headers_raw = None
        if "timestamp" in changes and isinstance(changes["timestamp"], _dt.datetime):
            ts = changes["timestamp"]
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=_dt.UTC)
            changes["timestamp"] = math.floor(ts.timestamp())
        for name, value in changes.items():
            object.__setattr__(new, "_" + name, value)
        return new

    def as_dict(self) -> dict[str, Any]:
        """The properties that are set, by name (headers as a plain dict)."""
        out: dict[str, Any] = {}
        for name in PROPERTY_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = dict(value) if name == "headers" else value
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Properties):
            return NotImplemented
        return self.encode() == other.encode()

    def __hash__(self) -> int:
        return hash(self.encode())

    def __repr__(self) -> str:
        # names only (values may be personal data), except the two that identify a message
        try:
            if self._pending:
                self._decode()
        except RemoteProtocolError:
            return "Properties(<malformed>)"
        parts = []
        for name in PROPERTY_NAMES:
            if name == "headers":
                if self._headers_raw is not None or self._headers is not None:
                    parts.append("headers=...")
            elif getattr(self, "_" + name) is not None:
                parts.append(f"{name}={getattr(self, '_' + name)!r}" if name in ("message_id", "delivery_mode")
                             else f"{name}=...")
        return f"Properties({', '.join(parts)})"

    # -- attributes ----------------------------------------------------------------------------

    @property
    def headers(self) -> Mapping[str | bytes, Any] | None:
        if self._pending:
            self._decode()
        if self._headers is None:
            if self._headers_raw is None:
                return None
            self._headers = fields.parse_table(self._headers_raw)
        return MappingProxyType(self._headers) if self._headers else _EMPTY_MAP

    @property
    def content_type(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._content_type

    @property
    def content_encoding(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._content_encoding

    @property
    def delivery_mode(self) -> int | None:
        if self._pending:
            self._decode()
        return self._delivery_mode

    @property
    def priority(self) -> int | None:
        if self._pending:
            self._decode()
        return self._priority

    @property
    def correlation_id(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._correlation_id

    @property
    def reply_to(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._reply_to

    @property
    def expiration(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._expiration

    @property
    def message_id(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._message_id

    @property
    def timestamp(self) -> int | None:
        if self._pending:
            self._decode()
        return self._timestamp

    @property
    def type(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._type

    @property
    def user_id(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._user_id

    @property
    def app_id(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._app_id

    @property
    def cluster_id(self) -> str | bytes | None:
        if self._pending:
            self._decode()
        return self._cluster_id
