"""The lean connection against the machine's RabbitMQ (127.0.0.1:5672): the daemon's whole data path.

Confirms (with ``multiple``), mandatory returns, consume/ack/nack/reject, the prefetch window,
declarations with arguments and the 406 that closes a channel, broker-side consumer cancellation,
bodies over frame_max, heartbeats, a broker-forced close, many channels, login failures, output
coalescing and write flow control. Private-node cases (TLS, alarms, kills) are in
test_connection_nodes.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import time
from typing import Any

import pytest

from gateway.amqp.connection import (
    Channel,
    ChannelClosedError,
    CloseReason,
    ConnectError,
    Connection,
    ConnectionClosedError,
    ConnectParams,
    Delivery,
    Returned,
)
from gateway.amqp.fields import Int64
from gateway.amqp.properties import Properties
from tests.amqp.conftest import Names, aio, connection_pid
from tests.lab.rabbitnode import free_port

PERSISTENT = Properties(delivery_mode=2)


async def _open(broker: ConnectParams, **changes: Any) -> Connection:
    return await Connection.open(dataclasses.replace(broker, **changes))


async def _collect(ch: Channel, queue: str, n: int, *, ack: bool = True, timeout: float = 20) -> list[Delivery]:
    got: list[Delivery] = []
    done = asyncio.get_running_loop().create_future()

    def on_delivery(d: Delivery) -> None:
        got.append(d)
        if ack:
            ch.ack(d.delivery_tag)
        if len(got) == n and not done.done():
            done.set_result(None)

    tag = await ch.consume(queue, on_delivery)
    await asyncio.wait_for(done, timeout)
    await ch.cancel(tag)
    return got


@aio()
async def test_publish_with_confirms_settles_every_seq(broker: ConnectParams, names: Names) -> None:
    """2 000 persistent publishes in confirm mode are all acked, some with multiple=True."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("confirms")
    await ch.queue_declare(q)
    await ch.confirm_select()
    acked: set[int] = set()
    saw_multiple = []
    all_done = asyncio.get_running_loop().create_future()
    n = 2000

    def on_confirm(seq: int, multiple: bool, ack: bool) -> None:
        assert ack
        saw_multiple.append(multiple)
        if multiple:
            acked.update(s for s in range(1, seq + 1))
        else:
            acked.add(seq)
        if len(acked) == n and not all_done.done():
            all_done.set_result(None)

    ch.on_confirm = on_confirm
    seqs = [ch.publish("", q, b"x" * 512, PERSISTENT) for _ in range(n)]
    assert seqs == list(range(1, n + 1))
    await asyncio.wait_for(all_done, 30)
    assert any(saw_multiple)
    assert (await ch.queue_declare(q, passive=True))[1] == n
    conn.close()
    assert await conn.wait_closed() == CloseReason(200, "normal shutdown", False)


@aio()
async def test_mandatory_publish_to_an_unbound_exchange_is_returned_then_acked(
        broker: ConnectParams, names: Names) -> None:
    """basic.return (312 NO_ROUTE, with properties and body) comes before the ack of that publish."""
    conn = await _open(broker)
    ch = await conn.channel()
    x = names.x("unbound")
    await ch.exchange_declare(x, "direct", durable=False)
    await ch.confirm_select()
    events: list[Any] = []
    acked = asyncio.get_running_loop().create_future()
    ch.on_return = lambda r: events.append(r)

    def on_confirm(seq: int, multiple: bool, ack: bool) -> None:
        events.append((seq, ack))
        acked.set_result(None)

    ch.on_confirm = on_confirm
    seq = ch.publish(x, "nowhere", b"lost?", Properties(message_id="m-312", headers={"h": 1}), mandatory=True)
    await asyncio.wait_for(acked, 10)
    ret, confirm = events
    assert isinstance(ret, Returned)
    assert (ret.reply_code, ret.reply_text, ret.exchange, ret.routing_key) == (312, "NO_ROUTE", x, "nowhere")
    assert ret.properties.message_id == "m-312" and dict(ret.properties.headers or {}) == {"h": 1}
    assert ret.body == b"lost?"
    assert confirm == (seq, True)
    conn.close()
    await conn.wait_closed()


