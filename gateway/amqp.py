"""AMQP 0-9-1 adapter over pika's AsyncioConnection: links that stay up, channels you can await.

A ``Link`` is one connection to one broker for one role (``publish`` or ``consume``: RabbitMQ
stops *reading* a blocked connection, so acks on a publishing connection would stall; the two
roles never share one). It reconnects with exponential backoff and jitter, trying the broker's
URLs in turn (failover), and tells its listeners when it goes up, down, blocked or unblocked.
Listeners (routes) open their own channels on it; when a link fails they restart their channels
rather than repair state: unacknowledged messages are safe in the source queue.

pika exceptions are translated here, once, into ``ChannelClosed`` / ``UnavailableError``.

Security: talks to the configured brokers only; URLs are redacted in logs and status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed, AMQPConnectorPhaseErrorBase
from pika.adapters.utils.io_services_utils import _AsyncTransportBase as _transport_base
from pika.channel import Channel
from pika.exceptions import AMQPError, ChannelClosedByBroker, ConnectionClosedByBroker

from gateway.config import BrokerConfig, redact_url
from gateway.confirms import Confirm, ConfirmTracker
from gateway.errors import JgwError, UnavailableError
from gateway.metrics import Metrics
from gateway.pki.tls import describe_failure
from gateway.topology import Topology

log = logging.getLogger("jgw.amqp")

COALESCE_BYTES = 256 * 1024


def _coalescing_produce(self: Any) -> None:
    """pika writes every AMQP frame with its own send(2): three syscalls per published message.
    Join what is buffered (up to COALESCE_BYTES) into one send. Same bytes, same order; a partial
    send leaves the joined remainder at the head exactly as pika's own loop does."""
    buffers = self._tx_buffers
    if len(buffers) > 1:
        parts = []
        size = 0
        while buffers and size < COALESCE_BYTES:
            chunk = buffers.popleft()
            parts.append(chunk)
            size += len(chunk)
        buffers.appendleft(b"".join(parts))
    _pika_produce(self)


# pika 1.4.4 (pinned in pyproject.toml): _AsyncTransportBase._produce is the one place both the
# plaintext and the TLS transport hand buffered frames to the socket.
_pika_produce = _transport_base._produce
_transport_base._produce = _coalescing_produce

T = TypeVar("T")


class ChannelClosed(Exception):
    """A channel (or its connection) closed; reply code and text from the broker when it said so."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"{reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


def _closed_from(reason: BaseException | None) -> ChannelClosed:
    if isinstance(reason, ChannelClosedByBroker | ConnectionClosedByBroker):
        return ChannelClosed(reason.reply_code, reason.reply_text)
    if reason is not None and getattr(reason, "args", None) and len(reason.args) >= 2 \
            and isinstance(reason.args[0], int):
        return ChannelClosed(int(reason.args[0]), str(reason.args[1]))
    return ChannelClosed(0, f"{type(reason).__name__}: {reason}" if reason else "closed")


class AsyncChannel:
    """A pika channel whose RPCs can be awaited; they fail with ChannelClosed if it closes first."""

    def __init__(self, channel: Channel, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.loop = loop
        self.closed: asyncio.Future[ChannelClosed] = loop.create_future()
        channel.add_on_close_callback(self._on_close)

    def _on_close(self, _channel: Channel, reason: BaseException) -> None:
        if not self.closed.done():
            self.closed.set_result(_closed_from(reason))

    @property
    def is_open(self) -> bool:
        return bool(self.channel.is_open) and not self.closed.done()

    async def rpc(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        fut: asyncio.Future[Any] = self.loop.create_future()

        def done(frame: Any) -> None:
            if not fut.done():
                fut.set_result(frame)

        if self.closed.done():
            raise self.closed.result()
        try:
            method(*args, callback=done, **kwargs)
        except AMQPError as exc:
            raise _closed_from(exc) from exc
        await asyncio.wait([fut, self.closed], return_when=asyncio.FIRST_COMPLETED)
        if fut.done():
            return fut.result()
        raise self.closed.result()

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges (or check them, when no type is given) and queues with bindings."""
        ch = self.channel
        for ex in topology.exchanges:
            if ex.type is None:
                await self.rpc(ch.exchange_declare, exchange=ex.name, passive=True)
            else:
                await self.rpc(ch.exchange_declare, exchange=ex.name, exchange_type=ex.type, durable=True)
        for q in topology.queues:
            await self.rpc(ch.queue_declare, queue=q.name, durable=True, arguments=q.arguments)
            for exchange, key in q.bindings:
                await self.rpc(ch.queue_bind, queue=q.name, exchange=exchange, routing_key=key)

    async def queue_depth(self, queue: str) -> int:
        frame = await self.rpc(self.channel.queue_declare, queue=queue, passive=True)
        return int(frame.method.message_count)

    def close(self) -> None:
        if self.channel.is_open:
            with contextlib.suppress(AMQPError):
                self.channel.close()


