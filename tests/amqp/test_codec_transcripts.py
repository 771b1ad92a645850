"""Transcripts: our codec against pika's (``pika.spec``, ``pika.frame``), the independent reference.

Every method the gateway sends or receives is a named case: ours encodes to the bytes pika's codec
writes, and pika's bytes decode to our event with the same values. Then content (bodies split at
frame_max, property flags with the continuation bit), every field type byte for byte, and the
errors a peer's garbage must raise.
"""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal
from typing import Any

import pika.frame as pframe
import pika.spec as ps
import pytest

from gateway.amqp import codec, fields
from gateway.amqp import methods as m
from gateway.amqp.codec import FrameWriter, Parser
from gateway.amqp.errors import LocalProtocolError, RemoteProtocolError
from gateway.amqp.fields import (
    MAX_DEPTH,
    Float32,
    Int8,
    Int16,
    Int64,
    LongStr,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
    encode_table,
    parse_table,
)
from gateway.amqp.properties import Properties

ARGS = {"x-queue-type": "quorum", "x-delivery-limit": 5, "x-single-active-consumer": True}
CLIENT_PROPS = {"product": "jgw", "capabilities": {"consumer_cancel_notify": True, "basic.nack": True}}

# (name, our event, pika's method, channel): both directions hold for every case
METHODS: list[tuple[str, m.Method, Any, int]] = [
    ("connection.start", m.ConnectionStart(0, 9, {"product": "RabbitMQ", "capabilities": {"basic.nack": True}},
                                           b"PLAIN AMQPLAIN EXTERNAL", b"en_US"),
     ps.Connection.Start(0, 9, {"product": "RabbitMQ", "capabilities": {"basic.nack": True}},
                         "PLAIN AMQPLAIN EXTERNAL", "en_US"), 0),
    ("connection.start-ok PLAIN", m.ConnectionStartOk(CLIENT_PROPS, "PLAIN", b"\0guest\0guest", "en_US"),
     ps.Connection.StartOk(CLIENT_PROPS, "PLAIN", b"\0guest\0guest", "en_US"), 0),
    ("connection.start-ok EXTERNAL", m.ConnectionStartOk(CLIENT_PROPS, "EXTERNAL", b"", "ja_JP"),
     ps.Connection.StartOk(CLIENT_PROPS, "EXTERNAL", b"", "ja_JP"), 0),
    ("connection.tune", m.ConnectionTune(2047, 131072, 60), ps.Connection.Tune(2047, 131072, 60), 0),
    ("connection.tune-ok", m.ConnectionTuneOk(2047, 131072, 30), ps.Connection.TuneOk(2047, 131072, 30), 0),
    ("connection.open", m.ConnectionOpen("/city-a"), ps.Connection.Open("/city-a"), 0),
    ("connection.open-ok", m.ConnectionOpenOk(), ps.Connection.OpenOk(), 0),
    ("connection.close", m.ConnectionClose(320, "CONNECTION_FORCED - broker forced connection closure", 0, 0),
     ps.Connection.Close(320, "CONNECTION_FORCED - broker forced connection closure", 0, 0), 0),
    ("connection.close-ok", m.ConnectionCloseOk(), ps.Connection.CloseOk(), 0),
    ("connection.blocked", m.ConnectionBlocked("low on memory"), ps.Connection.Blocked("low on memory"), 0),
    ("connection.unblocked", m.ConnectionUnblocked(), ps.Connection.Unblocked(), 0),
    ("channel.open", m.ChannelOpen(), ps.Channel.Open(), 7),
    ("channel.open-ok", m.ChannelOpenOk(), ps.Channel.OpenOk(), 7),
    ("channel.flow", m.ChannelFlow(False), ps.Channel.Flow(False), 7),
    ("channel.flow-ok", m.ChannelFlowOk(False), ps.Channel.FlowOk(False), 7),
    ("channel.close", m.ChannelClose(406, "PRECONDITION_FAILED - inequivalent arg", 50, 10),
     ps.Channel.Close(406, "PRECONDITION_FAILED - inequivalent arg", 50, 10), 2047),
    ("channel.close-ok", m.ChannelCloseOk(), ps.Channel.CloseOk(), 2047),
    ("exchange.declare", m.ExchangeDeclare("jgw.in", "topic", False, True, False, False, False,
                                           {"alternate-exchange": "jgw.unrouted"}),
     ps.Exchange.Declare(0, "jgw.in", "topic", False, True, False, False, False,
                         {"alternate-exchange": "jgw.unrouted"}), 1),
    ("exchange.declare passive", m.ExchangeDeclare("jgw.in", "direct", True),
     ps.Exchange.Declare(0, "jgw.in", "direct", True), 1),
    ("exchange.declare-ok", m.ExchangeDeclareOk(), ps.Exchange.DeclareOk(), 1),
    ("exchange.delete", m.ExchangeDelete("jgw.in", True), ps.Exchange.Delete(0, "jgw.in", True), 1),
    ("exchange.delete-ok", m.ExchangeDeleteOk(), ps.Exchange.DeleteOk(), 1),
    ("queue.declare", m.QueueDeclare("jgw.work", False, True, False, False, False, ARGS),
     ps.Queue.Declare(0, "jgw.work", False, True, False, False, False, ARGS), 1),
    ("queue.declare passive exclusive", m.QueueDeclare("q", True, False, True, True, True),
     ps.Queue.Declare(0, "q", True, False, True, True, True), 1),
    ("queue.declare-ok", m.QueueDeclareOk("jgw.work", 12345, 2), ps.Queue.DeclareOk("jgw.work", 12345, 2), 1),
    ("queue.bind", m.QueueBind("jgw.work", "jgw.in", "juki.#", False, {"x-match": "any"}),
     ps.Queue.Bind(0, "jgw.work", "jgw.in", "juki.#", False, {"x-match": "any"}), 1),
    ("queue.bind-ok", m.QueueBindOk(), ps.Queue.BindOk(), 1),
    ("queue.unbind", m.QueueUnbind("jgw.work", "jgw.in", "juki.#"), ps.Queue.Unbind(0, "jgw.work", "jgw.in",
                                                                                     "juki.#"), 1),
    ("queue.unbind-ok", m.QueueUnbindOk(), ps.Queue.UnbindOk(), 1),
    ("queue.purge", m.QueuePurge("jgw.work"), ps.Queue.Purge(0, "jgw.work"), 1),
    ("queue.purge-ok", m.QueuePurgeOk(17), ps.Queue.PurgeOk(17), 1),
    ("queue.delete", m.QueueDelete("jgw.work", True, True), ps.Queue.Delete(0, "jgw.work", True, True), 1),
    ("queue.delete-ok", m.QueueDeleteOk(3), ps.Queue.DeleteOk(3), 1),
    ("basic.qos", m.BasicQos(0, 500, False), ps.Basic.Qos(0, 500, False), 1),
    ("basic.qos-ok", m.BasicQosOk(), ps.Basic.QosOk(), 1),
    ("basic.consume", m.BasicConsume("jgw.work", "jgw-1", False, False, True, False, {"x-priority": 5}),
     ps.Basic.Consume(0, "jgw.work", "jgw-1", False, False, True, False, {"x-priority": 5}), 3),
    ("basic.consume-ok", m.BasicConsumeOk("amq.ctag-0123456789"), ps.Basic.ConsumeOk("amq.ctag-0123456789"), 3),
    ("basic.cancel from the broker", m.BasicCancel("amq.ctag-0123456789", True),
     ps.Basic.Cancel("amq.ctag-0123456789", True), 3),
    ("basic.cancel-ok", m.BasicCancelOk("jgw-1"), ps.Basic.CancelOk("jgw-1"), 3),
    ("basic.get", m.BasicGet("jgw.work", False), ps.Basic.Get(0, "jgw.work", False), 1),
    ("basic.get-empty", m.BasicGetEmpty(), ps.Basic.GetEmpty(), 1),
    ("basic.ack", m.BasicAck(2**63 + 5, False), ps.Basic.Ack(2**63 + 5, False), 1),
    ("basic.ack multiple", m.BasicAck(99, True), ps.Basic.Ack(99, True), 1),
    ("basic.nack", m.BasicNack(7, False, True), ps.Basic.Nack(7, False, True), 1),
    ("basic.nack multiple no requeue", m.BasicNack(7, True, False), ps.Basic.Nack(7, True, False), 1),
    ("basic.reject", m.BasicReject(8, False), ps.Basic.Reject(8, False), 1),
    ("confirm.select", m.ConfirmSelect(False), ps.Confirm.Select(False), 1),
    ("confirm.select-ok", m.ConfirmSelectOk(), ps.Confirm.SelectOk(), 1),
]


