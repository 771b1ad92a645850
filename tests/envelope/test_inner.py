"""The inner record restores every source header and property exactly, and refuses what it cannot."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.envelope import Contents, EnvelopeError, Limits, inner

SALT = bytes(16)

RICH_HEADERS = {
    "x-text": "全角テキスト ＡＢＣ", "x-bytes": b"\x00\xff\x81\x40",
    "x-int": -(2**63), "x-int-max": 2**63 - 1,
    "x-float": -0.0, "x-inf": math.inf, "x-true": True, "x-false": False, "x-none": None,
    "x-decimal": decimal.Decimal("-12.340"), "x-decimal-exp": decimal.Decimal("1E+3"),
    "x-naive-time": dt.datetime(2024, 3, 1, 9, 30, 15),
    "x-aware-time": dt.datetime(2024, 3, 1, 0, 0, tzinfo=dt.UTC),
    "x-list": [1, "two", [b"3", {"four": 4}], []], "x-table": {"inner": {"deeper": [None]}},
    "": "empty key",
}


def roundtrip(c: Contents) -> Contents:
    return inner.decode(inner.encode(c, SALT))


def test_rich_headers_and_properties_roundtrip() -> None:
    """Every value type pika hands us comes back equal, with the same type and key order."""
    c = Contents(body=bytes(range(256)) * 3, headers=RICH_HEADERS,
                 content_type="application/xml; charset=EUC-JP", content_encoding="gzip",
                 correlation_id="処理通番-000123", type="異動", app_id="kizon-juki", timestamp=1_700_000_000)
    back = roundtrip(c)
    assert back == c
    assert list(back.headers) == list(RICH_HEADERS)
    assert [type(v) for v in back.headers.values()] == [type(v) for v in RICH_HEADERS.values()]
    assert math.copysign(1, back.headers["x-float"]) == -1.0


def test_nan_roundtrips_bit_for_bit() -> None:
    """A NaN header value survives (as NaN; equality cannot say so)."""
    assert math.isnan(roundtrip(Contents(b"", {"n": math.nan})).headers["n"])


def test_empty_everything() -> None:
    """An empty body with no headers and no properties is still a message."""
    assert roundtrip(Contents(b"")) == Contents(b"")
    assert roundtrip(Contents(b"", content_type="")).content_type == ""


@pytest.mark.parametrize(("headers", "what"), [
    ({"t": (1, 2)}, "tuple"), ({"s": {1, 2}}, "set"), ({"o": object()}, "object"), ({"i": 2**63}, "64 bits"),
    ({"i": -(2**63) - 1}, "64 bits"), ({"s": "\udc80"}, "UTF-8"), ({1: "int key"}, "key"),
])
def test_unrepresentable_headers_are_unsealable(headers: dict, what: str) -> None:  # type: ignore[type-arg]
    """Values the format cannot carry exactly are refused at seal time, with a reason."""
    with pytest.raises(EnvelopeError) as info:
        inner.encode(Contents(b"x", headers), SALT)
    assert info.value.reason == "unsealable"
    assert what in info.value.detail


def test_sealer_applies_receiver_limits() -> None:
    """Headers nested deeper, or more numerous, than a receiver accepts are unsealable."""
    deep: dict = {}  # type: ignore[type-arg]
    node = deep
    for _ in range(9):
        node["d"] = {}
        node = node["d"]
    with pytest.raises(EnvelopeError):
        inner.encode(Contents(b"", {"x": deep}), SALT)
    with pytest.raises(EnvelopeError):
        inner.encode(Contents(b"", {"x": list(range(10))}), SALT, Limits(max_inner_headers=5))


def _record(*fields: tuple[int, bytes]) -> bytes:
    return SALT + b"".join(bytes([t]) + len(v).to_bytes(4, "big") + v for t, v in fields)


def _table(entries: bytes, count: int) -> bytes:
    return count.to_bytes(4, "big") + entries


HOSTILE = {
    "no body": _record((1, b"text/plain")),
    "bytes after body": _record((15, b"x")) + b"\x00",
    "out of order": _record((2, b"a"), (1, b"b"), (15, b"")),
    "unknown field": _record((9, b""), (15, b"")),
    "headers twice": _record((7, _table(b"", 0)), (8, _table(b"x\x00\x01kN", 1)), (15, b"")),
    "named table without a bytes name": _record((8, _table(b"s\x00\x01kN", 1)), (15, b"")),
    "unknown name kind": _record((8, _table(b"q\x00\x01kN", 1)), (15, b"")),
    "nested G without a bytes name": _record((7, _table(b"\x00\x01kG" + _table(b"s\x00\x01kN", 1), 1)),
                                              (15, b"")),
    "unknown AMQP field type": _record((7, _table(b"\x00\x01kW?N", 1)), (15, b"")),
    "typed value does not fit": _record((7, _table(b"\x00\x01kWb" + b"i" + (300).to_bytes(8, "big"), 1)),
                                        (15, b"")),
    "typed value inside a typed value": _record((7, _table(b"\x00\x01kWbWbi" + bytes(8), 1)), (15, b"")),
    "timestamp 4 bytes": _record((6, b"\x00" * 4), (15, b"")),
    "content type not UTF-8": _record((1, b"\xff"), (15, b"")),
    "huge header count": _record((7, _table(b"", 2**32 - 1)), (15, b"")),
    "unknown value type": _record((7, _table(b"\x00\x01k?", 1)), (15, b"")),
    "repeated key": _record((7, _table(b"\x00\x01kN\x00\x01kN", 2)), (15, b"")),
    "decimal not canonical": _record((7, _table(b"\x00\x01kD\x00\x0401.0", 1)), (15, b"")),
    "datetime not canonical": _record((7, _table(b"\x00\x01kT\x00\x0a2024-01-01", 1)), (15, b"")),
    "nested too deep": _record((7, _table(b"\x00\x01k" + b"A\x00\x00\x00\x01" * 12 + b"N", 1)), (15, b"")),
    "truncated salt": b"\x00" * 10,
    "list longer than data": _record((7, _table(b"\x00\x01kA\x00\x00\x10\x00", 1)), (15, b"")),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_inner_records(case: str) -> None:
    """Each bad inner record is envelope-malformed (never another exception)."""
    with pytest.raises(EnvelopeError) as info:
        inner.decode(HOSTILE[case])
    assert info.value.reason == "envelope-malformed"


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20)


@given(body=st.binary(max_size=512), headers=st.dictionaries(st.text(max_size=12), _values, max_size=8),
       ts=st.none() | st.integers(0, 2**40))
def test_roundtrip_property(body: bytes, headers: dict, ts: int | None) -> None:  # type: ignore[type-arg]
    """decode(encode(c)) == c for generated bodies and header tables."""
    c = Contents(body, headers, timestamp=ts)
    try:
        encoded = inner.encode(c, os.urandom(16))
    except EnvelopeError:
        return  # over the nesting or item limits: refused, which is the other allowed outcome
    assert inner.decode(encoded) == c