class ConfirmListener(Protocol[T]):
    def on_confirm(self, token: T, result: Confirm) -> None: ...
    def on_publish_channel_lost(self, tokens: list[T], reason: ChannelClosed) -> None: ...


class ConfirmChannel(Generic[T]):
    """A publishing channel in confirm mode; every publish is mandatory and tracked until settled."""

    def __init__(self, achannel: AsyncChannel, listener: ConfirmListener[T]) -> None:
        self.achannel = achannel
        self.listener = listener
        self.tracker: ConfirmTracker[T] = ConfirmTracker()
        self._lost = False
        achannel.closed.add_done_callback(self._on_closed)

    @classmethod
    async def open(cls, achannel: AsyncChannel, listener: ConfirmListener[T]) -> ConfirmChannel[T]:
        self = cls(achannel, listener)
        ch = achannel.channel
        ch.add_on_return_callback(self._on_return)
        fut: asyncio.Future[Any] = achannel.loop.create_future()
        ch.confirm_delivery(self._on_ack_nack, callback=lambda f: resolve(fut, f))
        await asyncio.wait([fut, achannel.closed], return_when=asyncio.FIRST_COMPLETED)
        if not fut.done():
            raise achannel.closed.result()
        return self

    @property
    def is_open(self) -> bool:
        return self.achannel.is_open

    def __len__(self) -> int:
        return len(self.tracker)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: pika.BasicProperties,
                token: T) -> None:
        # basic_publish raises before sending if the channel is closing; only then is no seq used
        self.achannel.channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
        self.tracker.published(token, properties.message_id or "")

    def _on_return(self, _ch: Channel, _method: Any, properties: pika.BasicProperties, _body: bytes) -> None:
        self.tracker.returned(properties.message_id or "")

    def _on_ack_nack(self, frame: Any) -> None:
        method = frame.method
        ack = isinstance(method, pika.spec.Basic.Ack)
        for token, result in self.tracker.settle(method.delivery_tag, bool(method.multiple), ack):
            self.listener.on_confirm(token, result)

    def _on_closed(self, fut: asyncio.Future[ChannelClosed]) -> None:
        if self._lost or fut.cancelled():
            return
        self._lost = True
        tokens = self.tracker.drain()
        self.listener.on_publish_channel_lost(tokens, fut.result())

    def close(self) -> None:
        self.achannel.close()


class LinkListener(Protocol):
    def link_blocked(self, link: Link, blocked: bool) -> None: ...


@dataclass
class LinkState:
    up: bool = False
    blocked: bool = False
    url: str = ""
    last_error: str = ""
    since: float = 0.0


@dataclass(eq=False)
class _Connection:
    """One AMQP connection of a link, with its own close event (a link may briefly hold two)."""

    conn: AsyncioConnection
    url: str
    closed: asyncio.Event
    reason: str = ""