def _with_channel(ev: m.Method, channel: int) -> m.Method:
    ev.channel = channel
    return ev


@pytest.mark.parametrize(("name", "ours", "theirs", "channel"), METHODS, ids=[c[0] for c in METHODS])
def test_method_encodes_like_pika(name: str, ours: m.Method, theirs: Any, channel: int) -> None:
    """Our method frame is byte for byte the frame pika's codec writes."""
    assert codec.encode_method(_with_channel(ours, channel)) == pframe.Method(channel, theirs).marshal()


@pytest.mark.parametrize(("name", "ours", "theirs", "channel"), METHODS, ids=[c[0] for c in METHODS])
def test_pika_bytes_decode_to_our_event(name: str, ours: m.Method, theirs: Any, channel: int) -> None:
    """pika's frame decodes to our event, with the same values and the same channel."""
    events = Parser().feed(pframe.Method(channel, theirs).marshal())
    assert events == [_with_channel(ours, channel)]
    assert events[0].name == name.split()[0].replace("from", "").strip()  # type: ignore[union-attr]


def test_covered_methods_are_all_in_the_table() -> None:
    """Each method class the codec knows has a transcript case, apart from the content methods
    (tested below) and connection.secure/secure-ok (never sent by RabbitMQ for PLAIN/EXTERNAL)."""
    covered = {type(c[1]) for c in METHODS}
    rest = set(m.ALL_METHODS) - covered - set(m.CONTENT_METHODS) - {m.ConnectionSecure, m.ConnectionSecureOk}
    assert rest == set()