@aio()
async def test_consume_ack_nack_requeue_and_reject(broker: ConnectParams, names: Names) -> None:
    """ack removes, nack(requeue) redelivers with redelivered=True, reject(requeue=False) drops."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("acks")
    await ch.queue_declare(q)
    for body in (b"ack", b"nack", b"reject"):
        ch.publish("", q, body, Properties(message_id=body.decode()))
    seen: list[tuple[bytes, bool]] = []
    done = asyncio.get_running_loop().create_future()

    def on_delivery(d: Delivery) -> None:
        seen.append((d.body, d.redelivered))
        if d.body == b"ack" or (d.body == b"nack" and d.redelivered):
            ch.ack(d.delivery_tag)
        elif d.body == b"nack":
            ch.nack(d.delivery_tag, requeue=True)
        else:
            ch.reject(d.delivery_tag, requeue=False)
        if len(seen) == 4:
            done.set_result(None)

    await ch.qos(10)
    tag = await ch.consume(q, on_delivery)
    await asyncio.wait_for(done, 10)
    await ch.cancel(tag)
    assert sorted(seen) == [(b"ack", False), (b"nack", False), (b"nack", True), (b"reject", False)]
    await asyncio.sleep(0.2)
    assert (await ch.queue_declare(q, passive=True))[1] == 0
    conn.close()
    await conn.wait_closed()


@aio()
async def test_qos_window_is_respected(broker: ConnectParams, names: Names) -> None:
    """With prefetch 5 and nothing acked, exactly 5 deliveries arrive; acking them (multiple) lets 5 more in."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("qos")
    await ch.queue_declare(q)
    for i in range(20):
        ch.publish("", q, str(i).encode(), PERSISTENT)
    await ch.qos(5)
    got: list[Delivery] = []
    await ch.consume(q, got.append)
    await asyncio.sleep(0.7)
    assert len(got) == 5
    ch.ack(got[-1].delivery_tag, multiple=True)
    await asyncio.sleep(0.7)
    assert len(got) == 10
    assert [d.body for d in got] == [str(i).encode() for i in range(10)]
    conn.close()
    await conn.wait_closed()


@aio()
async def test_quorum_queue_arguments_and_406_closes_the_channel(broker: ConnectParams, names: Names) -> None:
    """A quorum queue with x-delivery-limit declares; re-declaring it differently closes that channel
    with 406 (the RPC raises, ``closed`` says by_broker), and the connection carries on."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("quorum")
    name, messages, consumers = await ch.queue_declare(q, arguments={"x-queue-type": "quorum", "x-delivery-limit": 3})
    assert (name, messages, consumers) == (q, 0, 0)
    with pytest.raises(ChannelClosedError) as info:
        await ch.queue_declare(q, arguments={"x-queue-type": "quorum", "x-delivery-limit": 4})
    assert info.value.code == 406 and "PRECONDITION_FAILED" in info.value.text
    reason = await ch.closed
    assert reason.code == 406 and reason.by_broker and not ch.is_open
    with pytest.raises(ChannelClosedError):
        ch.publish("", q, b"", PERSISTENT)
    ch2 = await conn.channel()
    with pytest.raises(ChannelClosedError) as missing:
        await ch2.queue_declare(names.q("missing"), passive=True)
    assert missing.value.code == 404
    assert (await conn.channel()).is_open
    assert conn.is_open
    conn.close()
    await conn.wait_closed()


@aio()
async def test_delivery_count_header_is_an_int64(broker: ConnectParams, names: Names) -> None:
    """A quorum queue's redelivery carries x-delivery-count, an 'l' (Int64) the codec keeps as such."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("dlimit")
    await ch.queue_declare(q, arguments={"x-queue-type": "quorum", "x-delivery-limit": 5})
    ch.publish("", q, b"poison", PERSISTENT)
    seen: list[Delivery] = []
    done = asyncio.get_running_loop().create_future()

    def on_delivery(d: Delivery) -> None:
        seen.append(d)
        if len(seen) == 1:
            ch.nack(d.delivery_tag, requeue=True)
        else:
            ch.ack(d.delivery_tag)
            done.set_result(None)

    await ch.qos(1)
    await ch.consume(q, on_delivery)
    await asyncio.wait_for(done, 10)
    count = (seen[1].properties.headers or {})["x-delivery-count"]
    assert type(count) is Int64 and count == 1
    conn.close()
    await conn.wait_closed()


