"""The delivered-ids stream of one route: appended with confirm, followed by every instance.

One message per group commit: its body is the ids, one per line; a marker message (header
``jgw-marker``, no body) lets an instance know it has read everything appended before the marker
(streams keep order: what the follower reads after the marker was appended after it). The follower
reads from the first offset still kept (``x-max-age`` = the route's dedup window) and, after a lost
channel, from the offset after the last one it read.

Security: carries message ids (random or system-assigned, never personal data) and instance names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from gateway.amqp.connection import Delivery
from gateway.amqp.errors import ChannelClosedError
from gateway.amqp.link import AsyncChannel, ChannelClosed, ConfirmChannel, Link
from gateway.amqp.properties import Properties
from gateway.route.book import Confirm

log = logging.getLogger("jgw.cluster")

H_MARKER = "jgw-marker"
H_INSTANCE = "jgw-instance"
FOLLOW_PREFETCH = 500
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # seconds between attempts to open a stream channel again

Done = Callable[[BaseException | None], None]


class StreamError(Exception):
    """An append was not confirmed (nack, unroutable, channel lost, no channel)."""


def _header(props: Properties, name: str) -> Any:
    headers = props.headers or {}
    value = headers.get(name, headers.get(name.encode()))
    return value.decode() if isinstance(value, bytes) else value


class StreamLog:
    """Appends to and follows ``stream`` on the route's source broker."""

    def __init__(self, stream: str, *, instance: str, publish_link: Link, follow_link: Link, window: float) -> None:
        self.stream = stream
        self.instance = instance
        self.publish_link = publish_link
        self.follow_link = follow_link
        self.window = window
        #: ids read from the stream, with when they were appended (pruned after ``window``)
        self.known: OrderedDict[str, float] = OrderedDict()
        self.appended = 0
        self.read = 0
        self._pub: ConfirmChannel[Done] | None = None
        self._next_offset: int | str = "first"
        self._markers: dict[str, asyncio.Future[None]] = {}
        self.following = asyncio.Event()
        self.publishing = asyncio.Event()

    # ------------------------------------------------------------------ appending

    def append(self, ids: list[str], done: Done) -> None:
        """Append ``ids``; ``done(None)`` once the stream confirmed them, ``done(exc)`` if not."""
        self._publish(b"\n".join(i.encode() for i in ids), {}, done)

    def _publish(self, body: bytes, headers: dict[str, Any], done: Done) -> None:
        ch = self._pub
        if ch is None or not ch.is_open:
            asyncio.get_running_loop().call_soon(done, StreamError("no channel to the stream"))
            return
        props = Properties(delivery_mode=2, headers={H_INSTANCE: self.instance, **headers},
                           message_id=secrets.token_hex(8), timestamp=int(time.time()))
        try:
            ch.publish("", self.stream, body, props, done, str(props.message_id))
        except ChannelClosed as exc:
            asyncio.get_running_loop().call_soon(done, StreamError(str(exc)))

    def on_confirm(self, done: Done, result: Confirm) -> None:
        if result is Confirm.ACK:
            self.appended += 1
            done(None)
        else:
            done(StreamError(f"stream append {result.value}"))

    def on_publish_channel_lost(self, dones: list[Done], reason: ChannelClosed) -> None:
        for done in dones:
            done(StreamError(f"stream channel lost: {reason}"))

    async def sync(self, timeout: float) -> None:
        """Return once everything appended before now has been read (raises TimeoutError, StreamError).

        Waits (within ``timeout``) for both stream channels first: right after a start or a lost
        link they are still opening, and giving the deliveries back for that would only repeat."""
        token = secrets.token_hex(8)
        loop = asyncio.get_running_loop()
        seen: asyncio.Future[None] = loop.create_future()
        appended: asyncio.Future[BaseException | None] = loop.create_future()
        self._markers[token] = seen
        try:
            def done(exc: BaseException | None) -> None:
                if not appended.done():
                    appended.set_result(exc)

            async with asyncio.timeout(timeout):
                await self.publishing.wait()
                await self.following.wait()
                self._publish(b"", {H_MARKER: token}, done)
                exc = await appended
                if exc is not None:
                    raise exc
                await seen
        finally:
            self._markers.pop(token, None)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        await asyncio.gather(self._run_publisher(), self._run_follower())

    async def _run_publisher(self) -> None:
        retry = _Retry(self.stream, "append")
        while True:
            await self.publish_link.up_event.wait()
            try:
                self._pub = await ConfirmChannel.open(await self.publish_link.open_channel(), self)
            except ChannelClosed as exc:
                await retry.failed(exc)
                continue
            retry.opened()
            self.publishing.set()
            await asyncio.shield(self._pub.ended)
            self.publishing.clear()
            self._pub = None
            await asyncio.sleep(0.2)

    async def _run_follower(self) -> None:
        retry = _Retry(self.stream, "follow")
        while True:
            await self.follow_link.up_event.wait()
            ch: AsyncChannel | None = None
            try:
                ch = await self.follow_link.open_channel()
                await ch.call(ch.channel.qos(FOLLOW_PREFETCH))
                def on_entry(d: Delivery, follower: AsyncChannel = ch) -> None:
                    self._on_entry(follower, d)

                await ch.call(ch.channel.consume(self.stream, on_entry,
                                                 arguments={"x-stream-offset": self._next_offset}))
            except ChannelClosed as exc:
                if ch is not None:
                    ch.close()
                await retry.failed(exc)
                continue
            retry.opened()
            self.following.set()
            await asyncio.shield(ch.closed)
            self.following.clear()
            await asyncio.sleep(0.2)

    def _on_entry(self, ch: AsyncChannel, d: Delivery) -> None:
        props = d.properties
        offset = _header(props, "x-stream-offset")
        if isinstance(offset, int):
            self._next_offset = offset + 1
        self.read += 1
        marker = _header(props, H_MARKER)
        if marker is not None:
            fut = self._markers.get(str(marker))
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif d.body:
            at = props.timestamp
            now = float(at) if isinstance(at, int) else time.time()
            for line in bytes(d.body).split(b"\n"):
                if line:
                    mid = line.decode("utf-8", "surrogateescape")
                    self.known[mid] = now
                    self.known.move_to_end(mid)
            self._prune()
        with contextlib.suppress(ChannelClosedError):
            ch.channel.ack(d.delivery_tag)

    def _prune(self) -> None:
        horizon = time.time() - self.window
        while self.known:
            _mid, at = next(iter(self.known.items()))
            if at >= horizon:
                break
            self.known.popitem(last=False)


class _Retry:
    """Backoff between attempts to open a stream channel, and a warning only when the error changes
    (a stream that stays unavailable must not write a line a second)."""

    def __init__(self, stream: str, purpose: str) -> None:
        self.stream, self.purpose = stream, purpose
        self.delay = RETRY_FIRST
        self._said = ""

    async def failed(self, exc: ChannelClosed) -> None:
        if str(exc) != self._said:
            self._said = str(exc)
            log.warning("stream channel failed", extra={"stream": self.stream, "purpose": self.purpose,
                                                        "error": self._said, "retry_seconds": self.delay})
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, RETRY_MAX)

    def opened(self) -> None:
        if self._said:
            log.info("stream channel open again", extra={"stream": self.stream, "purpose": self.purpose})
        self.delay, self._said = RETRY_FIRST, ""
