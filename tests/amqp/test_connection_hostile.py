"""The connection facing a hostile peer: something on the broker's address that speaks the handshake
correctly and then sends garbage, or stops talking.

This is not a broker imitation for behaviour tests (those run against RabbitMQ): it is the attacker
of the codec's threat model, scripted with the codec's own server-side parser and writer. Each case
says what the peer sends after connection.open-ok and what ``closed`` must say.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable

import pytest

from gateway.amqp import methods as m
from gateway.amqp.codec import FrameWriter, Parser
from gateway.amqp.connection import CloseReason, ConnectError, Connection, ConnectionClosedError, ConnectParams
from tests.amqp.conftest import aio

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, list[m.Method]], Awaitable[None]]


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[m.Method],
                     heartbeat: int = 0) -> Parser:
    parser = Parser(expect_protocol_header=True)
    w = FrameWriter()
    w.append_method(m.ConnectionStart(0, 9, {"product": "hostile"}, b"PLAIN", b"en_US"))
    writer.write(bytes(w.buffer))
    w.buffer.clear()
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("client went away")
        for ev in parser.feed(data):
            if isinstance(ev, m.Method):
                seen.append(ev)
            if isinstance(ev, m.ConnectionStartOk):
                w.append_method(m.ConnectionTune(16, 131072, heartbeat))
            elif isinstance(ev, m.ConnectionOpen):
                w.append_method(m.ConnectionOpenOk())
                writer.write(bytes(w.buffer))
                return parser
        writer.write(bytes(w.buffer))
        w.buffer.clear()


async def _serve(script: Script, params_heartbeat: int = 0, tune_heartbeat: int = 0
                 ) -> tuple[Connection, list[m.Method], asyncio.Server]:
    seen: list[m.Method] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            parser = await _handshake(reader, writer, seen, tune_heartbeat)

            async def record() -> None:  # what the client says while the script runs
                while data := await reader.read(65536):
                    seen.extend(e for e in parser.feed(data) if isinstance(e, m.Method))

            recorder = asyncio.ensure_future(record())
            await script(reader, writer, seen)
            await recorder
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    conn = await Connection.open(ConnectParams("127.0.0.1", port, heartbeat=params_heartbeat, connect_timeout=5))
    return conn, seen, server


def _send(raw: bytes) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[m.Method]) -> None:
        await asyncio.sleep(0.05)
        writer.write(raw)
    return script


def _method(method: m.Method) -> bytes:
    w = FrameWriter()
    w.append_method(method)
    return bytes(w.buffer)


GARBAGE: list[tuple[str, bytes, int]] = [
    ("bad frame end", _method(m.ConnectionBlocked("x"))[:-1] + b"\x00", 501),
    ("frame larger than frame_max", b"\x01\x00\x00" + struct.pack(">I", 1 << 30), 501),
    ("unknown method", b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x63\xce", 503),
    ("truncated arguments", b"\x01\x00\x00\x00\x00\x00\x05\x00\x0a\x00\x3c\x05\xce", 502),
    ("content header out of nowhere", b"\x02\x00\x01\x00\x00\x00\x0e\x00\x3c" + b"\x00" * 12 + b"\xce", 505),
    ("a frame for a channel that is not open", _method(m.BasicAck(1, False, channel=9)), 504),
    ("connection.open-ok again", _method(m.ConnectionOpenOk()), 503),
    ("random bytes", bytes(range(256)) * 4, 501),
]


@pytest.mark.parametrize(("name", "raw", "code"), GARBAGE, ids=[g[0] for g in GARBAGE])
@aio(timeout=20)
async def test_garbage_closes_the_connection_with_a_protocol_code(name: str, raw: bytes, code: int) -> None:
    """After garbage, ``closed`` resolves with the codec's reply code (by_broker=False), the peer is told
    with connection.close carrying that code, and nothing escapes into the event loop."""
    errors: list[object] = []
    asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
    conn, seen, server = await _serve(_send(raw))
    reason = await asyncio.wait_for(conn.closed, 10)
    assert reason.code == code and not reason.by_broker
    await asyncio.sleep(0.1)
    closes = [e for e in seen if isinstance(e, m.ConnectionClose)]
    assert closes and closes[-1].reply_code == code
    assert errors == []
    server.close()


@aio(timeout=20)
async def test_pending_rpc_fails_when_the_peer_sends_garbage() -> None:
    """An RPC awaiting its answer fails with ConnectionClosedError carrying the protocol code."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[m.Method]) -> None:
        while not any(isinstance(e, m.ChannelOpen) for e in seen):
            await asyncio.sleep(0.01)
        writer.write(_method(m.ChannelOpenOk(channel=1)))
        await asyncio.sleep(0.2)
        writer.write(b"\x01\x00\x01\x00\x00\x00\x04\x00\x32\x00\x0b\x00")  # queue.declare-ok, bad end

    conn, _, server = await _serve(script)
    task = asyncio.ensure_future(_open_and_declare(conn))
    reason = await asyncio.wait_for(conn.closed, 10)
    assert reason.code == 501
    with pytest.raises(ConnectionClosedError) as info:
        await task
    assert info.value.code == 501
    server.close()


async def _open_and_declare(conn: Connection) -> None:
    ch = await conn.channel()
    await ch.queue_declare("q")


@aio(timeout=20)
async def test_silent_peer_is_dropped_after_two_heartbeat_intervals() -> None:
    """A peer that stops sending anything (heartbeats included) is dropped with code 0 "missed heartbeats"
    after two intervals of heartbeat/2."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seen: list[m.Method]) -> None:
        await asyncio.sleep(30)

    conn, _, server = await _serve(script, params_heartbeat=1, tune_heartbeat=1)
    assert conn.heartbeat == 1
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reason = await asyncio.wait_for(conn.closed, 10)
    assert reason == CloseReason(0, "missed heartbeats", False)
    assert 0.9 <= loop.time() - t0 <= 2.5
    server.close()


@aio(timeout=20)
async def test_peer_that_hangs_up_during_login_is_a_connect_error() -> None:
    """A peer that closes the socket after start-ok (RabbitMQ's way with old clients and bad passwords)
    makes Connection.open raise ConnectError that says it happened during login."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(_method(m.ConnectionStart(0, 9, {}, b"PLAIN", b"en_US")))
        await reader.read(65536)  # protocol header (and maybe start-ok)
        await reader.read(65536)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ConnectError, match="login"):
        await Connection.open(ConnectParams("127.0.0.1", port, connect_timeout=5))
    server.close()


@aio(timeout=20)
async def test_peer_that_never_answers_times_out() -> None:
    """A peer that accepts and says nothing: ConnectError after connect_timeout, cause TimeoutError."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ConnectError) as info:
        await Connection.open(ConnectParams("127.0.0.1", port, connect_timeout=0.5))
    assert isinstance(info.value.cause, TimeoutError)
    assert "connection.start" in str(info.value)
    server.close()


@aio(timeout=20)
async def test_peer_refusing_our_protocol_version() -> None:
    """A peer that answers with its own protocol header refuses 0-9-1: ConnectError naming it."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(8)
        writer.write(b"AMQP\x01\x01\x00\x0a")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    with pytest.raises(ConnectError, match="protocol header"):
        await Connection.open(ConnectParams("127.0.0.1", port, connect_timeout=5))
    server.close()
