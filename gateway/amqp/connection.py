"""A lean asyncio AMQP 0-9-1 client on the sans-I/O codec: one Protocol, channels with awaitable RPCs.

This replaces pika on the daemon's data path. It does only what jgw needs: PLAIN or EXTERNAL login
(TLS through asyncio's SSL transport with the caller's ``ssl.SSLContext``; no certificate logic
here), publisher confirms, mandatory returns, manual-ack consumers with broker-side cancel
notification, the declarations of ``gateway.topology``, heartbeats, ``connection.blocked``.

How it works. ``data_received`` feeds the codec's ``Parser`` and dispatches its events in order,
synchronously: a delivery reaches ``on_delivery`` in the same loop turn its last byte arrived.
Everything written (publishes, acks, RPCs) is appended to one buffer, and one ``transport.write``
per loop turn sends it (``call_soon`` flush), so a burst of acks and publishes costs one syscall.
RPCs on a channel are answered in order; each waits on a future in a FIFO and fails with
``ChannelClosedError`` when the channel or the connection closes first. A consumer is registered
when its consume-ok is dispatched, before any delivery for it can be.

Failure means restart (Shovel): nothing here reconnects or repairs. The connection ends, with a
``CloseReason`` in ``closed``, when
- the broker closes it (answered with close-ok; ``by_broker=True``),
- we close it (``close()``: close, then close-ok or a 5 s grace),
- the peer sends bytes the codec refuses (we send connection.close with the codec's 501/502/503/505
  code and drop the transport; ``by_broker=False``),
- two heartbeat intervals pass with nothing received (code 0, "missed heartbeats"),
- the transport is lost (code 0, "connection lost: ..."),
- a callback (``on_delivery``, ``on_confirm``, ``on_return``, ``on_cancel``, ``on_blocked``) raises:
  the error is logged and the connection closed with 541 INTERNAL_ERROR, so unacked deliveries go
  back to their queue rather than wait on state that may be inconsistent.
No exception escapes into the event loop.

Flow control: ``writable`` is False while the transport asks us to pause (its buffer is over the
high-water mark); ``await wait_writable()`` returns when it drains or the connection closes.
``blocked`` holds the broker's reason between connection.blocked and connection.unblocked; the
connection does not stop publishing by itself (the caller decides; see ``on_blocked``).

Security: talks to one broker over TCP or TLS and reads hostile bytes from it through the codec's
limits (frame_max as negotiated, max_body_size, table depth). Trusts the broker only as far as
the protocol says; credentials are sent only inside connection.start-ok and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import platform
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.amqp import methods as m
from gateway.amqp.codec import DEFAULT_MAX_BODY, FRAME_MIN_SIZE, PROTOCOL_HEADER, FrameWriter, Parser
from gateway.amqp.errors import (
    CHANNEL_ERROR,
    COMMAND_INVALID,
    INTERNAL_ERROR,
    REPLY_SUCCESS,
    ChannelClosedError,
    ConnectError,
    ConnectionClosedError,
    ProtocolError,
    RemoteProtocolError,
)
from gateway.amqp.fields import FieldTable
from gateway.amqp.methods import BasicAck, BasicDeliver, BasicNack, BasicReturn, Heartbeat, Method
from gateway.amqp.properties import Properties

__all__ = [
    "Channel",
    "ChannelClosedError",
    "CloseReason",
    "ConnectError",
    "ConnectParams",
    "Connection",
    "ConnectionClosedError",
    "Delivery",
    "GetResult",
    "Returned",
]

log = logging.getLogger("jgw.amqp.connection")

#: What a consumer receives: consumer_tag, delivery_tag, redelivered, exchange, routing_key,
#: properties, body (and channel). The parser's event is handed over as it is: no copy.
Delivery = BasicDeliver
#: What ``on_return`` receives: reply_code, reply_text, exchange, routing_key, properties, body.
Returned = BasicReturn
#: What ``Channel.get`` returns for a message (delivery_tag, redelivered, exchange, routing_key,
#: message_count, properties, body).
GetResult = m.BasicGetOk

CLOSE_GRACE = 5.0


@dataclass
class ConnectParams:
    host: str
    port: int
    vhost: str = "/"
    username: str = "guest"
    password: str = "guest"
    external: bool = False
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    #: seconds; negotiated as RabbitMQ says: the smaller of ours and the broker's, unless one is 0
    heartbeat: int = 60
    #: for TCP, TLS and the AMQP handshake together
    connect_timeout: float = 10.0
    connection_name: str = "jgw"
    frame_max: int = 131072
    channel_max: int = 2047
    locale: str = "en_US"
    #: the largest message body accepted from the broker (RabbitMQ 3.10's max_message_size)
    max_body_size: int = DEFAULT_MAX_BODY

    def __repr__(self) -> str:  # never the password
        return (f"ConnectParams(host={self.host!r}, port={self.port}, vhost={self.vhost!r}, "
                f"username={self.username!r}, external={self.external}, tls={self.ssl_context is not None})")


@dataclass(frozen=True)
class CloseReason:
    """Why a channel or connection closed: the AMQP reply (0 when there was none) and who said it."""

    code: int
    text: str
    by_broker: bool


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def _negotiate(ours: int, theirs: int) -> int:
    """RabbitMQ's rule for tune values: the smaller one, unless one side says 0 (no limit)."""
    if ours and theirs:
        return min(ours, theirs)
    return ours or theirs


