"""Properties arrive exactly as they were sent, through every kind of route (issue 15 item 9).

A client that is not pika (Node.js amqplib) publishes one message whose headers hold every AMQP
0-9-1 field type it can write (floats, doubles, decimals, timestamps, signed and unsigned integers
of each width, byte arrays, arrays, nested tables, void) into a route's source queue:

* a route without stages forwards the property block **byte for byte** (amqplib reads it back and
  compares the bytes it receives with the bytes it sent);
* a sealed route (two jgw nodes: seal, then open) and a packed one (64 messages an envelope) give the
  sink the same header table, byte for byte, and the properties the envelope carries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.amqp import fields
from gateway.amqp.connection import Connection, ConnectParams
from gateway.amqp.properties import Properties
from gateway.cli import main
from gateway.envelope import inner
from gateway.envelope.sealer import Sealer, SealItem
from gateway.pki.devinit import init_dev
from gateway.pki.material import load_node_material
from tests.amqp.amqplib import URL, js
from tests.lab.harness import Amqp, Names, NodeFactory, purge_set_aside, running, wait_for

CARRIED = ("message_id", "content_type", "content_encoding", "correlation_id", "type", "app_id", "timestamp")


def _route(src: str, dst: str, **stages: Any) -> dict[str, Any]:
    return {"personal_number": "allowed", "source": {"broker": "local", "queue": src},
            "sink": {"broker": "local", "exchange": "", "routing_key": dst}, **stages}


async def _take(queue: str, count: int) -> list[Any]:
    """What a consumer of the sink queue receives (jgw's codec, so nothing is re-typed on the way)."""
    conn = await Connection.open(ConnectParams(host="127.0.0.1", port=5672))
    try:
        ch = await conn.channel()
        got: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        def on_delivery(d: Any) -> None:
            got.append(d)
            ch.ack(d.delivery_tag)
            if len(got) >= count and not done.done():
                done.set_result(None)

        await ch.consume(queue, on_delivery)
        await asyncio.wait_for(done, 60)
        return got
    finally:
        conn.close()
        await conn.wait_closed()


def test_a_route_without_stages_forwards_the_property_block_byte_for_byte(
        node: str, names: Names, node_config: NodeFactory, amqp: Amqp) -> None:
    """The sink's consumer gets the property block amqplib sent, byte for byte. (The sink queue is a
    classic one: RabbitMQ 3.10 re-encodes the headers of a quorum queue's message that is fetched
    with basic.get, adding x-delivery-count, and the test reads with basic.get. jgw itself consumes,
    which the broker delivers as it was published.)"""
    src, dst = names.q("plain-src"), names.q("plain-dst")
    cfg = node_config({names.route("plain"): _route(src, dst)})
    amqp.declare_source(cfg, names.route("plain"))
    amqp.declare_queue(dst, quorum=False)
    _, sent = js(node, "publish", URL, src)
    with running(cfg):
        rc, back = js(node, "readback", URL, dst, sent["block"])
    assert back["block"] == sent["block"] and back["decodedOk"] and rc == 0


@pytest.mark.parametrize("pack", [1, 64], ids=["sealed", "packed"])
def test_sealed_and_packed_routes_keep_every_field_type(node: str, names: Names, node_config: NodeFactory,
                                                        amqp: Amqp, tmp_path: Path, pack: int) -> None:
    pki = init_dev(tmp_path / "pki", ["site-a", "site-b"], dt.datetime.now(dt.UTC))
    src, mid, dst, tap, link = names.q("src"), names.q("sealed"), names.q("dst"), names.q("tap"), names.x("link")
    out = _route(src, mid, seal={"recipients": ["site-b"], "route_name": "x", "pack": pack})
    out["sink"] = {"broker": "local", "exchange": link, "exchange_type": "fanout", "routing_key": ""}
    seal = node_config({names.route("out"): out}, node_id="site-a", certs_dir=str(pki.nodes["site-a"]))
    amqp.declare_exchange(link, "fanout")
    amqp.declare_queue(tap)  # every envelope on the wire, as an auditor's copy
    amqp.bind(tap, link, "")
    open_ = node_config({names.route("in"): _route(mid, dst, open={"senders": ["site-a"], "routes": ["x"]})},
                        node_id="site-b", certs_dir=str(pki.nodes["site-b"]))
    amqp.declare_source(seal, names.route("out"))
    amqp.declare_source(open_, names.route("in"))  # the receiving route's queue, bound to the link
    amqp.bind(mid, link, "")
    amqp.declare_queue(dst)
    # the amqplib message among 99 others, all waiting before jgw starts: one batch, packed together
    amqp.publish(src, [b"before"] * 50)
    _, sent = js(node, "publish", URL, src)
    amqp.publish(src, [b"after"] * 49)
    original = Properties.from_wire(bytes.fromhex(sent["block"]))
    with running(open_), running(seal):
        got = asyncio.run(_take(dst, 100))
    envelopes = amqp.depth(tap)
    (ours,) = [d for d in got if d.properties.message_id == original.message_id]
    props = ours.properties
    assert fields.encode_table(props.headers) == fields.encode_table(original.headers)
    assert [getattr(props, p) for p in CARRIED] == [getattr(original, p) for p in CARRIED]
    assert ours.body == b"interop body"
    assert len({d.properties.message_id for d in got}) == 100
    assert envelopes == 100 if pack == 1 else envelopes is not None and envelopes <= 4


def test_an_opened_message_whose_headers_amqp_cannot_carry_is_quarantined_and_its_neighbour_goes_on(
        names: Names, node_config: NodeFactory, amqp: Amqp, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A peer seals a header value the inner record carries but AMQP cannot (a decimal with more than
    32 bits): the open route quarantines that message as header-invalid; the next one is delivered
    (the route does not stall on a publish that can never succeed)."""
    pki = init_dev(tmp_path / "pki", ["site-a", "site-b"], dt.datetime.now(dt.UTC))
    mid, dst = names.q("sealed"), names.q("dst")
    open_ = node_config({names.route("in"): _route(mid, dst, open={"senders": ["site-a"], "routes": ["x"]})},
                        node_id="site-b", certs_dir=str(pki.nodes["site-b"]))
    amqp.declare_source(open_, names.route("in"))
    amqp.declare_queue(dst)
    keyring = load_node_material(pki.nodes["site-a"], "site-a", dt.datetime.now(dt.UTC)).keyring
    sealer = Sealer(suite="default", route="x", recipients=["site-b"])
    bad, good = f"{names.prefix}-bad", f"{names.prefix}-good"
    envelopes = sealer.seal([SealItem(bad, inner.Contents(body=b"b", headers={"amount": Decimal("1E+40")})),
                             SealItem(good, inner.Contents(body=b"g", headers={"amount": Decimal("12.34")}))],
                            keyring, time.time())
    for message_id, env in zip((bad, good), envelopes, strict=True):
        assert isinstance(env, bytes)
        amqp.publish(mid, [env], ids=[message_id])
    with running(open_):
        got = amqp.drain(dst, expect=1, timeout=30)
        assert [m.message_id for m in got] == [good]
        wait_for(lambda: main(["quarantine", "list", str(open_), "--json"]) == 0
                 and any(r["id"] == bad and r["reason"] == "header-invalid"
                         for r in json.loads(capsys.readouterr().out)), what="the bad one in quarantine")
    purge_set_aside(URL, [bad])
