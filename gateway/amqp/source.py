"""A route's source as an AMQP queue: consume with manual acks, acknowledge settled deliveries,
set messages aside on the source broker.

One consume channel at a time (a *generation*): when it closes, every delivery it held is back in
the queue and the route book marks them stale; a new channel starts a new generation. Acks go on
the consume link (RabbitMQ stops reading a blocked connection, so acks must not share a publishing
one); set-aside publishes go with confirm on the source broker's publish link, to a retry tier,
``jgw.dead-letter`` or ``jgw.quarantine``.

Security: reads properties of hostile messages (``properties.to_message``); passes bodies on
without looking at them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from gateway.amqp import convert
from gateway.amqp.connection import Delivery
from gateway.amqp.errors import ChannelClosedError
from gateway.amqp.ledger import SourceLedger
from gateway.amqp.link import AsyncChannel, ChannelClosed, ConfirmChannel, Link
from gateway.amqp.topology import DEAD_LETTER_QUEUE, QUARANTINE_QUEUE, retry_queue, source_topology
from gateway.config import RouteConfig
from gateway.route.behaviour import SourceFeed
from gateway.route.book import Confirm, Dest, Leg

log = logging.getLogger("jgw.amqp")


class AmqpSource:
    def __init__(self, cfg: RouteConfig, *, node_id: str, consume_link: Link, side_link: Link) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self.consume_link = consume_link
        self.side_link = side_link
        self._feed: SourceFeed | None = None
        self._ch: AsyncChannel | None = None
        self._gen = 0
        self._tag: str | None = None
        self._ledger = SourceLedger()
        self._side: ConfirmChannel[Leg] | None = None
        self._depth_ch: AsyncChannel | None = None
        self._stopping = False
        side_link.subscribe(self)

    def describe(self) -> str:
        return f"{self.cfg.source.broker}:{self.cfg.source.queue}"

    # ------------------------------------------------------------------ consuming

    async def run(self, feed: SourceFeed) -> None:
        self._feed = feed
        side = asyncio.ensure_future(self._run_side(feed))
        try:
            await self._run_consumer(feed)
        finally:
            side.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await side

    async def _run_consumer(self, feed: SourceFeed) -> None:
        backoff = 1.0
        queue = self.cfg.source.queue
        while True:
            await self.consume_link.up_event.wait()
            await feed.may_consume()
            try:
                topo = await self.consume_link.open_channel()
                try:
                    await topo.declare(source_topology(self.cfg))
                finally:
                    topo.close()
                ch = await self.consume_link.open_channel()
                await ch.call(ch.channel.qos(self.cfg.prefetch))
                gen = feed.opened()
                self._gen, self._ch, self._ledger = gen, ch, SourceLedger()
                if self._stopping:
                    await asyncio.shield(ch.closed)
                    continue
                # the broker cancels a consumer whose queue went away or moved (quorum leader):
                # start over on a new channel, as after any loss
                ch.channel.on_cancel = lambda _tag, ch=ch: ch.close()

                def on_delivery(d: Delivery, gen: int = gen) -> None:
                    self._on_message(gen, d)

                self._tag = await ch.call(ch.channel.consume(queue, on_delivery))
            except ChannelClosed as exc:
                feed.problem("source", f"queue {queue!r}: {exc}{_hint(exc)}")
                self._lost(feed, str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            feed.problem("source", None)
            log.info("route consuming", extra={"route": self.cfg.name, "queue": queue})
            reason = await asyncio.shield(ch.closed)
            if not self._stopping:
                log.warning("route source channel closed", extra={"route": self.cfg.name, "error": str(reason)})
            self._lost(feed, str(reason))
            await asyncio.sleep(0.2)

    def _lost(self, feed: SourceFeed, why: str) -> None:
        if self._ch is None:
            return
        self._ch = None
        self._tag = None
        feed.lost(self._gen, why)

    def _on_message(self, gen: int, d: Delivery) -> None:
        if gen != self._gen or self._feed is None:
            return  # a delivery on a channel already given up: the broker requeues it
        tag = d.delivery_tag
        self._ledger.delivered(tag)
        msg, wire = convert.to_message(self.cfg.name, d.properties, d.body, self.cfg.ordering_header, time.time())
        self._feed.delivered(gen, tag, msg, wire)

    def ack(self, gen: int, tags: Sequence[int]) -> None:
        ch = self._ch
        if gen != self._gen or ch is None or not ch.is_open:
            return  # that channel is gone: its deliveries went back to the queue; dedup catches them
        for tag in tags:
            self._ledger.settle(tag)
        upto, singles = self._ledger.take_acks()
        try:
            if upto is not None:
                ch.channel.ack(upto, multiple=True)
            for tag in singles:
                ch.channel.ack(tag)
        except ChannelClosedError as exc:
            log.warning("ack failed", extra={"route": self.cfg.name, "error": str(exc)})

    def restart(self, gen: int, why: str) -> None:
        if gen == self._gen and self._ch is not None:
            self._ch.close()

    async def stop_taking(self) -> None:
        self._stopping = True
        ch, tag = self._ch, self._tag
        if ch is not None and tag is not None and ch.is_open:
            with contextlib.suppress(ChannelClosed, TimeoutError):
                await asyncio.wait_for(ch.call(ch.channel.cancel(tag)), 5)

    async def depth(self) -> int | None:
        try:
            await asyncio.wait_for(self.consume_link.up_event.wait(), 1.0)
        except TimeoutError:
            return None
        try:
            if self._depth_ch is None or not self._depth_ch.is_open:
                self._depth_ch = await self.consume_link.open_channel()
            return await self._depth_ch.queue_depth(self.cfg.source.queue)
        except ChannelClosed:
            self._depth_ch = None
            return None

    @property
    def consumer_tag(self) -> str | None:
        """The broker's tag for this instance's consumer (compared with the single active one)."""
        return self._tag

    @property
    def consuming(self) -> bool:
        return self._ch is not None

    async def close(self) -> None:
        for ch in (self._side.achannel if self._side is not None else None, self._ch, self._depth_ch):
            if ch is not None:
                ch.close()

    # ------------------------------------------------------------------ setting aside

    async def _run_side(self, feed: SourceFeed) -> None:
        while True:
            await self.side_link.up_event.wait()
            try:
                ch: ConfirmChannel[Leg] = await ConfirmChannel.open(await self.side_link.open_channel(), self)
            except ChannelClosed as exc:
                feed.problem("side", f"set-aside channel on {self.cfg.source.broker}: {exc}")
                await asyncio.sleep(2.0)
                continue
            feed.problem("side", None)
            self._side = ch
            feed.aside_ready(True, "set-aside down")
            await asyncio.shield(ch.ended)
            self._side = None
            feed.aside_ready(False, "set-aside down")
            await asyncio.sleep(0.2)

    def set_aside(self, leg: Leg) -> None:
        ch = self._side
        if ch is None or not ch.is_open:
            assert self._feed is not None
            asyncio.get_running_loop().call_soon(self._feed.aside_lost, [leg])
            return
        if leg.dest is Dest.RETRY:
            queue = retry_queue(self.cfg, leg.tier)
        else:
            queue = QUARANTINE_QUEUE if leg.dest is Dest.QUARANTINE else DEAD_LETTER_QUEUE
        props = convert.set_aside(leg.message, leg.wire if leg.original else None, route=self.cfg.name,
                                     node_id=self.node_id, origin_queue=self.cfg.source.queue,
                                     attempt=leg.attempt, reason=leg.reason, detail=leg.detail,
                                     retry=leg.dest is Dest.RETRY)
        try:
            ch.publish("", queue, leg.message.body, props, leg, leg.message_id)
        except ChannelClosed:
            assert self._feed is not None
            asyncio.get_running_loop().call_soon(self._feed.aside_lost, [leg])

    # ConfirmChannel listener
    def on_confirm(self, leg: Leg, result: Confirm) -> None:
        if self._feed is not None:
            self._feed.aside_done(leg, result)

    def on_publish_channel_lost(self, legs: list[Leg], reason: ChannelClosed) -> None:
        if self._feed is not None:
            self._feed.aside_lost(legs)

    # Link listener (side link)
    def link_blocked(self, link: Link, blocked: bool) -> None:
        if self._feed is not None:
            self._feed.aside_ready(not blocked, "set-aside broker blocked")


def _hint(exc: ChannelClosed) -> str:
    """What an operator does about a queue declared before with other arguments (an upgrade that
    changed a route's consumers or replicas): RabbitMQ never changes a queue's arguments."""
    if exc.reply_code == 406 and "inequivalent arg" in exc.reply_text:
        return (" (the queue exists with other arguments, e.g. from before the route's consumers/replicas: "
                "stop its producers, let it drain, delete it and restart jgw; docs/configuration.md)")
    return ""