@aio()
async def test_consumer_cancelled_by_the_broker_when_its_queue_is_deleted(broker: ConnectParams, names: Names) -> None:
    """Deleting the queue makes the broker send basic.cancel; on_cancel gets the consumer tag."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("cancel")
    await ch.queue_declare(q)
    cancelled = asyncio.get_running_loop().create_future()
    ch.on_cancel = cancelled.set_result
    tag = await ch.consume(q, lambda d: None, consumer_tag="jgw-cancel-me")
    assert tag == "jgw-cancel-me"
    other = await conn.channel()
    await other.queue_delete(q)
    assert await asyncio.wait_for(cancelled, 10) == "jgw-cancel-me"
    assert ch.is_open
    conn.close()
    await conn.wait_closed()


@pytest.mark.parametrize("frame_max", [4096, 131072])
@aio()
async def test_large_bodies_over_frame_max(broker: ConnectParams, names: Names, frame_max: int) -> None:
    """Bodies of 1 MiB and 5 MiB cross the broker in frame_max pieces and come back identical."""
    conn = await _open(broker, frame_max=frame_max)
    assert conn.frame_max == frame_max
    ch = await conn.channel()
    q = names.q("large")
    await ch.queue_declare(q)
    bodies = [bytes(i % 253 for i in range(1 << 20)), b"\xa5" * (5 << 20), b""]
    for b in bodies:
        ch.publish("", q, b, PERSISTENT)
    got = await _collect(ch, q, len(bodies))
    assert [d.body for d in got] == bodies
    conn.close()
    await conn.wait_closed()


@aio(timeout=30)
async def test_short_heartbeat_keeps_an_idle_connection_up(broker: ConnectParams) -> None:
    """With heartbeat 1 s the connection idles for 4 s (8 intervals) and is still usable."""
    conn = await _open(broker, heartbeat=1)
    assert conn.heartbeat == 1
    ch = await conn.channel()
    rx_before = conn._rx
    await asyncio.sleep(4)
    assert not conn.closed.done()
    assert conn._rx - rx_before >= 4  # the broker's heartbeats arrived
    await ch.qos(1)
    conn.close()
    await conn.wait_closed()


@aio()
async def test_broker_forced_close_resolves_closed_and_fails_rpcs(broker: ConnectParams, names: Names) -> None:
    """rabbitmqctl close_connection: connection.close (320) is answered, ``closed`` says by_broker, and
    every channel closes with it."""
    conn = await _open(broker)
    ch = await conn.channel()
    assert conn._transport is not None
    pid = await asyncio.to_thread(connection_pid, conn._transport.get_extra_info("sockname")[1])
    await asyncio.to_thread(subprocess.run, ["rabbitmqctl", "close_connection", pid, "jgw test says goodbye"],
                            check=True, capture_output=True, timeout=60)
    reason = await asyncio.wait_for(conn.closed, 10)
    assert reason == CloseReason(320, "CONNECTION_FORCED - jgw test says goodbye", True)
    assert (await ch.closed).code == 320
    with pytest.raises(ConnectionClosedError) as info:
        await ch.qos(1)
    assert info.value.code == 320
    with pytest.raises(ConnectionClosedError):
        await conn.channel()


@aio()
async def test_many_channels(broker: ConnectParams, names: Names) -> None:
    """300 channels open concurrently, each declares its own queue, and all close cleanly."""
    conn = await _open(broker)
    chans = await asyncio.gather(*(conn.channel() for _ in range(300)))
    assert sorted(c.number for c in chans) == list(range(1, 301))
    queues = [names.q(f"many{i}") for i in range(300)]
    await asyncio.gather(*(c.queue_declare(q, durable=False, auto_delete=False) for c, q in zip(chans, queues,
                                                                                                  strict=True)))
    for c in chans:
        c.close()
    reasons = await asyncio.gather(*(c.closed for c in chans))
    assert {r.code for r in reasons} == {200}
    assert len(conn._channels) == 0
    conn.close()
    await conn.wait_closed()


@aio()
async def test_rpcs_pipeline_in_order(broker: ConnectParams, names: Names) -> None:
    """Several RPCs sent in one loop turn on one channel get their own answers, in order."""
    conn = await _open(broker)
    ch = await conn.channel()
    qs = [names.q(f"pipe{i}") for i in range(5)]
    results = await asyncio.gather(*(ch.queue_declare(q, durable=False) for q in qs))
    assert [r[0] for r in results] == qs
    assert await asyncio.gather(*(ch.queue_purge(q) for q in qs)) == [0] * 5
    conn.close()
    await conn.wait_closed()


@aio()
async def test_get_and_get_empty(broker: ConnectParams, names: Names) -> None:
    """basic.get returns a message (with the rest-of-queue count) and None when the queue is empty."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("get")
    await ch.queue_declare(q)
    ch.publish("", q, b"one", Properties(message_id="1"))
    ch.publish("", q, b"two", Properties(message_id="2"))
    await ch.queue_declare(q, passive=True)  # a round trip: both publishes are in
    first = await ch.get(q)
    assert first is not None and first.body == b"one" and first.message_count == 1
    ch.ack(first.delivery_tag)
    second = await ch.get(q)
    assert second is not None and second.properties.message_id == "2"
    ch.ack(second.delivery_tag)
    assert await ch.get(q) is None
    conn.close()
    await conn.wait_closed()