def test_fast_ack_writers_match_pika() -> None:
    """The straight-line ack/nack/reject writers produce the generic (and pika's) frames."""
    w = FrameWriter()
    w.append_ack(5, 1234, True)
    w.append_nack(5, 1235, False, False)
    w.append_reject(5, 1236, True)
    assert bytes(w.buffer) == (pframe.Method(5, ps.Basic.Ack(1234, True)).marshal()
                               + pframe.Method(5, ps.Basic.Nack(1235, False, False)).marshal()
                               + pframe.Method(5, ps.Basic.Reject(1236, True)).marshal())


# -- content ---------------------------------------------------------------------------------------

PIKA_PROPS = ps.BasicProperties(content_type="application/octet-stream", delivery_mode=2, message_id="m-1",
                                headers={"x-jgw-origin": "city-a", "x-jgw-hop": 2, "nested": {"a": [1, "b"]}},
                                timestamp=1767225600, app_id="jgw")
OUR_PROPS = Properties(content_type="application/octet-stream", delivery_mode=2, message_id="m-1",
                       headers={"x-jgw-origin": "city-a", "x-jgw-hop": 2, "nested": {"a": [1, "b"]}},
                       timestamp=1767225600, app_id="jgw")


def _pika_content(channel: int, method: Any, props: Any, body: bytes, frame_max: int = 131072) -> bytes:
    """What pika's connection writes for a content method (its _send_message splitting rule)."""
    out = [pframe.Method(channel, method).marshal(), pframe.Header(channel, len(body), props).marshal()]
    chunk = frame_max - ps.FRAME_HEADER_SIZE - ps.FRAME_END_SIZE
    for pos in range(0, len(body), chunk):
        out.append(pframe.Body(channel, body[pos:pos + chunk]).marshal())
    return b"".join(out)


CONTENT: list[tuple[str, m.Method, Any]] = [
    ("basic.publish", m.BasicPublish("jgw.out", "juki.ido", True, False, OUR_PROPS, b"payload"),
     ps.Basic.Publish(0, "jgw.out", "juki.ido", True, False)),
    ("basic.deliver", m.BasicDeliver("amq.ctag-x", 42, True, "jgw.in", "juki.ido", OUR_PROPS, b"payload"),
     ps.Basic.Deliver("amq.ctag-x", 42, True, "jgw.in", "juki.ido")),
    ("basic.return", m.BasicReturn(312, "NO_ROUTE", "jgw.out", "nowhere", OUR_PROPS, b"payload"),
     ps.Basic.Return(312, "NO_ROUTE", "jgw.out", "nowhere")),
    ("basic.get-ok", m.BasicGetOk(9, False, "", "jgw.work", 0, OUR_PROPS, b"payload"),
     ps.Basic.GetOk(9, False, "", "jgw.work", 0)),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), CONTENT, ids=[c[0] for c in CONTENT])
