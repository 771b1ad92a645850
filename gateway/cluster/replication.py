"""A route's dedup state shared by its instances through the route's delivered-ids stream.

The active instance appends the ids of each group commit to the stream, with confirm, *before*
the local commit and the source acks (``commit``): an id whose delivery was acknowledged is in the
stream. Every instance follows the stream. When a source generation delivers its first batch
(this instance was just made the active consumer, or reconnected), ``catch_up`` appends a marker
and waits until it has read it: every id confirmed before the takeover is then known, and
``seen`` suppresses it.

Bound (what cannot be suppressed): a message the old active had published to the sink but whose
id was not yet confirmed in the stream when it died or was fenced: at most the deliveries it held
unacknowledged, so at most ``prefetch`` per takeover. The receiving side's dedup (same message id)
removes those.

Security: message ids and counts only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from gateway.cluster.stream import StreamLog

log = logging.getLogger("jgw.cluster")

SYNC_TIMEOUT = 10.0

Done = Callable[[BaseException | None], None]


class Replication:
    """One route's side of the stream: what to append, what is known, whether it caught up."""

    def __init__(self, stream: StreamLog, *, sync_timeout: float = SYNC_TIMEOUT) -> None:
        self.stream = stream
        self.sync_timeout = sync_timeout
        self._pending: list[str] = []
        self._synced_gen = -1
        #: seconds the last catch-up took (the part of a takeover spent reading the stream)
        self.last_catch_up = 0.0
        self.catch_ups = 0

    def delivered(self, message_id: str) -> None:
        self._pending.append(message_id)

    def commit(self, then: Done) -> None:
        """Append the ids delivered since the last commit, then ``then(None)``; on failure the ids
        stay for the next commit and ``then(exc)`` (the caller must not acknowledge)."""
        ids, self._pending = self._pending, []
        if not ids:
            asyncio.get_running_loop().call_soon(then, None)
            return

        def done(exc: BaseException | None) -> None:
            if exc is not None:
                self._pending[:0] = ids
            then(exc)

        self.stream.append(ids, done)

    def seen(self, message_ids: Iterable[str]) -> set[str]:
        known = self.stream.known
        return {m for m in message_ids if m in known}

    def caught_up(self, gen: int) -> bool:
        return self._synced_gen == gen

    async def catch_up(self, gen: int) -> None:
        """Read the stream up to now before generation ``gen`` delivers (raises on failure)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.stream.sync(self.sync_timeout)
        self._synced_gen = gen
        self.catch_ups += 1
        self.last_catch_up = loop.time() - started
