"""Links that stay up, channels you can await, confirm channels: the daemon's AMQP on jgw's own codec.

A ``Link`` is one connection to one broker for one role (``publish`` or ``consume``: RabbitMQ
stops *reading* a blocked connection, so acks on a publishing connection would stall; the two
roles never share one). It reconnects with exponential backoff and jitter, trying the broker's
URLs in turn (failover), and tells its listeners when it goes up, down, blocked or unblocked.
Listeners (route ends) open their own channels on it; when a link fails they restart their
channels rather than repair state: unacknowledged messages are safe in the source queue.

The connection underneath is ``gateway.amqp.connection`` (sans-I/O codec, one write per loop
turn); its errors are translated here, once, into ``ChannelClosed`` / ``UnavailableError``.

Security: talks to the configured brokers only; URLs are redacted in logs and status; the password
comes from the broker's password source and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from gateway.amqp.confirms import ConfirmTracker
from gateway.amqp.connection import Channel, CloseReason, Connection, Returned
from gateway.amqp.errors import ChannelClosedError, ConnectError
from gateway.amqp.properties import Properties
from gateway.amqp.topology import Topology
from gateway.amqp.urls import connect_params
from gateway.config import BrokerConfig
from gateway.errors import JgwError, UnavailableError
from gateway.metrics import Metrics
from gateway.options import redact_url
from gateway.pki.tls import describe_failure
from gateway.route.book import Confirm
from gateway.tasks import spawn

log = logging.getLogger("jgw.amqp")

T = TypeVar("T")


class ChannelClosed(Exception):
    """A channel (or its connection) closed; reply code and text from the broker when it said so."""

    def __init__(self, reply_code: int, reply_text: str) -> None:
        super().__init__(f"{reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text


def _closed(reason: CloseReason | ChannelClosedError) -> ChannelClosed:
    if isinstance(reason, CloseReason):
        return ChannelClosed(reason.code, reason.text)
    return ChannelClosed(reason.code, reason.text)


class AsyncChannel:
    """A channel of a link; ``closed`` resolves (with ``ChannelClosed``) when it closes."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[ChannelClosed] = loop.create_future()
        channel.closed.add_done_callback(self._on_close)

    def _on_close(self, fut: asyncio.Future[CloseReason]) -> None:
        if not self.closed.done():
            self.closed.set_result(_closed(fut.result()) if not fut.cancelled() else ChannelClosed(0, "cancelled"))

    @property
    def is_open(self) -> bool:
        return self.channel.is_open and not self.closed.done()

    async def call(self, coro: Any) -> Any:
        """Await one of the channel's RPCs, translating a close into ``ChannelClosed``."""
        try:
            return await coro
        except ChannelClosedError as exc:
            raise _closed(exc) from exc

    async def declare(self, topology: Topology) -> None:
        """Declare exchanges (or check them, when no type is given) and queues with bindings."""
        ch = self.channel
        for ex in topology.exchanges:
            if ex.type is None:
                await self.call(ch.exchange_declare(ex.name, passive=True))
            else:
                await self.call(ch.exchange_declare(ex.name, ex.type, durable=True))
        for q in topology.queues:
            await self.call(ch.queue_declare(q.name, durable=True, arguments=q.arguments))
            for exchange, key in q.bindings:
                await self.call(ch.queue_bind(q.name, exchange, key))

    async def queue_depth(self, queue: str) -> int:
        _name, count, _consumers = await self.call(self.channel.queue_declare(queue, passive=True))
        return int(count)

    def close(self) -> None:
        if self.channel.is_open:
            self.channel.close()