def test_content_method_matches_pika_both_ways(name: str, ours: m.Method, theirs: Any) -> None:
    """A content method with properties and body is pika's three frames, and decodes back to one event."""
    ours.channel = 4
    wire = _pika_content(4, theirs, PIKA_PROPS, b"payload")
    assert codec.encode_method(ours) == wire
    [ev] = Parser().feed(wire)
    assert ev == ours
    assert ev.properties.as_dict() == OUR_PROPS.as_dict()  # type: ignore[union-attr]


@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 3 * 4088, 3 * 4088 + 1, 100_000])
def test_body_split_at_frame_max(size: int) -> None:
    """Bodies are cut into frames of frame_max - 8 bytes (none for an empty body), as pika cuts them,
    and the parser joins them again, fed whole or a byte at a time."""
    body = bytes(i % 251 for i in range(size))
    w = FrameWriter(4096)
    w.append_publish(1, "x", "k", OUR_PROPS.encode(), body)
    wire = bytes(w.buffer)
    assert wire == _pika_content(1, ps.Basic.Publish(0, "x", "k"), PIKA_PROPS, body, frame_max=4096)
    assert wire.count(b"\x03\x00\x01") >= (size + 4087) // 4088
    [ev] = Parser(frame_max=4096).feed(wire)
    assert isinstance(ev, m.BasicPublish) and ev.body == body
    p = Parser(frame_max=4096)
    events = [e for i in range(0, len(wire), 997) for e in p.feed(wire[i:i + 997])]
    assert events == [ev]


def test_content_interleaved_with_other_channels_and_heartbeats() -> None:
    """Frames of other channels and heartbeats may come between a method's content frames."""
    a = _pika_content(1, ps.Basic.Deliver("t", 1, False, "", "q"), PIKA_PROPS, b"a" * 10)
    frames = []
    off = 0
    while off < len(a):
        size = struct.unpack_from(">I", a, off + 3)[0]
        frames.append(a[off:off + size + 8])
        off += size + 8
    other = pframe.Method(2, ps.Basic.Ack(5)).marshal()
    wire = frames[0] + codec.HEARTBEAT_FRAME + frames[1] + other + frames[2]
    events = Parser().feed(wire)
    assert [type(e) for e in events] == [m.Heartbeat, m.BasicAck, m.BasicDeliver]


# -- properties ------------------------------------------------------------------------------------

PROPERTY_CASES: list[tuple[str, dict[str, Any]]] = [
    ("content_type", {"content_type": "text/plain"}),
    ("content_encoding", {"content_encoding": "gzip"}),
    ("headers", {"headers": {"a": 1}}),
    ("delivery_mode", {"delivery_mode": 2}),
    ("priority", {"priority": 9}),
    ("correlation_id", {"correlation_id": "c-1"}),
    ("reply_to", {"reply_to": "amq.rabbitmq.reply-to"}),
    ("expiration", {"expiration": "60000"}),
    ("message_id", {"message_id": "3f2b8c1e"}),
    ("timestamp", {"timestamp": 1767225600}),
    ("type", {"type": "juki.ido"}),
    ("user_id", {"user_id": "guest"}),
    ("app_id", {"app_id": "jgw"}),
    ("cluster_id", {"cluster_id": "c"}),
    ("none", {}),
    ("all fourteen", {"content_type": "a", "content_encoding": "b", "headers": {"h": "v"}, "delivery_mode": 1,
                      "priority": 0, "correlation_id": "c", "reply_to": "r", "expiration": "1", "message_id": "m",
                      "timestamp": 0, "type": "t", "user_id": "u", "app_id": "p", "cluster_id": "k"}),
]


def _pika_block(props: ps.BasicProperties) -> bytes:
    return b"".join(props.encode())


@pytest.mark.parametrize(("name", "values"), PROPERTY_CASES, ids=[c[0] for c in PROPERTY_CASES])
def test_property_flags_and_values_match_pika(name: str, values: dict[str, Any]) -> None:
    """Each property sets its own flag bit and encodes as pika encodes it; pika's block decodes to it."""
    pika_values = dict(values)
    if "timestamp" in pika_values:
        pika_values["timestamp"] = pika_values["timestamp"]
    theirs = _pika_block(ps.BasicProperties(**pika_values))
    assert Properties(**values).encode() == theirs
    decoded = Properties.from_wire(theirs)
    assert decoded.as_dict() == values
    assert decoded.encode() is theirs


