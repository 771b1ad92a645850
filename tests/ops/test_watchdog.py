"""The watchdog pings a real notify socket only while progress advances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.service.sdnotify import Notifier
from gateway.service.watchdog import ProgressWatchdog, progress_within
from tests.ops.notify_socket import NotifySocket

TIMEOUT = 0.2  # WatchdogSec for the test: pings every 0.1 s


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path, abstract=request.param == "abstract")
    yield sock
    sock.close()


def pings(sock: NotifySocket, seconds: float) -> int:
    return sum(1 for d in sock.drain(seconds) if d.assignments.get("WATCHDOG") == "1")


class Relay:
    """Stands for the relay loop: a progress timestamp it bumps while it works."""

    def __init__(self) -> None:
        self.last_progress = time.time()
        self.working = True

    async def loop(self) -> None:
        while True:
            if self.working:
                self.last_progress = time.time()
            await asyncio.sleep(0.02)


def test_pings_while_progress_advances_and_stops_when_it_stalls(notify_socket: NotifySocket) -> None:
    """Progress → pings at WatchdogSec/2; stalled relay → silence (systemd would restart); resumed → pings."""
    relay = Relay()
    n = Notifier(notify_socket.env_value)
    dog = ProgressWatchdog(n, TIMEOUT, progress_within(lambda: relay.last_progress, 0.15))
    counts: dict[str, int] = {}

    async def scenario() -> None:
        tasks = [asyncio.create_task(relay.loop()), asyncio.create_task(dog.run())]
        try:
            counts["working"] = await asyncio.to_thread(pings, notify_socket, 0.6)
            relay.working = False
            await asyncio.sleep(0.2)  # the predicate's max_age runs out
            notify_socket.flush()
            counts["stalled"] = await asyncio.to_thread(pings, notify_socket, 0.6)
            relay.working = True
            counts["resumed"] = await asyncio.to_thread(pings, notify_socket, 0.6)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())
    assert 4 <= counts["working"] <= 8, counts
    assert counts["stalled"] == 0, counts
    assert counts["resumed"] >= 4, counts
    assert dog.withheld >= 5
    n.close()


def test_blocked_event_loop_withholds_the_ping(notify_socket: NotifySocket,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """A callback blocking the loop shows up as lag; that period gets no ping despite fresh progress."""
    n = Notifier(notify_socket.env_value)
    dog = ProgressWatchdog(n, TIMEOUT, lambda: True, max_loop_lag=0.05)

    async def scenario() -> None:
        task = asyncio.create_task(dog.run())
        await asyncio.sleep(0.25)
        before = dog.withheld
        time.sleep(0.3)  # deliberately block the event loop
        await asyncio.sleep(0.05)
        assert dog.withheld == before + 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert "event loop woke" in caplog.text
    assert dog.pings >= 2


def test_broken_predicate_fails_safe(notify_socket: NotifySocket) -> None:
    """A predicate that raises counts as no progress: better a restart than a wedged daemon kept alive."""
    n = Notifier(notify_socket.env_value)

    def broken() -> bool:
        raise RuntimeError("relay state unavailable")

    dog = ProgressWatchdog(n, TIMEOUT, broken)
    assert dog.tick() is False
    assert notify_socket.receive(0.2) is None
    assert dog.stalled


def test_no_watchdog_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without NOTIFY_SOCKET or WATCHDOG_USEC there is no watchdog task to run."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert ProgressWatchdog.from_environ(Notifier.from_environ(), lambda: True) is None
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    assert ProgressWatchdog.from_environ(Notifier.from_environ(), lambda: True) is None


def test_from_environ_uses_half_the_watchdog_interval(notify_socket: NotifySocket,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    dog = ProgressWatchdog.from_environ(Notifier.from_environ(), lambda: True)
    assert dog is not None
    assert dog.period == pytest.approx(0.1)
    assert dog.tick()
    got = notify_socket.receive()
    assert got is not None and got.assignments == {"WATCHDOG": "1"}


def test_progress_within() -> None:
    now = [1000.0]
    last = [995.0]
    recent = progress_within(lambda: last[0], 10.0, clock=lambda: now[0])
    assert recent()
    now[0] = 1006.0
    assert not recent()
    with pytest.raises(ValueError):
        progress_within(lambda: 0.0, 0)
