"""Header values keep their AMQP field type through the envelope's inner record and back.

The codec decodes a delivery's headers into its type-exact model (``Int64``, ``Float32``,
``Timestamp``, ...); the seal stage puts them into the inner record with their field type; the
open stage gives them back as ``inner.Typed``; the codec writes those with their field type. A
header table that went through seal and open is, byte for byte, the table that came in.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from gateway.amqp import fields
from gateway.envelope import inner

SALT = bytes(16)


def _round_trip(table_bytes: bytes) -> bytes:
    table = fields.parse_table(table_bytes)
    record = inner.encode(inner.Contents(body=b"", headers=table), SALT)
    opened = inner.decode(record).headers
    return fields.encode_table(opened)


def test_every_field_type_survives_seal_and_open_byte_for_byte() -> None:
    """RabbitMQ's x-death (arrays of tables of Int64 counts and timestamps) included."""
    table = {
        "bool": True, "int8": fields.Int8(-5), "uint8": fields.UInt8(200), "int16": fields.Int16(-300),
        "uint16": fields.UInt16(60000), "int32": 7, "uint32": fields.UInt32(4_000_000_000),
        "int64": fields.Int64(-(2**40)), "float32": fields.Float32(1.5), "double": -2.25,
        "decimal": Decimal("12.340"), "text": "異動", "bytes": b"\x00\xff", "void": None,
        "timestamp": fields.Timestamp(1_700_000_000), "longstr": fields.LongStr(b"\x82\xa0\xff"),
        "x-death": [{"count": fields.Int64(1), "reason": "expired", "queue": "q.retry.0",
                     "time": fields.Timestamp(1_700_000_001), "routing-keys": ["q"]}],
        "nested": {"a": [1, "b", {"c": fields.Float32(0.5)}]},
        "when": dt.datetime(2026, 12, 3, tzinfo=dt.UTC),
    }
    wire = fields.encode_table(table)
    assert _round_trip(wire) == wire


def test_a_typed_value_of_the_inner_record_is_written_with_its_field_type() -> None:
    assert fields.encode_table({"n": inner.Typed("l", 5)}) == fields.encode_table({"n": fields.Int64(5)})
    assert fields.encode_table({"f": inner.Typed("f", 0.5)}) == fields.encode_table({"f": fields.Float32(0.5)})