def test_property_block_with_continuation_word() -> None:
    """A flag word with the continuation bit, followed by an empty word, is accepted; the raw block
    is forwarded as it came; a re-encoding uses one canonical word."""
    canonical = Properties(message_id="m", delivery_mode=2).encode()
    flags = struct.unpack(">H", canonical[:2])[0]
    block = struct.pack(">HH", flags | 1, 0) + canonical[2:]
    p = Properties.from_wire(block)
    assert p.message_id == "m" and p.delivery_mode == 2
    assert p.encode() is block
    assert p.replace(priority=1).encode() == Properties(message_id="m", delivery_mode=2, priority=1).encode()


@pytest.mark.parametrize(("name", "block"), [
    ("continuation word with a flag", struct.pack(">HH", 0x8001, 0x8000) + b"\x01a"),
    ("flag 15 set", struct.pack(">H", 0x0002)),
    ("truncated shortstr", struct.pack(">H", 0x8000) + b"\x05ab"),
    ("truncated headers", struct.pack(">H", 0x2000) + b"\x00\x00\x00\x09ab"),
    ("bytes after the last property", struct.pack(">H", 0x1000) + b"\x02\x00"),
    ("no flag word", b"\x80"),
    ("continuation word missing", struct.pack(">H", 0x0001)),
])
def test_malformed_property_blocks_raise_on_access(name: str, block: bytes) -> None:
    """A malformed property block is kept raw and refused when read, with RemoteProtocolError."""
    p = Properties.from_wire(block)
    assert p.encode() is block
    with pytest.raises(RemoteProtocolError):
        p.validate()


def test_properties_decode_lazily_and_replace_keeps_header_bytes() -> None:
    """Reading message_id does not decode the headers; replace() carries unchanged headers as bytes,
    so a non-canonical table (here a bool written by someone else) survives a property change."""
    headers = b"\x00\x00\x00\x04\x01kt\x01"  # {"k": True}
    block = struct.pack(">H", 0x2000 | 0x0080) + headers + b"\x01m"
    p = Properties.from_wire(block)
    assert p.message_id == "m"
    assert p._headers is None  # not decoded yet
    q = p.replace(message_id="n", delivery_mode=2)
    assert q.encode() == struct.pack(">H", 0x2000 | 0x1000 | 0x0080) + headers + b"\x02" + b"\x01n"
    assert dict(q.headers or {}) == {"k": True}
    with pytest.raises(TypeError):
        q.headers["x"] = 1  # type: ignore[index]
    assert p.replace(headers=None).headers is None


def test_non_utf8_shortstr_properties_round_trip() -> None:
    """A message_id that is not UTF-8 decodes to bytes and is written back unchanged."""
    block = struct.pack(">H", 0x0080) + b"\x02\xff\xfe"
    p = Properties.from_wire(block)
    assert p.message_id == b"\xff\xfe"
    assert p.replace().encode() == block


# -- field tables ---------------------------------------------------------------------------------

# (name, value, its wire form as a table entry after the key "k")
FIELD_CASES: list[tuple[str, Any, bytes]] = [
    ("t true", True, b"t\x01"),
    ("t false", False, b"t\x00"),
    ("b int8", Int8(-128), b"b\x80"),
    ("B uint8", UInt8(255), b"B\xff"),
    ("s int16", Int16(-2), b"s\xff\xfe"),
    ("u uint16", UInt16(65535), b"u\xff\xff"),
    ("I int32 (native int)", -5, b"I\xff\xff\xff\xfb"),
    ("i uint32", UInt32(4294967295), b"i\xff\xff\xff\xff"),
    ("l int64 (native int past int32)", 2**40, b"l" + struct.pack(">q", 2**40)),
    ("l int64 (small, remembered)", Int64(1), b"l" + struct.pack(">q", 1)),
    ("f float32", Float32(1.5), b"f" + struct.pack(">f", 1.5)),
    ("f float32 signalling NaN keeps its bits", Float32.from_wire(b"\x7f\x80\x00\x01"), b"f\x7f\x80\x00\x01"),
    ("d float64 (native float)", -0.1, b"d" + struct.pack(">d", -0.1)),
    ("D decimal", Decimal("123.45"), b"D\x02" + struct.pack(">I", 12345)),
    ("D decimal keeps its scale", Decimal("1.50"), b"D\x02" + struct.pack(">I", 150)),
    ("S longstr (native str)", "日本語", b"S" + struct.pack(">I", 9) + "日本語".encode()),
    ("S longstr not UTF-8", LongStr(b"\xff\x00\xfe"), b"S\x00\x00\x00\x03\xff\x00\xfe"),
    ("x byte array (native bytes)", b"\x00\xff", b"x\x00\x00\x00\x02\x00\xff"),
    ("A array", [1, "a", None], b"A\x00\x00\x00\x0c" + b"I\x00\x00\x00\x01" + b"S\x00\x00\x00\x01a" + b"V"),
    ("T timestamp", Timestamp(1767225600), b"T" + struct.pack(">Q", 1767225600)),
    ("F nested table", {"n": UInt8(1)}, b"F\x00\x00\x00\x04\x01nB\x01"),
    ("V void", None, b"V"),
]


