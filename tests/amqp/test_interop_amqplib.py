"""Interop with a client that is not pika: Node.js amqplib.

amqplib publishes one message whose headers hold every field type it can write (its ``{'!': type}``
form for floats, decimals, timestamps and each integer width; byte arrays, arrays, nested tables,
void) and all the basic properties it sets. Our connection consumes it and checks the type and value
of every field, then publishes it again twice: once forwarding the property block as received, once
re-encoded from the decoded values. amqplib reads both back and compares the property block it
receives, byte for byte, with the one it sent.

``npm ci`` runs in tests/amqp/node when node_modules is missing (package-lock.json pins amqplib);
the test is skipped only when ``node`` is not installed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.amqp.connection import Connection, ConnectParams, Delivery
from gateway.amqp.fields import Float32, Int8, Int16, Int64, Timestamp, UInt8, UInt16, UInt32
from gateway.amqp.properties import Properties
from tests.amqp.amqplib import URL, js
from tests.amqp.conftest import Names, aio

# What amqplib's HEADERS (interop.js) must decode to: the wire type by its Python class, and the value.
EXPECTED: dict[str, tuple[type, Any]] = {
    "bool_true": (bool, True),
    "bool_false": (bool, False),
    "int8": (Int8, -7),
    "uint8": (UInt8, 250),
    "int16": (Int16, -30000),
    "uint16": (UInt16, 65000),
    "int32": (int, -2000000000),
    "uint32": (UInt32, 4000000000),
    "int64": (Int64, 1234567890123),
    "float32": (Float32, 1.5),
    "float64": (float, 3.141592653589793),
    "decimal": (Decimal, Decimal("123.45")),
    "timestamp": (Timestamp, 1767225600),
    "string": (str, "住民異動 jgw"),
    "bytes": (bytes, b"\x00\x01\xfe\xff"),
    "array": (list, [1, "two", True, None, 0.25, [300]]),
    "table": (dict, {"nested": {"deeper": 7}, "list": []}),
    "void": (type(None), None),
    "guessed_int": (int, 70000),
    "guessed_double": (float, 0.5),
}
# amqplib guesses small JS numbers as the narrowest signed type
ARRAY_TYPES = [Int8, str, bool, type(None), Float32, list]


@aio(timeout=120)
async def test_amqplib_field_types_decode_exactly_and_round_trip(node: str, broker: ConnectParams,
                                                                 names: Names) -> None:
    """Every amqplib field type decodes to the documented type and value; both republished copies
    (raw and re-encoded) reach amqplib with the property block it sent, byte for byte."""
    import asyncio

    conn = await Connection.open(broker)
    ch = await conn.channel()
    source, raw_copy, reencoded = names.q("from-js"), names.q("raw"), names.q("reencoded")
    for q in (source, raw_copy, reencoded):
        await ch.queue_declare(q)
    _, sent = await asyncio.to_thread(js, node, "publish", URL, source)
    sent_block = bytes.fromhex(sent["block"])

    got = asyncio.get_running_loop().create_future()

    def on_delivery(d: Delivery) -> None:
        got.set_result(d)

    await ch.consume(source, on_delivery)
    delivery: Delivery = await asyncio.wait_for(got, 20)
    props = delivery.properties
    assert props.encode() == sent_block
    assert delivery.body == b"interop body"
    assert (props.message_id, props.content_type, props.content_encoding, props.delivery_mode, props.priority,
            props.correlation_id, props.reply_to, props.timestamp, props.type, props.user_id, props.app_id) == (
        "interop-1", "application/octet-stream", "identity", 2, 3, "corr-1", "reply.queue", 1767225600, "juki.ido",
        "guest", "amqplib-interop")
    headers = dict(props.headers or {})
    assert list(headers) == list(EXPECTED)
    for key, (kind, value) in EXPECTED.items():
        assert type(headers[key]) is kind, key
        assert headers[key] == value, key
    assert [type(v) for v in headers["array"]] == ARRAY_TYPES
    assert type(headers["array"][5][0]) is Int16
    assert type(headers["table"]["nested"]["deeper"]) is UInt16
    assert headers["decimal"].as_tuple().exponent == -2

    ch.publish("", raw_copy, delivery.body, props)
    again = Properties(**props.as_dict())
    assert again.encode() is not sent_block
    assert again.encode() == sent_block
    ch.publish("", reencoded, delivery.body, again)
    ch.ack(delivery.delivery_tag)
    await ch.queue_declare(raw_copy, passive=True)  # a round trip: both publishes are in

    for q in (raw_copy, reencoded):
        rc, back = await asyncio.to_thread(js, node, "readback", URL, q, sent["block"])
        assert back["decodedOk"], back
        assert back["block"] == sent["block"], q
        assert rc == 0
    conn.close()
    await conn.wait_closed()
