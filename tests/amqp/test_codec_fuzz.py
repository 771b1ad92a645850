"""Fuzzing the codec against its stated invariants (h11's ``fuzz/afl-server.py``, mitmproxy's tls fuzz).

1. Any bytes, fed whole or in random splits, parse or raise RemoteProtocolError, nothing else; and
   content properties they carry decode or raise RemoteProtocolError.
2. Valid frames parse to the same events however the bytes are split.
3. Generated methods (every covered method, random field values) round-trip: encode, parse, equal.
4. Generated tables round-trip: ``encode(decode(b)) == b``; and any bytes given to the table decoder
   either are refused with RemoteProtocolError or re-encode to exactly themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.amqp import codec
from gateway.amqp import methods as m
from gateway.amqp.codec import FrameWriter, Parser
from gateway.amqp.errors import RemoteProtocolError
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
from gateway.amqp.properties import PROPERTY_NAMES, Properties

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- values and tables ---------------------------------------------------------------------------

scalars = st.one_of(
    st.booleans(),
    st.integers(-128, 127).map(Int8),
    st.integers(0, 255).map(UInt8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(0, 2**16 - 1).map(UInt16),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**32 - 1).map(UInt32),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.binary(min_size=4, max_size=4).map(Float32.from_wire),
    st.floats(allow_nan=True, allow_infinity=True),
    st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1)).map(lambda t: Decimal(t[1]).scaleb(-t[0])),
    st.text(max_size=20),
    st.binary(max_size=20).filter(lambda b: not _utf8(b)).map(LongStr),
    st.binary(max_size=20),
    st.integers(0, 2**64 - 1).map(Timestamp),
    st.none(),
)
keys = st.one_of(st.text(max_size=12).filter(lambda k: len(k.encode()) <= 255),
                 st.binary(max_size=12).filter(lambda b: not _utf8(b)))


def _utf8(b: bytes) -> bool:
    try:
        b.decode()
        return True
    except UnicodeDecodeError:
        return False


values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)
tables = st.dictionaries(keys, values, max_size=8)


def _same(a: Any, b: Any) -> bool:
    """Equal in value and wire type (floats by their bits, so NaN equals itself)."""
    return encode_table({"v": a}) == encode_table({"v": b})


@FUZZ
@given(tables)
def test_generated_tables_round_trip(table: dict[Any, Any]) -> None:
    """Any table of the model encodes, decodes to equal values of the same types, and re-encodes exactly."""
    wire = encode_table(table)
    decoded = parse_table(wire)
    assert encode_table(decoded) == wire
    assert set(decoded) == set(table)
    for k, v in table.items():
        assert _same(decoded[k], v)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_a_table_are_refused_or_exact(data: bytes) -> None:
    """Bytes given to the table decoder are refused (RemoteProtocolError) or re-encode to themselves."""
    wire = struct.pack(">I", len(data)) + data
    try:
        decoded = parse_table(wire)
    except RemoteProtocolError:
        return
    assert encode_table(decoded) == wire


@FUZZ
@given(tables, st.data())
def test_mutated_tables_are_refused_or_exact(table: dict[Any, Any], data: st.DataObject) -> None:
    """A valid table with one byte changed is still refused or decoded exactly (never anything else)."""
    wire = bytearray(encode_table(table))
    if len(wire) > 4:
        i = data.draw(st.integers(4, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    try:
        decoded = parse_table(bytes(wire))
    except RemoteProtocolError:
        return
    assert encode_table(decoded) == bytes(wire)


def test_nesting_bomb_is_refused_quickly() -> None:
    """Arrays nested 100 000 deep (5 bytes each) are refused at MAX_DEPTH, not by recursion errors."""
    depth = 100_000
    inner = b""
    for _ in range(40):
        inner = b"A" + struct.pack(">I", len(inner)) + inner
    assert MAX_DEPTH < 40 < depth
    wire = struct.pack(">I", 2 + len(inner)) + b"\x01k" + inner
    try:
        parse_table(wire)
    except RemoteProtocolError as exc:
        assert "nested deeper" in str(exc)
    else:
        raise AssertionError("accepted")


# -- methods -------------------------------------------------------------------------------------

def _field_strategy(code: str, name: str) -> st.SearchStrategy[Any]:
    if code == "?":
        return st.booleans()
    if code == "o":
        return st.integers(0, 255)
    if code == "h":
        return st.integers(0, 2**16 - 1)
    if code == "i":
        return st.integers(0, 2**32 - 1)
    if code == "q":
        return st.integers(0, 2**64 - 1)
    if code == "s":  # method shortstrs: text without surrogates, at most 255 bytes
        return st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).filter(_encodable)
    if code == "S":
        return st.binary(max_size=50)
    if code == "F":
        return tables
    raise AssertionError(code)


def _encodable(s: str) -> bool:
    try:
        return len(s.encode("utf-8", "surrogateescape")) <= 255
    except UnicodeEncodeError:
        return False


def _method_strategy(cls: type[m.Method]) -> st.SearchStrategy[m.Method]:
    codes = [c for c in cls.SPEC if c not in "rR!Z"]
    names = [f.name for f in dataclasses.fields(cls) if f.name not in ("channel", "properties", "body")]
    assert len(codes) == len(names), cls
    channel = st.just(0) if cls.CLASS_ID == 10 else st.integers(1, 65535)
    parts: dict[str, st.SearchStrategy[Any]] = {n: _field_strategy(c, n) for c, n in zip(codes, names, strict=True)}
    if cls in m.CONTENT_METHODS:
        parts["properties"] = properties
        parts["body"] = st.binary(max_size=9000)
    return st.builds(cls, channel=channel, **parts)


properties = st.fixed_dictionaries({}, optional={
    n: (st.dictionaries(keys, values, max_size=4) if n == "headers"
        else st.integers(0, 255) if n in ("delivery_mode", "priority")
        else st.integers(0, 2**64 - 1) if n == "timestamp"
        else st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20).filter(_encodable),
                       st.binary(max_size=10).filter(lambda b: not _utf8(b))))
    for n in PROPERTY_NAMES}).map(lambda d: Properties(**d))


def _wire(events: list[Any]) -> list[bytes]:
    """Events compared by their encoding (a NaN in a table is not equal to itself, its bytes are)."""
    return [codec.encode_method(e) if isinstance(e, m.Method) else repr(e).encode() for e in events]


any_method = st.one_of([_method_strategy(cls) for cls in m.ALL_METHODS])


@FUZZ
@given(st.lists(any_method, min_size=1, max_size=4), st.sampled_from([4096, 8192, 131072]))
def test_generated_methods_round_trip(methods: list[m.Method], frame_max: int) -> None:
    """Encoded methods (with content split at frame_max) parse back to equal events."""
    w = FrameWriter(frame_max)
    for method in methods:
        w.append_method(method)
    events = Parser(frame_max=frame_max).feed(bytes(w.buffer))
    assert _wire(events) == _wire(methods)
    for ev in events:
        if isinstance(ev, m.BasicDeliver | m.BasicPublish | m.BasicReturn | m.BasicGetOk):
            assert ev.properties.validate().as_dict().keys() == ev.properties.as_dict().keys()


@FUZZ
@given(st.lists(any_method, min_size=1, max_size=4), st.data())
def test_valid_frames_parse_the_same_however_split(methods: list[m.Method], data: st.DataObject) -> None:
    """The events do not depend on where the byte stream is cut."""
    w = FrameWriter(4096)
    for method in methods:
        w.append_method(method)
    wire = bytes(w.buffer)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    p = Parser(frame_max=4096)
    events: list[Any] = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        events += p.feed(wire[prev:cut])
        prev = cut
    assert _wire(events) == _wire(methods)
    assert p.buffered == 0


# -- any bytes -----------------------------------------------------------------------------------

def _check_stream(chunks: list[bytes]) -> None:
    p = Parser(frame_max=4096, max_body_size=1 << 20)
    try:
        for chunk in chunks:
            for ev in p.feed(chunk):
                props = getattr(ev, "properties", None)
                if props is not None:
                    with contextlib.suppress(RemoteProtocolError):
                        props.validate()
    except RemoteProtocolError:
        return


@FUZZ
@given(st.binary(max_size=2000), st.data())
def test_any_bytes_parse_or_raise_remote_protocol_error(data: bytes, draw: st.DataObject) -> None:
    """Random bytes, whole or in random splits, give events or RemoteProtocolError, nothing else."""
    _check_stream([data])
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    _check_stream([data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)])


@FUZZ
@given(st.lists(any_method, min_size=1, max_size=3), st.data())
def test_mutated_valid_streams_parse_or_raise(methods: list[m.Method], data: st.DataObject) -> None:
    """Valid frames with a few bytes changed, cut or appended reach deep into the parser and still
    give only events or RemoteProtocolError."""
    w = FrameWriter(4096)
    for method in methods:
        w.append_method(method)
    wire = bytearray(w.buffer)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    wire = wire[:data.draw(st.integers(0, len(wire)))] + data.draw(st.binary(max_size=20))
    _check_stream([bytes(wire)])
    cut = data.draw(st.integers(0, len(wire)))
    _check_stream([bytes(wire[:cut]), bytes(wire[cut:])])


def test_heartbeat_constant_is_a_heartbeat() -> None:
    """The prebuilt heartbeat frame parses as one Heartbeat."""
    assert Parser().feed(codec.HEARTBEAT_FRAME) == [m.Heartbeat()]