def _entry(raw: bytes) -> bytes:
    return struct.pack(">I", 2 + len(raw)) + b"\x01k" + raw


@pytest.mark.parametrize(("name", "value", "raw"), FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_field_type_round_trips_exactly(name: str, value: Any, raw: bytes) -> None:
    """Each field type encodes to its letter and bytes, and decodes to a value of the same type
    (which writes the same bytes again)."""
    wire = _entry(raw)
    assert encode_table({"k": value}) == wire
    decoded = parse_table(wire)["k"]
    # a native int past int32 is written as 'l', which always reads back as Int64
    assert type(decoded) is (Int64 if type(value) is int and abs(value) >= 2**31 else type(value))
    assert encode_table({"k": decoded}) == wire
    if not (isinstance(value, float) and value != value):
        assert decoded == value


@pytest.mark.parametrize(("name", "native", "letter"), [
    ("str", "x", "S"), ("int", 1, "I"), ("big int", -(2**63), "l"), ("bool", True, "t"), ("float", 1.0, "d"),
    ("bytes", b"", "x"), ("bytearray", bytearray(b"a"), "x"), ("dict", {}, "F"), ("list", [], "A"),
    ("tuple", (), "A"), ("None", None, "V"), ("Decimal", Decimal(1), "D"),
    ("aware datetime", dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "T"), ("naive datetime (UTC)", dt.datetime(2026, 1, 1),
                                                                     "T"),
])
def test_natives_get_documented_letters(name: str, native: Any, letter: str) -> None:
    """Writing a Python native picks the type letter the module docstring documents."""
    assert fields.wire_type(native) == letter


def test_datetime_written_as_seconds() -> None:
    """A datetime becomes whole seconds since the epoch (naive means UTC) and reads back as a Timestamp."""
    t = parse_table(encode_table({"a": dt.datetime(2026, 1, 1, 0, 0, 1, 999999), "b": dt.datetime(
        2026, 1, 1, 9, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=9)))}))
    assert t["a"] == t["b"] == 1767225601 and isinstance(t["a"], Timestamp)
    assert t["a"].datetime == dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC)


def test_non_utf8_keys_and_values_round_trip() -> None:
    """Keys that are not UTF-8 decode to bytes, values to LongStr, and both are written back unchanged."""
    wire = struct.pack(">I", 13) + b"\x02\xff\xfe" + b"S\x00\x00\x00\x02\xc3\x28" + b"\x01a" + b"V"
    t = parse_table(wire)
    assert t == {b"\xff\xfe": LongStr(b"\xc3\x28"), "a": None}
    assert encode_table(t) == wire


def _nest(depth: int) -> dict[str, Any]:
    """A table whose innermost value sits inside ``depth`` containers (the outermost table is 1)."""
    t: Any = {"leaf": 1}
    for i in range(depth - 1):  # alternate arrays and tables, the outermost a table
        t = {"t": t} if (depth - 2 - i) % 2 == 0 else [t]
    assert isinstance(t, dict)
    return t


def test_nesting_at_the_depth_limit_round_trips() -> None:
    """Containers nested exactly MAX_DEPTH (32) deep, tables and arrays alternating, round-trip."""
    depth = 1
    t: Any = _nest(MAX_DEPTH)
    # count the containers the way the codec does
    node: Any = t
    while True:
        inner = next(iter(node.values())) if isinstance(node, dict) else node[0]
        if not isinstance(inner, dict | list):
            break
        depth += 1
        node = inner
    assert depth == MAX_DEPTH
    wire = encode_table(t)
    assert encode_table(parse_table(wire)) == wire