class Link:
    """One supervised connection to a broker for one role.

    ``rotate()`` replaces the connection with one made with fresh parameters (a new TLS identity
    after a certificate rotation): the new one is opened and made current first, then the old one is
    closed; channel owners see their channel close and reopen it on the new connection.
    """

    def __init__(self, broker: BrokerConfig, role: str, node_id: str, metrics: Metrics,
                 ssl_context_factory: Callable[[], ssl.SSLContext | None] | None = None) -> None:
        self.broker = broker
        self.role = role
        self.node_id = node_id
        self.metrics = metrics
        self.ssl_context_factory = ssl_context_factory
        self.listeners: list[LinkListener] = []
        self.state = LinkState()
        self._current: _Connection | None = None
        self._url_index = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set while the connection is open; channel owners wait on it, then watch their channel.
        self.up_event = asyncio.Event()
        self.first_attempt_done = asyncio.Event()
        metrics.broker_up.labels(broker.name, role).set(0)
        if role == "publish":
            metrics.broker_blocked.labels(broker.name).set(0)

    def __repr__(self) -> str:
        return f"Link({self.broker.name}/{self.role}, up={self.state.up}, blocked={self.state.blocked})"

    @property
    def name(self) -> str:
        return f"{self.broker.name}/{self.role}"

    @property
    def conn(self) -> AsyncioConnection | None:
        return self._current.conn if self._current is not None else None

    def subscribe(self, listener: LinkListener) -> None:
        self.listeners.append(listener)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name=f"link {self.name}")

    async def stop(self) -> None:
        self._stopping = True
        current = self._current
        if current is not None and not (current.conn.is_closed or current.conn.is_closing):
            current.conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(current.closed.wait(), 5)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def open_channel(self) -> AsyncChannel:
        current = self._current
        if current is None or not current.conn.is_open:
            raise ChannelClosed(0, f"link {self.name} is down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Channel] = loop.create_future()
        current.conn.channel(on_open_callback=lambda ch: resolve(fut, ch))
        closed = asyncio.ensure_future(current.closed.wait())
        try:
            await asyncio.wait([fut, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if not fut.done():
            raise ChannelClosed(0, f"link {self.name} closed while opening a channel")
        return AsyncChannel(fut.result(), loop)

    async def probe(self, ssl_context_factory: Callable[[], ssl.SSLContext | None]) -> None:
        """Open and close one connection with these TLS parameters: does the broker accept them?
        Raises UnavailableError (with the broker's or the TLS layer's reason) when not."""
        url = self._current.url if self._current is not None else self.broker.urls[0]
        c = await self._open(url, ssl_context_factory)
        c.conn.close()
        await c.closed.wait()

    async def rotate(self) -> bool:
        """Move to a new connection made with the current parameters; the old one is closed after.
        False when not connected (the supervisor's next attempt uses the new parameters anyway).
        Raises UnavailableError if the new one cannot be opened (the old one stays)."""
        old = self._current
        if old is None or self._stopping:
            return False
        new = await self._open(old.url, self.ssl_context_factory)
        self._adopt(new)
        log.info("broker link moved to a new connection", extra={"broker": self.broker.name, "role": self.role})
        if not (old.conn.is_closed or old.conn.is_closing):
            old.conn.close()
        return True

    async def _supervise(self) -> None:
        delay = self.broker.reconnect_min
        attempt = 0
        while not self._stopping:
            url = self.broker.urls[self._url_index % len(self.broker.urls)]
            self._url_index += 1
            if attempt:
                self.metrics.reconnects.labels(self.broker.name, self.role).inc()
            attempt += 1
            try:
                current = await self._open(url, self.ssl_context_factory)
            except UnavailableError as exc:
                self.state.last_error = str(exc)
                self.first_attempt_done.set()
                log.warning("broker connect failed", extra={"broker": self.broker.name, "role": self.role,
                                                            "url": redact_url(url), "error": str(exc)})
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.broker.reconnect_max)
                continue
            delay = self.broker.reconnect_min
            self._adopt(current)
            self.first_attempt_done.set()
            while self._current is not None:  # rotate() may swap in a new connection meanwhile
                await self._current.closed.wait()
                if self._current is not None and self._current.closed.is_set():
                    break
            self._down(self._current or current)
            if not self._stopping:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _params(self, url: str, ssl_context_factory: Callable[[], ssl.SSLContext | None] | None
                ) -> pika.URLParameters:
        params = pika.URLParameters(url)
        params.heartbeat = self.broker.heartbeat
        params.blocked_connection_timeout = self.broker.blocked_timeout
        params.connection_attempts = 1
        params.socket_timeout = self.broker.connect_timeout
        params.stack_timeout = self.broker.connect_timeout + 5
        params.client_properties = {"connection_name": f"jgw {self.node_id} {self.role}"}
        if self.broker.tls is not None and ssl_context_factory is not None:
            ctx = ssl_context_factory()
            if ctx is not None:
                params.ssl_options = pika.SSLOptions(ctx, self.broker.tls.server_hostname or params.host)
                if self.broker.tls.external_auth:
                    params.credentials = pika.credentials.ExternalCredentials()
        return params

    async def _open(self, url: str, ssl_context_factory: Callable[[], ssl.SSLContext | None] | None
                    ) -> _Connection:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[AsyncioConnection] = loop.create_future()
        try:
            params = self._params(url, ssl_context_factory)
        except JgwError as exc:
            raise UnavailableError(f"{self.name}: TLS material: {exc}") from exc
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise UnavailableError(f"{self.name}: cannot use {redact_url(url)}: {exc}") from exc
        record = _Connection(conn=None, url=url, closed=asyncio.Event())

        def on_open(conn: AsyncioConnection) -> None:
            if not opened.done():
                opened.set_result(conn)

        def on_open_error(_conn: AsyncioConnection, err: BaseException | str) -> None:
            # pika wraps what went wrong (an ssl.SSLError on a refused handshake) in text-less
            # workflow and phase errors: look at the real error, to count it and to say it
            while True:
                if isinstance(err, AMQPConnectionWorkflowFailed) and err.exceptions:
                    err = err.exceptions[-1]
                elif isinstance(err, AMQPConnectorPhaseErrorBase):
                    err = err.exception
                else:
                    break
            if isinstance(err, BaseException) and "SSL" in type(err).__name__ + str(err):
                self.metrics.tls_failures.labels(self.broker.name).inc()
            record.closed.set()
            if not opened.done():
                # on a TLS broker, the runbook's one-line reasons ("the broker refused our client
                # certificate: it does not trust its CA") rather than pika's exception text
                if isinstance(err, BaseException) and self.broker.tls is not None:
                    text = describe_failure(err)
                else:
                    text = _describe(err)
                opened.set_exception(UnavailableError(f"{self.name}: {redact_url(url)}: {text}"))

        def on_close(_conn: AsyncioConnection, reason: BaseException) -> None:
            record.reason = _describe(reason)
            record.closed.set()
            if not opened.done():
                opened.set_exception(UnavailableError(f"{self.name}: {redact_url(url)}: {record.reason}"))

        conn = AsyncioConnection(params, on_open_callback=on_open, on_open_error_callback=on_open_error,
                                 on_close_callback=on_close, custom_ioloop=loop)
        record.conn = conn
        try:
            await asyncio.wait_for(opened, self.broker.connect_timeout + 10)
        except TimeoutError as exc:
            with contextlib.suppress(AMQPError):
                conn.close()
            raise UnavailableError(f"{self.name}: {redact_url(url)}: connect timed out") from exc
        conn.add_on_connection_blocked_callback(lambda _c, frame: self._set_blocked(record, True, frame))
        conn.add_on_connection_unblocked_callback(lambda _c, frame: self._set_blocked(record, False, frame))
        return record

    def _adopt(self, record: _Connection) -> None:
        self._current = record
        self.state.up = True
        self.state.blocked = False
        self.state.url = redact_url(record.url)
        self.state.last_error = ""
        self.state.since = asyncio.get_running_loop().time()
        self.metrics.broker_up.labels(self.broker.name, self.role).set(1)
        self._blocked_metric(False)
        log.info("broker link up", extra={"broker": self.broker.name, "role": self.role, "url": self.state.url})
        self.up_event.set()

    def _down(self, record: _Connection) -> None:
        if self._current is not record:
            return
        self._current = None
        self.state.up = False
        self.state.blocked = False
        self.state.last_error = record.reason
        self.up_event.clear()
        self.metrics.broker_up.labels(self.broker.name, self.role).set(0)
        self._blocked_metric(False)
        if not self._stopping:
            log.warning("broker link down", extra={"broker": self.broker.name, "role": self.role,
                                                   "error": record.reason})

    def _blocked_metric(self, blocked: bool) -> None:
        """jgw_broker_blocked is about publishing: only the publish link of a broker sets it."""
        if self.role == "publish":
            self.metrics.broker_blocked.labels(self.broker.name).set(1 if blocked else 0)

    def _set_blocked(self, record: _Connection, blocked: bool, frame: Any) -> None:
        if record is not self._current:
            return
        self.state.blocked = blocked
        self._blocked_metric(blocked)
        reason = getattr(getattr(frame, "method", None), "reason", "") if blocked else ""
        log.warning("broker blocked publishing" if blocked else "broker unblocked publishing",
                    extra={"broker": self.broker.name, "role": self.role, "reason": reason})
        for listener in list(self.listeners):
            listener.link_blocked(self, blocked)


def _describe(err: BaseException | str | None) -> str:
    if err is None:
        return "closed"
    if isinstance(err, str):
        return err
    text = str(err) or type(err).__name__
    if isinstance(err, ChannelClosedByBroker | ConnectionClosedByBroker):
        text = f"{err.reply_code} {err.reply_text}"
    return f"{type(err).__name__}: {text}" if type(err).__name__ not in text else text


def resolve(fut: asyncio.Future[T], value: T) -> None:
    """Set a future's result unless it is already done (pika may call back after a timeout)."""
    if not fut.done():
        fut.set_result(value)


def spawn(coro: Coroutine[Any, Any, Any], name: str, tasks: set[asyncio.Task[Any]]) -> asyncio.Task[Any]:
    """Start a background task that is kept referenced and whose failure is logged, not lost."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            log.error("internal task failed", extra={"task": name, "error": f"{type(exc).__name__}: {exc}"},
                      exc_info=exc)

    task.add_done_callback(done)
    return task
