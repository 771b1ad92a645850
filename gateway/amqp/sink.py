"""A route's sink as an AMQP exchange: every put is persistent, ``mandatory`` and confirmed.

A put is durable when the broker confirms it (``basic.ack``: on disk, or replicated in every
quorum queue it was routed to). A ``basic.return`` (no queue bound) or a ``basic.nack`` is a
refusal the route book retries. When the channel closes, the puts it had not confirmed go back
to the book, which publishes them again in order.

Security: publishes what the stages made; reads nothing from it.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.amqp import convert
from gateway.amqp.errors import LocalProtocolError
from gateway.amqp.link import ChannelClosed, ConfirmChannel, Link
from gateway.amqp.topology import sink_topology
from gateway.config import RouteConfig
from gateway.route.behaviour import SinkFeed
from gateway.route.book import Confirm, Leg, Refuse

log = logging.getLogger("jgw.amqp")

DOWN = "sink down"
BLOCKED = "sink broker blocked"


class AmqpSink:
    def __init__(self, cfg: RouteConfig, *, link: Link) -> None:
        self.cfg = cfg
        self.link = link
        self._feed: SinkFeed | None = None
        self._ch: ConfirmChannel[Leg] | None = None
        self._failed: list[Leg] = []
        link.subscribe(self)

    def describe(self) -> str:
        s = self.cfg.sink
        return f"{s.broker}:{s.exchange or '(default)'}/{s.routing_key}"

    @property
    def ready(self) -> bool:
        return self._ch is not None

    async def run(self, feed: SinkFeed) -> None:
        self._feed = feed
        backoff = 1.0
        sink = self.cfg.sink
        while True:
            await self.link.up_event.wait()
            try:
                topo = await self.link.open_channel()
                try:
                    await topo.declare(sink_topology(self.cfg))
                finally:
                    topo.close()
                ch: ConfirmChannel[Leg] = await ConfirmChannel.open(await self.link.open_channel(), self)
            except ChannelClosed as exc:
                feed.problem("sink", f"exchange {sink.exchange!r} on {sink.broker}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            feed.problem("sink", None)
            self._ch = ch
            feed.blocked(BLOCKED, self.link.state.blocked)
            feed.ready(True, DOWN)
            await asyncio.shield(ch.ended)
            self._ch = None
            feed.ready(False, DOWN)
            await asyncio.sleep(0.2)

    def put(self, leg: Leg) -> None:
        ch = self._ch
        parent = leg.parents[0] if leg.parents else None
        unchanged = leg.original and parent is not None and leg.message is parent.message
        try:
            props = convert.for_sink(leg.message, leg.wire, unchanged)
            props.encode()  # a property or header value AMQP cannot carry is this message's fault alone
        except LocalProtocolError as exc:
            refusal = Refuse("header-invalid", f"cannot be published: {exc}"[:200])
            asyncio.get_running_loop().call_soon(self._refuse, leg, refusal)
            return
        sink = self.cfg.sink
        try:
            if ch is None or not ch.is_open:
                raise ChannelClosed(0, "sink channel closed")
            ch.publish(sink.exchange, sink.routing_key, leg.message.body, props, leg, leg.message_id)
        except ChannelClosed as exc:  # the channel is closing: hand the leg back
            if not self._failed:
                log.warning("sink publish failed", extra={"route": self.cfg.name, "error": str(exc)})
                asyncio.get_running_loop().call_soon(self._give_back)
            self._failed.append(leg)

    def _refuse(self, leg: Leg, refusal: Refuse) -> None:
        if self._feed is not None:
            self._feed.confirmed(leg, refusal)

    def _give_back(self) -> None:
        legs, self._failed = self._failed, []
        if self._feed is not None:
            self._feed.unconfirmed(legs)

    async def close(self) -> None:
        if self._ch is not None:
            self._ch.close()

    # ConfirmChannel listener
    def on_confirm(self, leg: Leg, result: Confirm) -> None:
        if self._feed is not None:
            self._feed.confirmed(leg, result)

    def on_publish_channel_lost(self, legs: list[Leg], reason: ChannelClosed) -> None:
        if self._feed is not None:
            self._feed.unconfirmed(legs)

    # Link listener
    def link_blocked(self, link: Link, blocked: bool) -> None:
        if self._feed is not None:
            self._feed.blocked(BLOCKED, blocked)