def test_nesting_past_the_limit_is_refused_both_ways() -> None:
    """One container more than MAX_DEPTH is a LocalProtocolError to write and a RemoteProtocolError to read."""
    too_deep = {"t": _nest(MAX_DEPTH)}
    with pytest.raises(LocalProtocolError):
        encode_table(too_deep)
    inner = encode_table(_nest(MAX_DEPTH))
    wire = struct.pack(">I", len(inner) + 3) + b"\x01tF" + inner
    with pytest.raises(RemoteProtocolError, match="nested deeper"):
        parse_table(wire)


def test_large_table_round_trips() -> None:
    """A table of 20 000 entries of every type round-trips byte for byte."""
    values = [c[1] for c in FIELD_CASES]
    big = {f"k{i:05d}": values[i % len(values)] for i in range(20_000)}
    wire = encode_table(big)
    assert len(wire) > 200_000
    assert encode_table(parse_table(wire)) == wire


def test_tables_pika_writes_decode_to_the_same_values() -> None:
    """A table pika encodes (str, int, long, bool, bytes, Decimal, datetime, nested, list, None) decodes
    to the same values here, and re-encodes to pika's bytes."""
    table = {"s": "日本", "i": 7, "l": 2**40, "t": False, "x": b"\x00", "D": Decimal("1.5"),
             "T": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "F": {"a": [1, "b", None]}, "V": None}
    pieces: list[bytes] = []
    from pika import data as pdata
    pdata.encode_table(pieces, table)
    wire = b"".join(pieces)
    ours = parse_table(wire)
    assert ours == {**table, "T": 1767225600}
    assert encode_table(ours) == wire
    assert encode_table(table) == wire


@pytest.mark.parametrize(("name", "wire", "match"), [
    ("bool octet 2", _entry(b"t\x02"), "neither 0 nor 1"),
    ("duplicate key", struct.pack(">I", 6) + b"\x01kV\x01kV", "twice"),
    ("unknown type U", _entry(b"U\x00\x01"), "unknown field type"),
    ("truncated int32", _entry(b"I\x00\x00"), "truncated"),
    ("string past the table", _entry(b"S\x00\x00\x00\x09abc"), "truncated"),
    ("array past the table", _entry(b"A\x00\x00\x00\x09V"), "truncated"),
    ("key past the table", struct.pack(">I", 3) + b"\x05ab", "truncated"),
    ("element past its array", _entry(b"A\x00\x00\x00\x02I\x00\x00\x00\x00"), "truncated"),
    ("table length past the data", b"\x00\x00\x01\x00", "truncated"),
    ("bytes after the table", b"\x00\x00\x00\x00V", "after the end"),
])
def test_malformed_tables_are_refused(name: str, wire: bytes, match: str) -> None:
    """A malformed table raises RemoteProtocolError naming what was wrong."""
    with pytest.raises(RemoteProtocolError, match=match):
        parse_table(wire)


@pytest.mark.parametrize(("name", "table"), [
    ("int8 out of range", {"k": Int8(128)}),
    ("int past int64", {"k": 2**63}),
    ("uint32 negative", {"k": UInt32(-1)}),
    ("key over 255 bytes", {"k" * 256: 1}),
    ("negative decimal", {"k": Decimal("-1")}),
    ("decimal digits over 32 bits", {"k": Decimal(2**32)}),
    ("lone surrogate", {"k": "\udc80"}),
    ("a set", {"k": {1}}),
    ("an int key", {1: 1}),
    ("timestamp before the epoch", {"k": dt.datetime(1969, 1, 1, tzinfo=dt.UTC)}),
])
def test_unwritable_values_are_local_errors(name: str, table: dict[Any, Any]) -> None:
    """Values no field type can carry raise LocalProtocolError (our misuse), not anything else."""
    with pytest.raises(LocalProtocolError):
        encode_table(table)


# -- errors from the parser -------------------------------------------------------------------------

DELIVER = _pika_content(1, ps.Basic.Deliver("t", 1, False, "", "q"), PIKA_PROPS, b"body")
ACK = pframe.Method(1, ps.Basic.Ack(1)).marshal()


