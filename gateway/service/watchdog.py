"""The systemd watchdog, fed only while the relay proves it is making progress.

A blind timer would keep a wedged daemon alive forever. This task wakes every ``WatchdogSec/2``
and sends ``WATCHDOG=1`` only when (a) the event loop itself woke it roughly on time (a loop
blocked by a stuck callback shows up as lag) and (b) the relay's progress predicate says the relay
loop settled a message or found nothing to do recently. Otherwise it stays silent, and systemd
kills and restarts the service after ``WatchdogSec``; unacknowledged messages are still at their
source, so a restart loses nothing.

Run it from process start, not from READY: systemd arms the watchdog when the service starts, so
the predicate must also count start-up work (connecting, retrying with back-off) as progress.

Security: talks to nothing but ``gateway.service.sdnotify``; trusts the predicate it is given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.service.sdnotify import Notifier, watchdog_timeout

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def progress_within(last_progress: Callable[[], float], max_age: float, *,
                    clock: Clock = time.time) -> Callable[[], bool]:
    """A predicate: the relay's last-progress timestamp (same clock as ``clock``) is recent."""
    if max_age <= 0:
        raise ValueError("max_age must be positive")

    def recent() -> bool:
        return clock() - last_progress() <= max_age

    return recent


class ProgressWatchdog:
    """Pings every ``timeout/2`` while ``healthy()`` holds and the loop is not lagging."""

    def __init__(self, notifier: Notifier, timeout: float, healthy: Callable[[], bool], *,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 max_loop_lag: float | None = None) -> None:
        if timeout <= 0:
            raise ValueError("watchdog timeout must be positive")
        self.notifier = notifier
        self.timeout = timeout
        self.period = timeout / 2
        #: A wake-up later than this means the loop was blocked: do not vouch for it.
        self.max_loop_lag = timeout / 4 if max_loop_lag is None else max_loop_lag
        self.healthy = healthy
        self.clock = clock
        self.sleep = sleep
        self.pings = 0
        self.withheld = 0
        self.stalled = False

    def __repr__(self) -> str:
        state = "stalled" if self.stalled else "ok"
        return (f"<ProgressWatchdog period={self.period:g}s {state} pings={self.pings} "
                f"withheld={self.withheld}>")

    def tick(self, lag: float = 0.0) -> bool:
        """Decide one period: ping if the loop is on time and the relay progressed. True if pinged."""
        reason = ""
        if lag > self.max_loop_lag:
            reason = f"event loop woke {lag:.1f}s late (blocked)"
        else:
            try:
                if not self.healthy():
                    reason = "relay reports no recent progress"
            except Exception as exc:  # a broken predicate must fail safe: let systemd restart us
                reason = f"progress check failed: {type(exc).__name__}"
        if reason:
            self.withheld += 1
            if not self.stalled:
                log.error("watchdog: %s; withholding WATCHDOG=1 so systemd restarts jgw after %gs",
                          reason, self.timeout)
            self.stalled = True
            return False
        if self.stalled:
            log.warning("watchdog: progress resumed; pinging systemd again")
            self.stalled = False
        self.pings += 1
        self.notifier.watchdog()
        return True

    async def run(self) -> None:
        """Loop until cancelled; the first decision is made at once, then every ``period``."""
        lag = 0.0
        while True:
            self.tick(lag)
            due = self.clock() + self.period
            await self.sleep(self.period)
            lag = max(0.0, self.clock() - due)

    @classmethod
    def from_environ(cls, notifier: Notifier, healthy: Callable[[], bool]) -> ProgressWatchdog | None:
        """The watchdog systemd asked for (``WatchdogSec=``), or None when it asked for none."""
        timeout = watchdog_timeout()
        if timeout is None or not notifier.enabled:
            return None
        return cls(notifier, timeout, healthy)
