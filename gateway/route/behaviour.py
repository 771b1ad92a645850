"""Sources and sinks as a behaviour (RabbitMQ Shovel's ``rabbit_shovel_behaviour``).

A route's two ends plug in here; the runner does not know whether it talks to an AMQP queue, a
spool directory or an SFTP server. Each end keeps itself connected (``run`` reconnects with
back-off and never returns until cancelled) and reports what happens through a feed, which the
runner turns into events of the route book:

    source                                   runner (feed)                    sink
    run(feed) ── opened() → gen ───────────▶                     ◀──── ready(True) ── run(feed)
              ── delivered(gen, tag, msg) ─▶  book ── Publish ──────────▶ put(leg)
              ◀── ack(gen, tags) ────────────       ◀── confirmed(leg, ACK) ──
              ◀── set_aside(leg) ────────────       ◀── unconfirmed([legs]) ──
              ── aside_done(leg, ACK) ─────▶        ◀── blocked(why, on) ─────
              ── lost(gen) ────────────────▶

Failure means restart: an end that loses its connection says so (``lost``) and starts over;
what was not acknowledged is still at the source.

Security: pure protocol definitions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from gateway.message import Message
from gateway.route.book import Confirm, Leg, Result


class SourceFeed(Protocol):
    """What a source tells its route."""

    async def may_consume(self) -> None:
        """Wait until the route may take messages (evidence can be made durable)."""

    def opened(self) -> int:
        """A new source session starts; the generation its deliveries carry."""

    def delivered(self, gen: int, tag: int, message: Message, wire: Any) -> None:
        """One delivery: ``wire`` is the source's own form of its properties (kept for set-aside)."""

    def lost(self, gen: int, why: str) -> None:
        """That session is gone: its unacknowledged deliveries are back at the source."""

    def aside_ready(self, ready: bool, why: str) -> None: ...

    def aside_done(self, leg: Leg, result: Confirm) -> None: ...

    def aside_lost(self, legs: Sequence[Leg]) -> None: ...

    def problem(self, where: str, text: str | None) -> None:
        """Something an operator must see in ``jgw status`` (None: it went away)."""


class SinkFeed(Protocol):
    """What a sink tells its route."""

    def ready(self, ready: bool, why: str) -> None: ...

    def confirmed(self, leg: Leg, result: Result) -> None:
        """The put is durable (``Confirm.ACK``), failed (``NACK``/``RETURNED``), or refused with a
        reason (``Refuse``: a file sink's conflict or a chunk that does not fit)."""

    def unconfirmed(self, legs: Sequence[Leg]) -> None:
        """The sink session closed with these puts unconfirmed (or a put could not be made)."""

    def blocked(self, why: str, on: bool) -> None:
        """The sink refuses new puts for a while (a broker's memory alarm)."""

    def problem(self, where: str, text: str | None) -> None: ...


class Source(Protocol):
    def describe(self) -> str:
        """Where it reads, for status and logs (no credentials)."""

    async def run(self, feed: SourceFeed) -> None: ...

    def ack(self, gen: int, tags: Sequence[int]) -> None:
        """These deliveries are settled: the source may forget them."""

    def set_aside(self, leg: Leg) -> None:
        """Keep ``leg`` durably to the side (retry tier, dead-letter, quarantine); then ``aside_done``."""

    def restart(self, gen: int, why: str) -> None:
        """Give the deliveries of ``gen`` back (close that session; ``run`` opens a new one)."""

    async def stop_taking(self) -> None:
        """Take no more deliveries (drain)."""

    async def depth(self) -> int | None:
        """How many messages wait at the source, when it can tell."""

    async def close(self) -> None: ...


class Sink(Protocol):
    def describe(self) -> str: ...

    async def run(self, feed: SinkFeed) -> None: ...

    def put(self, leg: Leg) -> None:
        """Deliver ``leg`` durably; then ``confirmed`` (or ``unconfirmed`` if the session goes first)."""

    async def close(self) -> None: ...
