"""The pause fence: a process that was stopped (SIGSTOP, a VM freeze) must not publish on resume.

While it was stopped the broker may have missed its heartbeats, closed its connection and given
its unacknowledged deliveries to another instance, which delivered them. On resume the event loop
runs whatever was ready, in any order: a publish could go out before the connection is seen closed.
So every publish first asks ``closed()``: true when the ticker, which runs every ``TICK`` seconds,
has not run for longer than ``after`` (the loop was not running: the process was paused). The
runner then gives its deliveries back instead of publishing. ``after`` must be shorter than the
broker's heartbeat, so a pause long enough for a takeover is always noticed.

Security: no data; a clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("jgw.cluster")

TICK = 0.1


class PauseFence:
    def __init__(self, after: float, on_pause: Callable[[float], None]) -> None:
        self.after = after
        self.on_pause = on_pause
        self._last = time.monotonic()
        self.pauses = 0

    def closed(self) -> bool:
        """True while the last tick is older than ``after``: this process was paused."""
        return time.monotonic() - self._last > self.after

    def trip(self) -> float:
        """Count a pause noticed now; returns how long it was."""
        gap = time.monotonic() - self._last
        self._last = time.monotonic()
        self.pauses += 1
        return gap

    async def run(self) -> None:
        self._last = time.monotonic()  # the time before the loop ran (start-up) was no pause
        while True:
            if self.closed():
                self.on_pause(self.trip())
            self._last = time.monotonic()
            await asyncio.sleep(TICK)