@aio()
async def test_bad_password_is_a_connect_error_with_the_broker_403(broker: ConnectParams) -> None:
    """Refused credentials raise ConnectError whose cause is the broker's 403 ACCESS_REFUSED."""
    with pytest.raises(ConnectError) as info:
        await _open(broker, password="wrong")
    cause = info.value.cause
    assert isinstance(cause, ConnectionClosedError) and cause.code == 403
    assert "ACCESS_REFUSED" in str(info.value)


@aio()
async def test_unknown_vhost_is_a_connect_error_with_530(broker: ConnectParams) -> None:
    """Opening a vhost that does not exist raises ConnectError with the broker's 530 NOT_ALLOWED."""
    with pytest.raises(ConnectError) as info:
        await _open(broker, vhost="/no-such-vhost-jgw")
    assert isinstance(info.value.cause, ConnectionClosedError) and info.value.cause.code == 530


@aio()
async def test_refused_port_is_a_connect_error_with_connection_refused(broker: ConnectParams) -> None:
    """Nothing listening: ConnectError with the ConnectionRefusedError as cause."""
    with pytest.raises(ConnectError) as info:
        await _open(broker, port=free_port())
    assert isinstance(info.value.cause, ConnectionRefusedError)


@aio()
async def test_frames_of_one_loop_turn_go_out_in_one_write(broker: ConnectParams, names: Names) -> None:
    """100 publishes and acks buffered in one loop turn reach the transport as a single write."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("coalesce")
    await ch.queue_declare(q, durable=False)
    transport = conn._transport
    assert transport is not None
    writes: list[int] = []
    real_write = transport.write

    def counting_write(data: Any) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting_write  # type: ignore[method-assign]
    for _ in range(100):
        ch.publish("", q, b"x" * 100, PERSISTENT)
    assert writes == []
    await asyncio.sleep(0)
    assert len(writes) == 1 and writes[0] > 100 * 100
    transport.write = real_write  # type: ignore[method-assign]
    conn.close()
    await conn.wait_closed()


@aio()
async def test_writable_follows_the_transport(broker: ConnectParams, names: Names) -> None:
    """Over the transport's high-water mark ``writable`` turns False, and wait_writable returns once drained."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("flow")
    await ch.queue_declare(q, durable=False)
    assert conn._transport is not None
    conn._transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    conn._transport.set_write_buffer_limits(high=1024, low=0)
    for _ in range(8):
        ch.publish("", q, b"y" * 1_000_000, PERSISTENT)
    await asyncio.sleep(0)
    assert not conn.writable
    t0 = time.monotonic()
    await asyncio.wait_for(conn.wait_writable(), 10)
    assert conn.writable and time.monotonic() - t0 < 10
    conn.close()
    await conn.wait_closed()


@aio()
async def test_a_raising_callback_closes_the_connection_with_541(broker: ConnectParams, names: Names) -> None:
    """An exception in on_delivery is logged and ends the connection (541), never escaping into the loop;
    the unacked message goes back to its queue."""
    conn = await _open(broker)
    ch = await conn.channel()
    q = names.q("raise")
    await ch.queue_declare(q)
    ch.publish("", q, b"boom", PERSISTENT)

    def on_delivery(d: Delivery) -> None:
        raise RuntimeError("stage bug")

    loop_errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    await ch.consume(q, on_delivery)
    reason = await asyncio.wait_for(conn.closed, 10)
    assert reason.code == 541 and not reason.by_broker and "RuntimeError" in reason.text
    assert loop_errors == []
    conn2 = await _open(broker)
    ch2 = await conn2.channel()
    await asyncio.sleep(0.3)
    assert (await ch2.queue_declare(q, passive=True))[1] == 1
    conn2.close()
    await conn2.wait_closed()


@aio()
async def test_closing_a_channel_fails_its_pending_rpcs(broker: ConnectParams, names: Names) -> None:
    """An RPC still waiting when its channel is closed fails with ChannelClosedError; the close completes."""
    conn = await _open(broker)
    ch = await conn.channel()
    pending = asyncio.ensure_future(ch.queue_declare(names.q("pending"), durable=False))
    await asyncio.sleep(0)
    ch.close()
    with pytest.raises(ChannelClosedError):
        await pending
    assert (await ch.closed) == CloseReason(200, "normal shutdown", False)
    conn.close()
    await conn.wait_closed()
