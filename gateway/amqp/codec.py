"""Sans-I/O AMQP 0-9-1: bytes in, events out; frames written straight into a bytearray.

``Parser.feed(data)`` takes whatever the socket gave and returns the complete events in it: method
dataclasses from ``gateway.amqp.methods`` (a content-bearing method, such as ``BasicDeliver``,
arrives once its header and body frames are in, with ``properties`` and ``body`` filled) and
``Heartbeat``. Partial frames are kept until the rest arrives. The parser knows frames, methods and
the content rule (method, header, body frames in order on one channel; other channels may
interleave); it does not know which side it is on or what the connection's state is: that is
``gateway.amqp.connection``'s business, as h11 keeps its state machine apart from its reader.

Writing: ``FrameWriter`` appends frames to one bytearray (``append_method``, ``append_publish``,
``append_ack`` ...) so a connection can coalesce a loop turn's frames into one ``write``; there is
no object per frame. ``encode_method`` is the generic (and slower) path for the rare methods; the
hot ones (publish with its header and body, ack/nack/reject, deliver on the way in) have their own
straight-line code.

Limits on hostile input, all constructor arguments:
- ``frame_max``: no frame may be larger (header and end octet included); the connection sets the
  negotiated value after connection.tune. Until then 131072 (RabbitMQ's default).
- ``max_body_size``: the body size a content header may announce (default 128 MiB, RabbitMQ's
  ``max_message_size`` in 3.10); larger is refused before any body is buffered.
- field tables: nesting depth ``fields.MAX_DEPTH`` (32), checked lengths everywhere.
A refusal is a ``RemoteProtocolError`` whose ``reply_code`` is the connection.close code to send:
501 bad frame (end octet, size, type, heartbeat shape), 502 bad fields (truncated, trailing bytes),
503 unknown class/method or a method on the wrong kind of channel, 505 content frames out of order.
After one, the parser stays failed: every later ``feed`` raises the same error.

Security: reads hostile bytes from the network (the broker, or anything that answers on its
address). Trusts no length before checking it against what is buffered and against the limits;
buffers at most one partial frame. Content properties are kept raw and decoded on demand
(``gateway.amqp.properties``).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

from gateway.amqp import fields
from gateway.amqp import methods as m
from gateway.amqp.errors import (
    COMMAND_INVALID,
    FRAME_ERROR,
    SYNTAX_ERROR,
    UNEXPECTED_FRAME,
    LocalProtocolError,
    RemoteProtocolError,
)
from gateway.amqp.methods import BY_ID, Heartbeat, Method, method_name
from gateway.amqp.properties import Properties

__all__ = [
    "FRAME_BODY",
    "FRAME_END",
    "FRAME_HEADER",
    "FRAME_HEARTBEAT",
    "FRAME_METHOD",
    "FRAME_MIN_SIZE",
    "HEARTBEAT_FRAME",
    "PROTOCOL_HEADER",
    "Event",
    "FrameWriter",
    "Parser",
    "ProtocolHeader",
    "encode_method",
]

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEADER = 2
FRAME_BODY = 3
FRAME_HEARTBEAT = 8
FRAME_END = 0xCE
FRAME_MIN_SIZE = 4096
HEARTBEAT_FRAME = b"\x08\x00\x00\x00\x00\x00\x00\xce"
DEFAULT_FRAME_MAX = 131072
DEFAULT_MAX_BODY = 128 * 1024 * 1024

_FRAME = struct.Struct(">BHI")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_CLASS_METHOD = struct.Struct(">HH")
_HEADER_PREFIX = struct.Struct(">HHQ")


class ProtocolHeader:
    """The 8-byte protocol header (a server-side parser's first event; a client never receives one:
    a server that sends it back refuses our version, and the parser raises instead)."""

    __slots__ = ("revision", "version_major", "version_minor")
    channel = 0

    def __init__(self, version_major: int, version_minor: int, revision: int) -> None:
        self.version_major = version_major
        self.version_minor = version_minor
        self.revision = revision

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProtocolHeader) and (self.version_major, self.version_minor, self.revision) == (
            other.version_major, other.version_minor, other.revision)

    def __hash__(self) -> int:
        return hash((self.version_major, self.version_minor, self.revision))

    def __repr__(self) -> str:
        return f"ProtocolHeader({self.version_major}, {self.version_minor}, {self.revision})"


Event = Method | Heartbeat | ProtocolHeader

# ----------------------------------------------------------------------------------------------
# method field codec, driven by each class's SPEC
# ----------------------------------------------------------------------------------------------


def _truncated(cls: type[Method]) -> RemoteProtocolError:
    return RemoteProtocolError(f"{m.method_name(cls.CLASS_ID, cls.METHOD_ID)} arguments truncated", SYNTAX_ERROR)


def _decode_fields(cls: type[Method], data: bytes, off: int, end: int) -> list[Any]:
    """The non-reserved field values of ``cls`` from data[off:end], which they must fill exactly."""
    out: list[Any] = []
    bits = -1
    bitpos = 8
    spec = cls.SPEC
    try:
        for code in spec:
            if code == "?" or code == "!":
                if bitpos == 8:
                    if off >= end:
                        raise _truncated(cls)
                    bits = data[off]
                    off += 1
                    bitpos = 0
                if code == "?":
                    out.append(bool(bits >> bitpos & 1))
                bitpos += 1
                continue
            bitpos = 8
            if code == "s" or code == "R":
                if off >= end:
                    raise _truncated(cls)
                n = data[off]
                off += 1
                if end - off < n:
                    raise _truncated(cls)
                if code == "s":
                    out.append(data[off:off + n].decode("utf-8", "surrogateescape"))
                off += n
            elif code == "h" or code == "r":
                if end - off < 2:
                    raise _truncated(cls)
                if code == "h":
                    out.append(_U16.unpack_from(data, off)[0])
                off += 2
            elif code == "i":
                if end - off < 4:
                    raise _truncated(cls)
                out.append(_U32.unpack_from(data, off)[0])
                off += 4
            elif code == "q":
                if end - off < 8:
                    raise _truncated(cls)
                out.append(_U64.unpack_from(data, off)[0])
                off += 8
            elif code == "o":
                if off >= end:
                    raise _truncated(cls)
                out.append(data[off])
                off += 1
            elif code == "S" or code == "Z":
                if end - off < 4:
                    raise _truncated(cls)
                (n,) = _U32.unpack_from(data, off)
                off += 4
                if end - off < n:
                    raise _truncated(cls)
                if code == "S":
                    out.append(bytes(data[off:off + n]))
                off += n
            elif code == "F":
                table, off = fields.decode_table_at(data, off, end)
                out.append(table)
            else:  # pragma: no cover - a SPEC typo
                raise AssertionError(code)
    except RemoteProtocolError as exc:
        if exc.reply_code != SYNTAX_ERROR:
            raise
        raise RemoteProtocolError(f"{m.method_name(cls.CLASS_ID, cls.METHOD_ID)}: {exc.message}",
                                  SYNTAX_ERROR) from None
    if off != end:
        raise RemoteProtocolError(f"{end - off} bytes after the arguments of "
                                  f"{m.method_name(cls.CLASS_ID, cls.METHOD_ID)}", SYNTAX_ERROR)
    return out


def _put_shortstr(out: bytearray, value: str, what: str) -> None:
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} has lone surrogates") from exc
    if len(raw) > 255:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes; a shortstr holds 255 at most")
    out.append(len(raw))
    out += raw


def _encode_fields(out: bytearray, method: Method) -> None:
    cls = type(method)
    values = iter([getattr(method, f) for f in _FIELD_NAMES[cls]])
    bits = 0
    bitpos = -1  # -1: no bit octet open
    try:
        for code in cls.SPEC:
            if code == "?" or code == "!":
                if bitpos == -1 or bitpos == 8:
                    out.append(0)
                    bits = 0
                    bitpos = 0
                if code == "?" and next(values):
                    bits |= 1 << bitpos
                    out[-1] = bits
                bitpos += 1
                continue
            bitpos = -1
            if code == "s":
                _put_shortstr(out, next(values), method.name)
            elif code == "R":
                out.append(0)
            elif code == "h":
                out += _U16.pack(next(values))
            elif code == "r":
                out += b"\x00\x00"
            elif code == "i":
                out += _U32.pack(next(values))
            elif code == "q":
                out += _U64.pack(next(values))
            elif code == "o":
                out += bytes((next(values),))
            elif code == "S":
                value = next(values)
                out += _U32.pack(len(value))
                out += value
            elif code == "Z":
                out += b"\x00\x00\x00\x00"
            elif code == "F":
                fields.encode_table_into(out, next(values))
    except (struct.error, ValueError, TypeError) as exc:
        raise LocalProtocolError(f"{method.name}: {exc}") from exc


_CONTENT_FIELDS = ("properties", "body")
_FIELD_NAMES: dict[type[Method], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls) if f.name not in ("channel", *_CONTENT_FIELDS))
    for cls in m.ALL_METHODS
}


def encode_method(method: Method) -> bytes:
    """The method frame(s) for ``method`` (with header and body frames for a content method, split
    at the default frame_max); use ``FrameWriter`` to write with a negotiated frame_max."""
    w = FrameWriter()
    w.append_method(method)
    return bytes(w.buffer)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

_PUBLISH_HEAD = struct.Struct(">BHIHHH")  # frame type, channel, size, class, method, ticket
_HEADER_HEAD = struct.Struct(">BHIHHQ")  # frame type, channel, size, class, weight, body size
_BODY_HEAD = struct.Struct(">BHI")
_ACK = struct.Struct(">BHIHHQBB")  # ack/reject/nack: frame, class 60, method, tag, bits, frame end
_FRAME_END_BYTE = b"\xce"


class FrameWriter:
    """Appends frames to ``buffer``; the owner takes the bytes (and clears or swaps the buffer).

    ``frame_max`` splits content bodies: each body frame holds at most ``frame_max - 8`` bytes.
    """

    __slots__ = ("buffer", "frame_max")

    def __init__(self, frame_max: int = DEFAULT_FRAME_MAX, buffer: bytearray | None = None) -> None:
        if frame_max < FRAME_MIN_SIZE:
            raise LocalProtocolError(f"frame_max {frame_max} is below the protocol minimum {FRAME_MIN_SIZE}")
        self.frame_max = frame_max
        self.buffer = bytearray() if buffer is None else buffer

    def protocol_header(self) -> None:
        self.buffer += PROTOCOL_HEADER

    def heartbeat(self) -> None:
        self.buffer += HEARTBEAT_FRAME

    def append_method(self, method: Method) -> None:
        """Any method; content methods also get their header and body frames."""
        cls = type(method)
        if isinstance(method, m.BasicPublish):
            self.append_publish(method.channel, method.exchange, method.routing_key, method.properties.encode(),
                                method.body, mandatory=method.mandatory, immediate=method.immediate)
            return
        out = self.buffer
        start = len(out)
        out += _FRAME.pack(FRAME_METHOD, method.channel, 0)
        out += _CLASS_METHOD.pack(cls.CLASS_ID, cls.METHOD_ID)
        try:
            _encode_fields(out, method)
        except LocalProtocolError:
            del out[start:]
            raise
        size = len(out) - start - 7
        if size + 8 > self.frame_max:
            del out[start:]
            raise LocalProtocolError(f"{method.name} is {size + 8} bytes, over frame_max {self.frame_max}")
        _U32.pack_into(out, start + 3, size)
        out += _FRAME_END_BYTE
        if cls in m.CONTENT_METHODS:
            props: Properties = getattr(method, "properties")  # noqa: B009
            self.append_content(method.channel, props.encode(), getattr(method, "body"))  # noqa: B009

    def append_content(self, channel: int, properties_block: bytes, body: bytes) -> None:
        """A content header frame and the body frames (none for an empty body)."""
        out = self.buffer
        size = len(body)
        out += _HEADER_HEAD.pack(FRAME_HEADER, channel, 12 + len(properties_block), 60, 0, size)
        out += properties_block
        out += _FRAME_END_BYTE
        if size:
            chunk = self.frame_max - 8
            if size <= chunk:
                out += _BODY_HEAD.pack(FRAME_BODY, channel, size)
                out += body
                out += _FRAME_END_BYTE
            else:
                view = memoryview(body)
                for pos in range(0, size, chunk):
                    part = view[pos:pos + chunk]
                    out += _BODY_HEAD.pack(FRAME_BODY, channel, len(part))
                    out += part
                    out += _FRAME_END_BYTE

    def append_publish(self, channel: int, exchange: str, routing_key: str, properties_block: bytes,
                       body: bytes, *, mandatory: bool = False, immediate: bool = False) -> None:
        """basic.publish with its content: three frames (or more for a body over frame_max - 8)."""
        out = self.buffer
        start = len(out)
        try:
            ex = exchange.encode("utf-8", "surrogateescape")
            rk = routing_key.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError("exchange or routing key has lone surrogates") from exc
        lex = len(ex)
        lrk = len(rk)
        if lex > 255 or lrk > 255:
            raise LocalProtocolError("exchange and routing key are shortstrs: 255 bytes at most")
        if 20 + len(properties_block) > self.frame_max:
            raise LocalProtocolError(f"properties are {len(properties_block)} bytes; the content header "
                                     f"frame would exceed frame_max {self.frame_max}")
        out += _PUBLISH_HEAD.pack(FRAME_METHOD, channel, 9 + lex + lrk, 60, 40, 0)
        out.append(lex)
        out += ex
        out.append(lrk)
        out += rk
        out.append(mandatory | immediate << 1)
        out += _FRAME_END_BYTE
        try:
            self.append_content(channel, properties_block, body)
        except BaseException:
            del out[start:]
            raise

    def append_ack(self, channel: int, delivery_tag: int, multiple: bool = False) -> None:
        self.buffer += _ACK.pack(FRAME_METHOD, channel, 13, 60, 80, delivery_tag, multiple, FRAME_END)

    def append_nack(self, channel: int, delivery_tag: int, multiple: bool = False, requeue: bool = True) -> None:
        self.buffer += _ACK.pack(FRAME_METHOD, channel, 13, 60, 120, delivery_tag, multiple | requeue << 1,
                                 FRAME_END)

    def append_reject(self, channel: int, delivery_tag: int, requeue: bool = True) -> None:
        self.buffer += _ACK.pack(FRAME_METHOD, channel, 13, 60, 90, delivery_tag, requeue, FRAME_END)


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------

_KEY_DELIVER = 60 << 16 | 60
_KEY_ACK = 60 << 16 | 80
_KEY_NACK = 60 << 16 | 120
_BasicDeliver = m.BasicDeliver
_BasicAck = m.BasicAck
_BasicNack = m.BasicNack
_CONTENT_BY_KEY = frozenset(cls.CLASS_ID << 16 | cls.METHOD_ID for cls in m.CONTENT_METHODS)


class _Pending:
    """A content method waiting for its header (size < 0) or the rest of its body."""

    __slots__ = ("cls", "parts", "properties", "remaining", "size", "values")

    def __init__(self, cls: type[Method], values: list[Any]) -> None:
        self.cls = cls
        self.values = values
        self.size = -1
        self.remaining = 0
        self.properties: Properties | None = None
        self.parts: list[bytes] = []

    def build(self, body: bytes, channel: int) -> Method:
        make: Callable[..., Method] = self.cls
        return make(*self.values, self.properties, body, channel=channel)


class Parser:
    """Bytes in, events out. See the module docstring for the limits and the error codes."""

    __slots__ = ("_chunks", "_error", "_have", "_need", "_pending", "_want_header", "frame_max", "max_body_size")

    def __init__(self, *, frame_max: int = DEFAULT_FRAME_MAX, max_body_size: int = DEFAULT_MAX_BODY,
                 expect_protocol_header: bool = False) -> None:
        #: the largest frame accepted (8 octets of header and end included); set after connection.tune
        self.frame_max = frame_max
        self.max_body_size = max_body_size
        self._want_header = expect_protocol_header
        self._chunks: list[bytes] = []
        self._have = 0
        self._need = 8 if expect_protocol_header else 7
        self._pending: dict[int, _Pending] = {}
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held back as an incomplete frame."""
        return self._have

    def feed(self, data: bytes) -> list[Event]:
        """Every complete event in what has been fed so far; raises RemoteProtocolError on garbage."""
        if self._error is not None:
            raise self._error
        if not data:
            return []
        if self._chunks:
            self._chunks.append(bytes(data))
            self._have += len(data)
            if self._have < self._need:
                return []
            buf = b"".join(self._chunks)
            self._chunks = []
        else:
            buf = bytes(data)
        self._have = 0
        try:
            events, off = self._parse(buf)
        except RemoteProtocolError as exc:
            self._error = exc
            raise
        except Exception as exc:  # pragma: no cover - a bug must not look like a peer's fault, but stay contained
            self._error = RemoteProtocolError(f"internal parser error: {type(exc).__name__}: {exc}", SYNTAX_ERROR)
            raise self._error from exc
        if off < len(buf):
            rest = buf[off:]
            self._chunks = [rest]
            self._have = len(rest)
        return events

    def _parse(self, buf: bytes) -> tuple[list[Event], int]:
        events: list[Event] = []
        off = 0
        n = len(buf)
        if self._want_header:
            if n < 8:
                self._need = 8
                return events, 0
            if buf[:4] != b"AMQP":
                raise RemoteProtocolError("expected the AMQP protocol header", FRAME_ERROR)
            events.append(ProtocolHeader(buf[5], buf[6], buf[7]))
            self._want_header = False
            off = 8
        max_payload = self.frame_max - 8
        pending = self._pending
        append = events.append
        unpack_frame = _FRAME.unpack_from
        while True:
            if n - off < 7:
                self._need = 7
                break
            ftype, channel, size = unpack_frame(buf, off)
            if size > max_payload:
                if ftype == 0x41 and off == 0 and buf[off:off + 4] == b"AMQP":
                    raise RemoteProtocolError(
                        f"the peer does not speak AMQP 0-9-1; it offered protocol header {buf[off:off + 8]!r}",
                        FRAME_ERROR)
                raise RemoteProtocolError(f"frame of {size + 8} bytes exceeds frame_max {self.frame_max}",
                                          FRAME_ERROR)
            end = off + 7 + size
            if end >= n:
                self._need = size + 8
                break
            if buf[end] != FRAME_END:
                raise RemoteProtocolError(f"frame end octet is {buf[end]:#04x}, not 0xce", FRAME_ERROR)
            start = off + 7
            off = end + 1
            if ftype == FRAME_METHOD:
                if size < 4:
                    raise RemoteProtocolError("method frame shorter than its class and method ids", FRAME_ERROR)
                key = buf[start] << 24 | buf[start + 1] << 16 | buf[start + 2] << 8 | buf[start + 3]
                if channel in pending:
                    raise RemoteProtocolError(f"{method_name(key >> 16, key & 0xFFFF)} on channel {channel} "
                                              "while its content was still arriving", UNEXPECTED_FRAME)
                if channel == 0 and key >> 16 != 10:
                    raise RemoteProtocolError(f"{method_name(key >> 16, key & 0xFFFF)} on channel 0", COMMAND_INVALID)
                if key == _KEY_DELIVER:
                    args = _deliver_args(buf, start + 4, end)
                    ctag, tag, redelivered, exchange, routing_key = args
                    # Fused fast path: the header and a single body frame right behind, complete and well
                    # formed. Anything else takes the general path below, which validates frame by frame.
                    if n - off >= 22 and buf[off] == FRAME_HEADER:
                        _t, hch, hsize = unpack_frame(buf, off)
                        hend = off + 7 + hsize
                        if (hch == channel and 14 <= hsize <= max_payload and hend < n and buf[hend] == FRAME_END
                                and buf[off + 7] == 0 and buf[off + 8] == 60):
                            body_size = _U64.unpack_from(buf, off + 11)[0]
                            if body_size == 0:
                                append(_BasicDeliver(ctag, tag, redelivered, exchange, routing_key,
                                                     Properties.from_wire(buf[off + 19:hend]), b"", channel=channel))
                                off = hend + 1
                                continue
                            b = hend + 1
                            if (body_size <= max_payload and n - b >= 8 + body_size and buf[b] == FRAME_BODY
                                    and unpack_frame(buf, b) == (FRAME_BODY, channel, body_size)
                                    and buf[b + 7 + body_size] == FRAME_END and body_size <= self.max_body_size):
                                append(_BasicDeliver(ctag, tag, redelivered, exchange, routing_key,
                                                     Properties.from_wire(buf[off + 19:hend]),
                                                     buf[b + 7:b + 7 + body_size], channel=channel))
                                off = b + 8 + body_size
                                continue
                    pending[channel] = _Pending(_BasicDeliver, list(args))
                    continue
                if key in (_KEY_ACK, _KEY_NACK):
                    if end - start != 13:  # _decode_fields raises the precise error
                        _decode_fields(_BasicAck if key == _KEY_ACK else _BasicNack, buf, start + 4, end)
                        raise AssertionError  # pragma: no cover
                    tag = _U64.unpack_from(buf, start + 4)[0]
                    bits = buf[start + 12]
                    if key == _KEY_ACK:
                        append(_BasicAck(tag, bool(bits & 1), channel=channel))
                    else:
                        append(_BasicNack(tag, bool(bits & 1), bool(bits & 2), channel=channel))
                    continue
                cls = BY_ID.get(key)
                if cls is None:
                    raise RemoteProtocolError(f"unknown method {key >> 16}.{key & 0xFFFF}", COMMAND_INVALID)
                if (cls.CLASS_ID == 10) != (channel == 0):
                    raise RemoteProtocolError(f"{method_name(key >> 16, key & 0xFFFF)} on channel {channel}",
                                              COMMAND_INVALID)
                values = _decode_fields(cls, buf, start + 4, end)
                if key in _CONTENT_BY_KEY:
                    pending[channel] = _Pending(cls, values)
                else:
                    append(cls(*values, channel=channel))
            elif ftype == FRAME_HEADER:
                p = pending.get(channel)
                if p is None or p.size >= 0:
                    raise RemoteProtocolError(f"content header on channel {channel} without a content method",
                                              UNEXPECTED_FRAME)
                if size < 14:
                    raise RemoteProtocolError("content header frame too short", FRAME_ERROR)
                class_id, _weight, body_size = _HEADER_PREFIX.unpack_from(buf, start)
                if class_id != 60:
                    raise RemoteProtocolError(f"content header for class {class_id}, not basic", UNEXPECTED_FRAME)
                if body_size > self.max_body_size:
                    raise RemoteProtocolError(f"content body of {body_size} bytes exceeds the limit of "
                                              f"{self.max_body_size}", FRAME_ERROR)
                p.properties = Properties.from_wire(buf[start + 12:end])
                p.size = p.remaining = body_size
                if body_size == 0:
                    del pending[channel]
                    append(p.build(b"", channel))
            elif ftype == FRAME_BODY:
                p = pending.get(channel)
                if p is None or p.size < 0:
                    raise RemoteProtocolError(f"content body on channel {channel} without a content header",
                                              UNEXPECTED_FRAME)
                if size > p.remaining:
                    raise RemoteProtocolError("content body longer than its header announced", FRAME_ERROR)
                p.remaining -= size
                if p.remaining == 0:
                    del pending[channel]
                    assert p.properties is not None
                    if p.parts:
                        p.parts.append(buf[start:end])
                        body = b"".join(p.parts)
                    else:
                        body = buf[start:end]
                    append(p.build(body, channel))
                elif size:
                    p.parts.append(buf[start:end])
            elif ftype == FRAME_HEARTBEAT:
                if channel != 0 or size != 0:
                    raise RemoteProtocolError("heartbeat frame must be empty and on channel 0", FRAME_ERROR)
                append(_HEARTBEAT)
            else:
                raise RemoteProtocolError(f"unknown frame type {ftype}", FRAME_ERROR)
        return events, off


def _deliver_args(buf: bytes, off: int, end: int) -> tuple[str, int, bool, str, str]:
    """basic.deliver's arguments, read straight (the hot path of a consumer)."""
    try:
        n = buf[off]
        o = off + 1 + n
        ctag = buf[off + 1:o]
        tag_raw = buf[o:o + 9]
        o += 9
        n = buf[o]
        exchange = buf[o + 1:o + 1 + n]
        o += 1 + n
        n = buf[o]
        rk = buf[o + 1:o + 1 + n]
        o += 1 + n
        if o != end or len(rk) != n:
            raise IndexError
        tag = _U64.unpack_from(tag_raw, 0)[0]
    except (IndexError, struct.error):
        _decode_fields(_BasicDeliver, buf, off, end)  # raises the precise error
        raise AssertionError from None  # pragma: no cover
    return (ctag.decode("utf-8", "surrogateescape"), tag, bool(tag_raw[8] & 1),
            exchange.decode("utf-8", "surrogateescape"), rk.decode("utf-8", "surrogateescape"))


_HEARTBEAT = Heartbeat()