def _silence(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class Connection(asyncio.Protocol):
    """One AMQP connection. Build it with ``await Connection.open(params)``."""

    def __init__(self, params: ConnectParams, loop: asyncio.AbstractEventLoop) -> None:
        self.params = params
        self._loop = loop
        self._parser = Parser(frame_max=max(params.frame_max, FRAME_MIN_SIZE), max_body_size=params.max_body_size)
        self._writer = FrameWriter(max(params.frame_max, FRAME_MIN_SIZE))
        self._transport: asyncio.Transport | None = None
        self._state = _State.HANDSHAKE
        self._flush_scheduled = False
        self._channels: dict[int, Channel] = {}
        self._next_channel = 1
        self._close_reason: CloseReason | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._opened: asyncio.Future[None] = loop.create_future()
        self._opened.add_done_callback(_silence)
        self._handshake_step = "protocol header"
        self._writable = asyncio.Event()
        self._writable.set()
        self._hb_timer: asyncio.TimerHandle | None = None
        self._rx = 0
        self._tx = 0
        self._rx_mark = 0
        self._tx_mark = 0
        self._missed = 0
        #: resolves (never fails) when the connection is closed, with why
        self.closed: asyncio.Future[CloseReason] = loop.create_future()
        #: the broker's reason while it blocks publishing (connection.blocked), else None
        self.blocked: str | None = None
        #: called with the reason on connection.blocked and with None on connection.unblocked
        self.on_blocked: Callable[[str | None], None] | None = None
        self.server_properties: dict[str | bytes, Any] = {}
        self.channel_max = params.channel_max
        self.frame_max = params.frame_max
        self.heartbeat = params.heartbeat

    def __repr__(self) -> str:
        return (f"Connection({self.params.host}:{self.params.port}, {self._state.value}, "
                f"channels={len(self._channels)}, blocked={self.blocked is not None})")

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    async def open(cls, params: ConnectParams) -> Connection:
        """Connect, log in and open the vhost; raise ConnectError (with ``cause``) on any failure."""
        loop = asyncio.get_running_loop()
        conn = cls(params, loop)
        where = f"{params.host}:{params.port}"
        tls = params.ssl_context is not None
        try:
            async with asyncio.timeout(params.connect_timeout):
                await loop.create_connection(
                    lambda: conn, params.host, params.port, ssl=params.ssl_context,
                    server_hostname=params.server_hostname if tls else None,
                    ssl_handshake_timeout=params.connect_timeout if tls else None)
                await asyncio.shield(conn._opened)
        except TimeoutError as exc:
            conn._abort()
            raise ConnectError(f"{where}: timed out after {params.connect_timeout:g} s "
                               f"(during {conn._handshake_step})", exc) from exc
        except ConnectError:
            conn._abort()
            raise
        except ssl.SSLError as exc:
            conn._abort()
            raise ConnectError(f"{where}: TLS handshake failed: {exc.reason or exc}", exc) from exc
        except OSError as exc:
            conn._abort()
            raise ConnectError(f"{where}: cannot connect: {exc.strerror or exc}", exc) from exc
        except BaseException:
            conn._abort()
            raise
        return conn

    def _client_properties(self) -> FieldTable:
        return {
            "product": "jgw",
            "platform": f"Python {platform.python_version()}",
            "connection_name": self.params.connection_name,
            "capabilities": {
                "authentication_failure_close": True,
                "basic.nack": True,
                "connection.blocked": True,
                "consumer_cancel_notify": True,
                "exchange_exchange_bindings": True,
                "per_consumer_qos": True,
                "publisher_confirms": True,
            },
        }

    def _on_start(self, ev: m.ConnectionStart) -> None:
        p = self.params
        if (ev.version_major, ev.version_minor) != (0, 9):
            raise ConnectError(f"broker speaks AMQP {ev.version_major}-{ev.version_minor}, not 0-9-1", None)
        self.server_properties = dict(ev.server_properties)
        offered = ev.mechanisms.split()
        mechanism = b"EXTERNAL" if p.external else b"PLAIN"
        if mechanism not in offered:
            raise ConnectError(f"broker does not offer {mechanism.decode()} login (it offers "
                               f"{b' '.join(offered).decode(errors='replace')})", None)
        response = b"" if p.external else b"\0" + p.username.encode() + b"\0" + p.password.encode()
        self._handshake_step = "login"
        self._write_method(m.ConnectionStartOk(self._client_properties(), mechanism.decode(), response, p.locale))

    def _on_tune(self, ev: m.ConnectionTune) -> None:
        p = self.params
        self.channel_max = _negotiate(p.channel_max, ev.channel_max) or 65535
        self.frame_max = max(_negotiate(p.frame_max, ev.frame_max) or p.frame_max, FRAME_MIN_SIZE)
        self.heartbeat = _negotiate(p.heartbeat, ev.heartbeat)
        self._write_method(m.ConnectionTuneOk(self.channel_max, self.frame_max, self.heartbeat))
        self._parser.frame_max = self.frame_max
        self._writer.frame_max = self.frame_max
        self._handshake_step = "opening the vhost"
        self._write_method(m.ConnectionOpen(p.vhost))
        if self.heartbeat:
            self._hb_timer = self._loop.call_later(self.heartbeat / 2, self._heartbeat_tick)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._handshake_step = "connection.start"
        transport.write(PROTOCOL_HEADER)

    def data_received(self, data: bytes) -> None:
        if self._state is _State.CLOSED:
            return
        self._rx += 1
        try:
            events = self._parser.feed(data)
        except RemoteProtocolError as exc:
            self._protocol_failure(exc)
            return
        channels = self._channels
        for ev in events:
            try:
                number = ev.channel
                if number == 0:
                    self._on_channel0(ev)
                elif self._state is _State.OPEN:  # after connection.close, only close/close-ok count
                    ch = channels.get(number)
                    if ch is None:
                        raise RemoteProtocolError(f"{_name(ev)} on channel {number}, which is not open",
                                                  CHANNEL_ERROR)
                    ch._handle(ev)
            except ProtocolError as exc:
                self._protocol_failure(exc)
                return
            except ConnectError as exc:
                self._handshake_failed(exc)
                return
            except Exception as exc:
                self._internal_failure(exc)
                return
            if self._closed_now():
                return

    def _closed_now(self) -> bool:
        return self._state is _State.CLOSED

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost says the rest

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state is not _State.CLOSED:
            if self._close_reason is None:
                what = f"{type(exc).__name__}: {exc}" if exc is not None else "closed by the peer"
                self._close_reason = CloseReason(0, f"connection lost: {what}", False)
            if not self._opened.done():
                cause: BaseException | None = exc
                step = self._handshake_step
                if cause is None and step == "login":
                    text = "the broker closed the connection during login (refused credentials?)"
                elif isinstance(cause, ssl.SSLError):
                    text = f"TLS failed during {step}: {cause.reason or cause}"
                else:
                    text = f"connection lost during {step}" + (f": {cause}" if cause else "")
                self._opened.set_exception(ConnectError(f"{self.params.host}:{self.params.port}: {text}",
                                                        cause or ConnectionClosedError(0, text)))
            self._finish()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- channel 0 -------------------------------------------------------------------------------

    def _on_channel0(self, ev: Any) -> None:
        t = type(ev)
        if t is Heartbeat:
            return
        state = self._state
        if state is _State.CLOSING:
            if t is m.ConnectionCloseOk:
                self._close_transport()
            elif t is m.ConnectionClose:
                self._write_method(m.ConnectionCloseOk())
                self._flush()
                self._close_transport()
            return  # everything else is discarded after we sent connection.close
        if t is m.ConnectionClose:
            reason = CloseReason(ev.reply_code, ev.reply_text, True)
            self._close_reason = reason
            self._write_method(m.ConnectionCloseOk())
            self._flush()
            if not self._opened.done():
                self._opened.set_exception(ConnectError(
                    f"{self.params.host}:{self.params.port}: broker refused the connection: "
                    f"{ev.reply_code} {ev.reply_text}", ConnectionClosedError(ev.reply_code, ev.reply_text)))
            self._close_transport()
            return
        if t is m.ConnectionBlocked:
            self.blocked = ev.reason or "blocked"
            if self.on_blocked is not None:
                self.on_blocked(self.blocked)
            return
        if t is m.ConnectionUnblocked:
            self.blocked = None
            if self.on_blocked is not None:
                self.on_blocked(None)
            return
        if state is _State.HANDSHAKE:
            if t is m.ConnectionStart and self._handshake_step == "connection.start":
                self._on_start(ev)
                return
            if t is m.ConnectionTune and self._handshake_step == "login":
                self._on_tune(ev)
                return
            if t is m.ConnectionOpenOk and self._handshake_step == "opening the vhost":
                self._state = _State.OPEN
                self._opened.set_result(None)
                return
            if t is m.ConnectionSecure:
                raise ConnectError("broker sent connection.secure: no challenge-response mechanism is supported",
                                   None)
        raise RemoteProtocolError(f"unexpected {_name(ev)} on channel 0 ({state.value})", COMMAND_INVALID)

    # -- writing ---------------------------------------------------------------------------------

    def _write_method(self, method: Method) -> None:
        self._writer.append_method(method)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        buf = self._writer.buffer
        if not buf:
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            buf.clear()
            return
        self._writer.buffer = bytearray()  # the transport may keep a reference to the old one
        transport.write(buf)
        self._tx += 1

    @property
    def writable(self) -> bool:
        """False while the transport's write buffer is over its high-water mark."""
        return self._writable.is_set()

    async def wait_writable(self) -> None:
        """Return when the transport accepts more (or the connection is closed)."""
        await self._writable.wait()

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN

    # -- heartbeats ------------------------------------------------------------------------------

    def _heartbeat_tick(self) -> None:
        self._hb_timer = None
        if self._state is _State.CLOSED:
            return
        if self._rx == self._rx_mark:
            self._missed += 1
            if self._missed >= 2:
                log.warning("broker missed heartbeats", extra={"host": self.params.host, "heartbeat": self.heartbeat})
                self._close_reason = CloseReason(0, "missed heartbeats", False)
                self._abort()
                return
        else:
            self._missed = 0
        self._rx_mark = self._rx
        if self._tx == self._tx_mark and self._transport is not None and not self._transport.is_closing():
            self._writer.heartbeat()
            self._flush()
        self._tx_mark = self._tx
        self._hb_timer = self._loop.call_later(self.heartbeat / 2, self._heartbeat_tick)

    # -- channels --------------------------------------------------------------------------------

    async def channel(self) -> Channel:
        """Open a new channel: the next free number after the last one given out (numbers rotate, so a
        closed channel's number is not reused at once)."""
        if self._state is not _State.OPEN:
            raise self._closed_error()
        number = self._allocate()
        ch = Channel(self, number)
        self._channels[number] = ch
        def hook(_ok: Any) -> None:
            if ch._state is _State.HANDSHAKE:
                ch._state = _State.OPEN

        try:
            await ch._rpc(m.ChannelOpen(channel=number), m.ChannelOpenOk, hook, opening=True)
        except asyncio.CancelledError:
            ch.close()
            raise
        return ch

    def _allocate(self) -> int:
        limit = self.channel_max
        if len(self._channels) >= limit:
            raise ChannelClosedError(CHANNEL_ERROR, f"all {limit} channels are in use")
        n = self._next_channel
        while n in self._channels or n > limit:
            n = 1 if n >= limit else n + 1
        self._next_channel = 1 if n >= limit else n + 1
        return n

    def _closed_error(self) -> ConnectionClosedError:
        r = self._close_reason
        if r is None:
            return ConnectionClosedError(0, f"connection is {self._state.value}")
        return ConnectionClosedError(r.code, r.text)

    # -- closing ---------------------------------------------------------------------------------

    def close(self, code: int = REPLY_SUCCESS, text: str = "normal shutdown") -> None:
        """Start closing: connection.close, then wait (5 s at most) for close-ok. See ``closed``."""
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        self._close_reason = CloseReason(code, text, False)
        if self._state is _State.HANDSHAKE:
            self._abort()
            return
        self._state = _State.CLOSING
        for ch in list(self._channels.values()):
            ch._fail_rpcs(ConnectionClosedError(code, text))
        self._write_method(m.ConnectionClose(code, text, 0, 0))
        self._flush()
        self._close_timer = self._loop.call_later(CLOSE_GRACE, self._abort)

    async def wait_closed(self) -> CloseReason:
        return await asyncio.shield(self.closed)

    def _close_transport(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
            if self._close_timer is None:
                self._close_timer = self._loop.call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows
        elif self._state is not _State.CLOSED:
            self._finish()

    def _protocol_failure(self, exc: ProtocolError) -> None:
        """The broker sent garbage (or a method that makes no sense now): say so, then hang up."""
        if self._state is _State.CLOSED:
            return
        log.error("AMQP protocol error from the broker", extra={"host": self.params.host, "code": exc.reply_code,
                                                                "error": exc.message})
        text = exc.message[:200]
        self._close_reason = CloseReason(exc.reply_code, text, False)
        if not self._opened.done():
            self._opened.set_exception(ConnectError(f"{self.params.host}:{self.params.port}: protocol error "
                                                    f"during {self._handshake_step}: {text}", exc))
        if self._state in (_State.OPEN, _State.HANDSHAKE):
            self._writer.buffer.clear()
            with contextlib.suppress(ProtocolError):
                self._writer.append_method(m.ConnectionClose(exc.reply_code, text, 0, 0))
            self._flush()
        self._state = _State.CLOSING
        self._close_transport()

    def _handshake_failed(self, exc: ConnectError) -> None:
        self._close_reason = CloseReason(0, str(exc), False)
        if not self._opened.done():
            self._opened.set_exception(exc)
        self._abort()

    def _internal_failure(self, exc: Exception) -> None:
        """A callback (or this module) raised while handling an event: restart, don't repair."""
        log.error("AMQP event handler failed; closing the connection", exc_info=exc,
                  extra={"host": self.params.host, "error": f"{type(exc).__name__}: {exc}"})
        if self._state is _State.OPEN:
            self.close(INTERNAL_ERROR, f"INTERNAL_ERROR - client callback raised {type(exc).__name__}")
        else:
            self._close_reason = self._close_reason or CloseReason(INTERNAL_ERROR, f"{type(exc).__name__}", False)
            self._abort()

    def _finish(self) -> None:
        """The transport is gone: close every channel, stop the timers, resolve ``closed``."""
        self._state = _State.CLOSED
        reason = self._close_reason or CloseReason(0, "connection lost", False)
        for timer in (self._hb_timer, self._close_timer):
            if timer is not None:
                timer.cancel()
        self._hb_timer = self._close_timer = None
        self._transport = None
        channels, self._channels = self._channels, {}
        for ch in channels.values():
            ch._finish(reason, connection=True)
        if not self.closed.done():
            self.closed.set_result(reason)


def _name(ev: Any) -> str:
    return ev.name if isinstance(ev, Method) else type(ev).__name__


# replies a channel waits for, by the request's class
_REPLIES: dict[type[Method], tuple[type[Method], ...]] = {
    m.ChannelOpen: (m.ChannelOpenOk,),
    m.ExchangeDeclare: (m.ExchangeDeclareOk,),
    m.ExchangeDelete: (m.ExchangeDeleteOk,),
    m.QueueDeclare: (m.QueueDeclareOk,),
    m.QueueBind: (m.QueueBindOk,),
    m.QueueUnbind: (m.QueueUnbindOk,),
    m.QueuePurge: (m.QueuePurgeOk,),
    m.QueueDelete: (m.QueueDeleteOk,),
    m.BasicQos: (m.BasicQosOk,),
    m.BasicConsume: (m.BasicConsumeOk,),
    m.BasicCancel: (m.BasicCancelOk,),
    m.BasicGet: (m.BasicGetOk, m.BasicGetEmpty),
    m.ConfirmSelect: (m.ConfirmSelectOk,),
}
_REPLY_TYPES = frozenset(t for ts in _REPLIES.values() for t in ts)


class _Rpc:
    __slots__ = ("expect", "future", "hook")

    def __init__(self, expect: tuple[type[Method], ...], future: asyncio.Future[Any],
                 hook: Callable[[Any], None] | None) -> None:
        self.expect = expect
        self.future = future
        self.hook = hook


class Channel:
    """One channel. RPC methods are coroutines that return the broker's answer; ``publish``, ``ack``,
    ``nack`` and ``reject`` only buffer frames (sent at the end of the loop turn)."""

    def __init__(self, conn: Connection, number: int) -> None:
        self.number = number
        self._conn = conn
        self._writer = conn._writer
        self._state = _State.HANDSHAKE
        self._rpcs: deque[_Rpc] = deque()
        self._consumers: dict[str, Callable[[Delivery], None]] = {}
        self._confirm = False
        self._seq = 0
        self._close_text = ""
        #: resolves (never fails) when the channel is closed, with why
        self.closed: asyncio.Future[CloseReason] = conn._loop.create_future()
        #: (delivery tag = publish seq, multiple, ack) for each basic.ack / basic.nack in confirm mode
        self.on_confirm: Callable[[int, bool, bool], None] | None = None
        #: a mandatory publish came back unroutable (it is still confirmed afterwards)
        self.on_return: Callable[[Returned], None] | None = None
        #: the broker cancelled one of our consumers (queue deleted, quorum leader moved, ...)
        self.on_cancel: Callable[[str], None] | None = None
        #: False after the broker sent channel.flow(active=False), until it sends active=True
        self.flow_active = True

    def __repr__(self) -> str:
        return (f"Channel({self.number}, {self._state.value}, confirm={self._confirm}, "
                f"consumers={len(self._consumers)}, rpcs={len(self._rpcs)})")

    @property
    def is_open(self) -> bool:
        return self._state is _State.OPEN and self._conn._state is _State.OPEN

    @property
    def next_publish_seq(self) -> int:
        return self._seq + 1

    @property
    def connection(self) -> Connection:
        return self._conn

    # -- requests --------------------------------------------------------------------------------

    def _error(self) -> ChannelClosedError:
        if self._conn._state is not _State.OPEN:
            return self._conn._closed_error()
        if self.closed.done():
            r = self.closed.result()
            return ChannelClosedError(r.code, r.text)
        return ChannelClosedError(0, f"channel {self.number} is {self._state.value}")

    async def _rpc(self, method: Method, expect: type[Method] | tuple[type[Method], ...],
                   hook: Callable[[Any], None] | None = None, *, opening: bool = False) -> Any:
        ok = self._state is _State.HANDSHAKE if opening else self._state is _State.OPEN
        if not ok or self._conn._state is not _State.OPEN:
            raise self._error()
        fut: asyncio.Future[Any] = self._conn._loop.create_future()
        fut.add_done_callback(_silence)
        self._rpcs.append(_Rpc(expect if isinstance(expect, tuple) else (expect,), fut, hook))
        self._conn._write_method(method)
        return await fut

    async def qos(self, prefetch_count: int) -> None:
        await self._rpc(m.BasicQos(0, prefetch_count, False, channel=self.number), m.BasicQosOk)

    async def confirm_select(self) -> None:
        def hook(_ok: Any) -> None:
            self._confirm = True
        await self._rpc(m.ConfirmSelect(False, channel=self.number), m.ConfirmSelectOk, hook)

    async def exchange_declare(self, name: str, type: str = "direct", *, durable: bool = True,
                               passive: bool = False, auto_delete: bool = False, internal: bool = False,
                               arguments: Mapping[str, Any] | None = None) -> None:
        await self._rpc(m.ExchangeDeclare(name, type, passive, durable, auto_delete, internal, False,
                                          dict(arguments or {}), channel=self.number), m.ExchangeDeclareOk)

    async def exchange_delete(self, name: str, *, if_unused: bool = False) -> None:
        await self._rpc(m.ExchangeDelete(name, if_unused, False, channel=self.number), m.ExchangeDeleteOk)

    async def queue_declare(self, name: str, *, durable: bool = True, passive: bool = False, exclusive: bool = False,
                            auto_delete: bool = False, arguments: Mapping[str, Any] | None = None
                            ) -> tuple[str, int, int]:
        """Declare (or with ``passive`` check) a queue: (name, message count, consumer count)."""
        ok: m.QueueDeclareOk = await self._rpc(
            m.QueueDeclare(name, passive, durable, exclusive, auto_delete, False, dict(arguments or {}),
                           channel=self.number), m.QueueDeclareOk)
        return ok.queue, ok.message_count, ok.consumer_count

    async def queue_bind(self, queue: str, exchange: str, routing_key: str,
                         arguments: Mapping[str, Any] | None = None) -> None:
        await self._rpc(m.QueueBind(queue, exchange, routing_key, False, dict(arguments or {}), channel=self.number),
                        m.QueueBindOk)

    async def queue_unbind(self, queue: str, exchange: str, routing_key: str,
                           arguments: Mapping[str, Any] | None = None) -> None:
        await self._rpc(m.QueueUnbind(queue, exchange, routing_key, dict(arguments or {}), channel=self.number),
                        m.QueueUnbindOk)

    async def queue_delete(self, queue: str, *, if_unused: bool = False, if_empty: bool = False) -> int:
        """Delete a queue; the number of messages it held."""
        ok: m.QueueDeleteOk = await self._rpc(m.QueueDelete(queue, if_unused, if_empty, False, channel=self.number),
                                              m.QueueDeleteOk)
        return ok.message_count

    async def queue_purge(self, queue: str) -> int:
        ok: m.QueuePurgeOk = await self._rpc(m.QueuePurge(queue, False, channel=self.number), m.QueuePurgeOk)
        return ok.message_count

    async def get(self, queue: str) -> GetResult | None:
        """basic.get with manual ack: one message, or None when the queue is empty."""
        ok = await self._rpc(m.BasicGet(queue, False, channel=self.number), (m.BasicGetOk, m.BasicGetEmpty))
        return ok if isinstance(ok, m.BasicGetOk) else None

    async def consume(self, queue: str, on_delivery: Callable[[Delivery], None], *, consumer_tag: str = "",
                      exclusive: bool = False, arguments: Mapping[str, Any] | None = None) -> str:
        """Start a manual-ack consumer; returns its tag. ``on_delivery`` runs in the loop, synchronously."""
        def hook(ok: m.BasicConsumeOk) -> None:
            self._consumers[ok.consumer_tag] = on_delivery

        ok: m.BasicConsumeOk = await self._rpc(
            m.BasicConsume(queue, consumer_tag, False, False, exclusive, False, dict(arguments or {}),
                           channel=self.number), m.BasicConsumeOk, hook)
        return ok.consumer_tag

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; deliveries that were already on their way still reach it until cancel-ok."""
        def hook(ok: m.BasicCancelOk) -> None:
            self._consumers.pop(ok.consumer_tag, None)

        await self._rpc(m.BasicCancel(consumer_tag, False, channel=self.number), m.BasicCancelOk, hook)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Properties, *,
                mandatory: bool = False) -> int:
        """Buffer a basic.publish; in confirm mode return its sequence number (the delivery tag its
        confirm will carry), else 0. Raises ChannelClosedError if the channel is not open."""
        if self._state is not _State.OPEN or self._conn._state is not _State.OPEN:
            raise self._error()
        self._writer.append_publish(self.number, exchange, routing_key, properties.encode(), body,
                                    mandatory=mandatory)
        self._conn._schedule_flush()
        if self._confirm:
            self._seq += 1
            return self._seq
        return 0

    def ack(self, tag: int, multiple: bool = False) -> None:
        if self._state is not _State.OPEN or self._conn._state is not _State.OPEN:
            raise self._error()
        self._writer.append_ack(self.number, tag, multiple)
        self._conn._schedule_flush()

    def nack(self, tag: int, multiple: bool = False, requeue: bool = True) -> None:
        if self._state is not _State.OPEN or self._conn._state is not _State.OPEN:
            raise self._error()
        self._writer.append_nack(self.number, tag, multiple, requeue)
        self._conn._schedule_flush()

    def reject(self, tag: int, requeue: bool = True) -> None:
        if self._state is not _State.OPEN or self._conn._state is not _State.OPEN:
            raise self._error()
        self._writer.append_reject(self.number, tag, requeue)
        self._conn._schedule_flush()

    def close(self, code: int = REPLY_SUCCESS, text: str = "normal shutdown") -> None:
        """Start closing: channel.close now, ``closed`` resolves on close-ok. Pending RPCs fail at once."""
        if self._state in (_State.CLOSING, _State.CLOSED):
            return
        if self._conn._state is not _State.OPEN:
            return  # the connection's end closes us
        self._state = _State.CLOSING
        self._close_text = text
        self._fail_rpcs(ChannelClosedError(code, text))
        self._conn._write_method(m.ChannelClose(code, text, 0, 0, channel=self.number))

    # -- events ----------------------------------------------------------------------------------

    def _handle(self, ev: Any) -> None:
        t = type(ev)
        if self._state is _State.CLOSING:
            if t is m.ChannelCloseOk:
                self._finish(CloseReason(REPLY_SUCCESS, self._close_text, False))
            elif t is m.ChannelClose:
                self._conn._write_method(m.ChannelCloseOk(channel=self.number))
                self._finish(CloseReason(ev.reply_code, ev.reply_text, True))
            return  # anything else is discarded after we sent channel.close
        if t is BasicDeliver:
            cb = self._consumers.get(ev.consumer_tag)
            if cb is None:
                log.warning("delivery for an unknown consumer; rejected with requeue",
                            extra={"channel": self.number})
                self._writer.append_reject(self.number, ev.delivery_tag, True)
                self._conn._schedule_flush()
            else:
                cb(ev)
        elif t is BasicAck or t is BasicNack:
            if not self._confirm:
                raise RemoteProtocolError(f"{ev.name} on channel {self.number}, which is not in confirm mode",
                                          COMMAND_INVALID)
            if self.on_confirm is not None:
                self.on_confirm(ev.delivery_tag, ev.multiple, t is BasicAck)
        elif t in _REPLY_TYPES:
            if not self._rpcs:
                raise RemoteProtocolError(f"{ev.name} on channel {self.number} answers nothing we asked",
                                          COMMAND_INVALID)
            rpc = self._rpcs.popleft()
            if t not in rpc.expect:
                raise RemoteProtocolError(f"{ev.name} on channel {self.number}, expected "
                                          f"{' or '.join(x.__name__ for x in rpc.expect)}", COMMAND_INVALID)
            if rpc.hook is not None:
                rpc.hook(ev)
            if not rpc.future.done():
                rpc.future.set_result(ev)
        elif t is BasicReturn:
            if self.on_return is not None:
                self.on_return(ev)
        elif t is m.ChannelClose:
            self._conn._write_method(m.ChannelCloseOk(channel=self.number))
            self._finish(CloseReason(ev.reply_code, ev.reply_text, True))
        elif t is m.BasicCancel:
            self._consumers.pop(ev.consumer_tag, None)
            if not ev.nowait:
                self._conn._write_method(m.BasicCancelOk(ev.consumer_tag, channel=self.number))
            if self.on_cancel is not None:
                self.on_cancel(ev.consumer_tag)
        elif t is m.ChannelFlow:
            self.flow_active = ev.active
            self._conn._write_method(m.ChannelFlowOk(ev.active, channel=self.number))
        else:
            raise RemoteProtocolError(f"unexpected {_name(ev)} on channel {self.number}", COMMAND_INVALID)

    def _fail_rpcs(self, error: ChannelClosedError) -> None:
        rpcs, self._rpcs = self._rpcs, deque()
        for rpc in rpcs:
            if not rpc.future.done():
                rpc.future.set_exception(error)

    def _finish(self, reason: CloseReason, connection: bool = False) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if not connection:
            self._conn._channels.pop(self.number, None)
        self._fail_rpcs((ConnectionClosedError if connection else ChannelClosedError)(reason.code, reason.text))
        self._consumers.clear()
        if not self.closed.done():
            self.closed.set_result(reason)