#: seconds a channel retired after a nack waits for its outstanding confirms before it is closed
RETIRE_GRACE = 5.0


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
        self._retired = False
        #: done when the owner must open another channel: this one closed, or retired after a nack
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ch = achannel.channel
        ch.on_confirm = self._on_ack_nack
        ch.on_return = self._on_return
        achannel.closed.add_done_callback(self._on_closed)

    @classmethod
    async def open(cls, achannel: AsyncChannel, listener: ConfirmListener[T]) -> ConfirmChannel[T]:
        self = cls(achannel, listener)
        await achannel.call(achannel.channel.confirm_select())
        return self

    @property
    def is_open(self) -> bool:
        return self.achannel.is_open and not self._retired

    def __len__(self) -> int:
        return len(self.tracker)

    def publish(self, exchange: str, routing_key: str, body: bytes, properties: Properties, token: T,
                message_id: str) -> None:
        """Raises ChannelClosed before sending if the channel is closing or retired (then no
        sequence is used)."""
        if self._retired:
            raise ChannelClosed(0, "publish channel retired after a nack")
        try:
            self.achannel.channel.publish(exchange, routing_key, body, properties, mandatory=True)
        except ChannelClosedError as exc:
            raise _closed(exc) from exc
        self.tracker.published(token, message_id)

    def _on_return(self, returned: Returned) -> None:
        mid = returned.properties.message_id
        self.tracker.returned(mid if isinstance(mid, str) else (mid or b"").decode("utf-8", "surrogateescape"))

    def _on_ack_nack(self, seq: int, multiple: bool, ack: bool) -> None:
        for token, result in self.tracker.settle(seq, multiple, ack):
            self.listener.on_confirm(token, result)
        if not ack and not self._retired and self.achannel.is_open:
            self._retire()
        elif self._retired and not self.tracker:
            self.achannel.close()

    def _retire(self) -> None:
        """A nacked channel takes no more publishes: on RabbitMQ 3.10 a channel whose first publish
        to a quorum queue meets that queue's leader election has every later publish to it nacked
        for as long as the channel lives, while a new channel is acked at once (measured: 15 s of
        nacks on the old channel, the first publish on a new one acked). The owner opens a new
        channel at once; this one is closed once its outstanding publishes are settled, because
        confirms come out of order (a refused publish is nacked at once, a persistent one before it
        is acked only once written) and closing now would publish those again. What is still
        unsettled after RETIRE_GRACE seconds is handed back as after any channel loss."""
        self._retired = True
        log.warning("publish channel replaced after a nack", extra={"unconfirmed": len(self.tracker)})
        self._end()
        if not self.tracker:
            self.achannel.close()
        else:
            asyncio.get_running_loop().call_later(RETIRE_GRACE, self.achannel.close)

    def _end(self) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def _on_closed(self, fut: asyncio.Future[ChannelClosed]) -> None:
        self._end()
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
        self._current: Connection | None = None
        self._current_url = ""
        self._url_index = 0
        self._tasks: set[asyncio.Task[Any]] = set()  # the supervisor (started again if it ever dies)
        self._stopping = False
        self._blocked_timer: asyncio.TimerHandle | None = None
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
    def conn(self) -> Connection | None:
        return self._current

    def subscribe(self, listener: LinkListener) -> None:
        self.listeners.append(listener)

    def start(self) -> None:
        spawn(self._supervise, f"link {self.name}", self._tasks)

    async def stop(self) -> None:
        self._stopping = True
        current = self._current
        if current is not None and current.is_open:
            current.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(current.closed), 5)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def open_channel(self) -> AsyncChannel:
        current = self._current
        if current is None or not current.is_open:
            raise ChannelClosed(0, f"link {self.name} is down")
        try:
            return AsyncChannel(await current.channel())
        except ChannelClosedError as exc:
            raise ChannelClosed(exc.code, f"link {self.name} closed while opening a channel: {exc.text}") from exc

    async def probe(self, ssl_context_factory: Callable[[], ssl.SSLContext | None]) -> None:
        """Open and close one connection with these TLS parameters: does the broker accept them?
        Raises UnavailableError (with the broker's or the TLS layer's reason) when not."""
        url = self._current_url if self._current is not None else self.broker.urls[0]
        conn = await self._open(url, ssl_context_factory)
        conn.close()
        await conn.wait_closed()

    async def rotate(self) -> bool:
        """Move to a new connection made with the current parameters; the old one is closed after.
        False when not connected (the supervisor's next attempt uses the new parameters anyway).
        Raises UnavailableError if the new one cannot be opened (the old one stays)."""
        old = self._current
        if old is None or self._stopping:
            return False
        new = await self._open(self._current_url, self.ssl_context_factory)
        self._adopt(new, self._current_url)
        log.info("broker link moved to a new connection", extra={"broker": self.broker.name, "role": self.role})
        if old.is_open:
            old.close()
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
            self._adopt(current, url)
            self.first_attempt_done.set()
            while self._current is not None:  # rotate() may swap in a new connection meanwhile
                watched = self._current
                reason = await asyncio.shield(watched.closed)
                if self._current is watched:
                    self._down(watched, reason)
                    break
            if not self._stopping:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _open(self, url: str, ssl_context_factory: Callable[[], ssl.SSLContext | None] | None
                    ) -> Connection:
        ctx: ssl.SSLContext | None = None
        try:
            if self.broker.tls is not None and ssl_context_factory is not None:
                ctx = ssl_context_factory()
            params = connect_params(self.broker, url, ssl_context=ctx,
                                    connection_name=f"jgw {self.node_id} {self.role}")
        except JgwError as exc:
            raise UnavailableError(f"{self.name}: TLS material: {exc}") from exc
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise UnavailableError(f"{self.name}: cannot use {redact_url(url)}: {exc}") from exc
        try:
            conn = await Connection.open(params)
        except ConnectError as exc:
            cause = exc.cause
            if isinstance(cause, ssl.SSLError) or "TLS" in str(exc):
                self.metrics.tls_failures.labels(self.broker.name).inc()
            # on a TLS broker, the runbook's one-line reasons ("the broker refused our client
            # certificate: it does not trust its CA") rather than the connection's text
            text = describe_failure(cause if cause is not None else exc) if self.broker.tls is not None else str(exc)
            raise UnavailableError(f"{self.name}: {redact_url(url)}: {text}") from exc
        conn.on_blocked = lambda reason, conn=conn: self._set_blocked(conn, reason)
        return conn

    def _adopt(self, conn: Connection, url: str) -> None:
        self._current = conn
        self._current_url = url
        self.state.up = True
        self.state.blocked = False
        self.state.url = redact_url(url)
        self.state.last_error = ""
        self.state.since = asyncio.get_running_loop().time()
        self.metrics.broker_up.labels(self.broker.name, self.role).set(1)
        self._blocked_metric(False)
        log.info("broker link up", extra={"broker": self.broker.name, "role": self.role, "url": self.state.url})
        self.up_event.set()

    def _down(self, conn: Connection, reason: CloseReason) -> None:
        if self._current is not conn:
            return
        self._current = None
        self._cancel_blocked_timer()
        self.state.up = False
        self.state.blocked = False
        self.state.last_error = f"{reason.code} {reason.text}" if reason.code else reason.text
        self.up_event.clear()
        self.metrics.broker_up.labels(self.broker.name, self.role).set(0)
        self._blocked_metric(False)
        if not self._stopping:
            log.warning("broker link down", extra={"broker": self.broker.name, "role": self.role,
                                                   "error": self.state.last_error})

    def _blocked_metric(self, blocked: bool) -> None:
        """jgw_broker_blocked is about publishing: only the publish link of a broker sets it."""
        if self.role == "publish":
            self.metrics.broker_blocked.labels(self.broker.name).set(1 if blocked else 0)

    def _cancel_blocked_timer(self) -> None:
        if self._blocked_timer is not None:
            self._blocked_timer.cancel()
            self._blocked_timer = None

    def _set_blocked(self, conn: Connection, reason: str | None) -> None:
        if conn is not self._current:
            return
        blocked = reason is not None
        self.state.blocked = blocked
        self._blocked_metric(blocked)
        self._cancel_blocked_timer()
        if blocked and self.broker.blocked_timeout:
            # blocked for longer than this: start over on a new connection (Shovel does the same)
            self._blocked_timer = asyncio.get_running_loop().call_later(
                self.broker.blocked_timeout, lambda: conn.close(320, "blocked for too long"))
        log.warning("broker blocked publishing" if blocked else "broker unblocked publishing",
                    extra={"broker": self.broker.name, "role": self.role, "reason": reason or ""})
        for listener in list(self.listeners):
            listener.link_blocked(self, blocked)