@pytest.mark.parametrize(("name", "wire", "code"), [
    ("bad frame end", ACK[:-1] + b"\x00", 501),
    ("frame over frame_max", b"\x03\x00\x01" + struct.pack(">I", 131072) + b"\x00" * 131073, 501),
    ("unknown frame type", b"\x04\x00\x00\x00\x00\x00\x00\xce", 501),
    ("heartbeat on channel 1", b"\x08\x00\x01\x00\x00\x00\x00\xce", 501),
    ("method frame too short", b"\x01\x00\x01\x00\x00\x00\x02\x00\x3c\xce", 501),
    ("unknown method", b"\x01\x00\x01\x00\x00\x00\x04\x00\x3c\x00\x64\xce", 503),
    ("unknown class", b"\x01\x00\x01\x00\x00\x00\x04\x00\x5a\x00\x0a\xce", 503),
    ("connection method on channel 1", pframe.Method(1, ps.Connection.CloseOk()).marshal(), 503),
    ("basic method on channel 0", pframe.Method(0, ps.Basic.QosOk()).marshal(), 503),
    ("ack on channel 0", pframe.Method(0, ps.Basic.Ack(1)).marshal(), 503),
    ("truncated arguments", b"\x01\x00\x01\x00\x00\x00\x0c\x00\x3c\x00\x50" + b"\x00" * 8 + b"\xce", 502),
    ("trailing bytes in a method", b"\x01\x00\x01\x00\x00\x00\x05\x00\x3c\x00\x0b\x00\xce", 502),
    ("header without a method", pframe.Header(1, 4, PIKA_PROPS).marshal(), 505),
    ("body without a header", pframe.Method(1, ps.Basic.Deliver("t", 1, False, "", "q")).marshal()
     + pframe.Body(1, b"x").marshal(), 505),
    ("method during content", pframe.Method(1, ps.Basic.Deliver("t", 1, False, "", "q")).marshal() + ACK, 505),
    ("body longer than announced", DELIVER[:-12] + pframe.Body(1, b"bodyX").marshal(), 501),
    ("header for another class", pframe.Method(1, ps.Basic.Deliver("t", 1, False, "", "q")).marshal()
     + b"\x02\x00\x01\x00\x00\x00\x0e\x00\x32\x00\x00" + b"\x00" * 10 + b"\xce", 505),
    ("body size over the limit", pframe.Method(1, ps.Basic.Deliver("t", 1, False, "", "q")).marshal()
     + pframe.Header(1, 2**40, ps.BasicProperties()).marshal(), 501),
    ("a protocol header instead of frames", b"AMQP\x00\x00\x09\x01", 501),
])
def test_garbage_raises_remote_protocol_error(name: str, wire: bytes, code: int) -> None:
    """Garbage from the peer is a RemoteProtocolError whose reply_code is the close code to send,
    whole or fed a byte at a time, and the parser stays failed afterwards."""
    with pytest.raises(RemoteProtocolError) as whole:
        Parser().feed(wire)
    assert whole.value.reply_code == code
    p = Parser()
    with pytest.raises(RemoteProtocolError) as split:
        for i in range(len(wire)):
            p.feed(wire[i:i + 1])
    assert split.value.reply_code == code
    with pytest.raises(RemoteProtocolError):
        p.feed(ACK)


def test_server_side_parser_reads_the_protocol_header() -> None:
    """A parser expecting a client's stream yields the protocol header, then frames."""
    events = Parser(expect_protocol_header=True).feed(codec.PROTOCOL_HEADER + ACK)
    assert events == [codec.ProtocolHeader(0, 9, 1), m.BasicAck(1, False, channel=1)]


def test_writer_refuses_what_amqp_cannot_carry() -> None:
    """Over-long shortstrs, a content header over frame_max and a small frame_max are our misuse."""
    w = FrameWriter(4096)
    with pytest.raises(LocalProtocolError):
        w.append_publish(1, "x" * 256, "k", b"\x00\x00", b"")
    with pytest.raises(LocalProtocolError):
        w.append_publish(1, "x", "k", Properties(headers={"h": "v" * 5000}).encode(), b"")
    with pytest.raises(LocalProtocolError):
        w.append_method(m.QueueDeclare("q" * 300))
    with pytest.raises(LocalProtocolError):
        w.append_method(m.QueueDeclare("q", arguments={"big": "v" * 5000}))
    assert w.buffer == bytearray()
    with pytest.raises(LocalProtocolError):
        FrameWriter(1024)


def test_new_modules_import_nothing_from_pika() -> None:
    """The codec and the connection stand on their own: pika is only the tests' reference."""
    import ast
    from pathlib import Path

    import gateway.amqp.codec as mod

    here = Path(mod.__file__).parent
    for name in ("codec", "fields", "properties", "methods", "errors", "connection"):
        tree = ast.parse((here / f"{name}.py").read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {i for i in imported if i.split(".")[0] == "pika"}, name
