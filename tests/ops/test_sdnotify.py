"""sd_notify datagrams on a real AF_UNIX socket, path and abstract namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.service.sdnotify import Notifier, watchdog_timeout
from tests.ops.notify_socket import NotifySocket


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path, abstract=request.param == "abstract")
    yield sock
    sock.close()


def test_ready_status_arrive_with_our_pid(notify_socket: NotifySocket) -> None:
    """READY=1 and STATUS= travel in one datagram, and the kernel vouches that we (the main PID) sent it."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": notify_socket.env_value})
    assert n.enabled
    assert n.ready("relaying 3 routes")
    got = notify_socket.receive()
    assert got is not None
    assert got.assignments == {"READY": "1", "STATUS": "relaying 3 routes"}
    assert got.pid == os.getpid()
    n.close()


def test_every_message_kind(notify_socket: NotifySocket) -> None:
    """Each helper sends the keyword systemd expects."""
    n = Notifier(notify_socket.env_value)
    assert n.reloading("reloading configuration")
    assert n.ready()
    assert n.stopping("draining 12 messages")
    assert n.status("connecting to broker hq")
    assert n.watchdog()
    assert n.mainpid(4242)
    assert n.extend_timeout(1.5)
    got = [notify_socket.receive() for _ in range(7)]
    assert [d.assignments if d else None for d in got] == [
        {"RELOADING": "1", "STATUS": "reloading configuration"},
        {"READY": "1"},
        {"STOPPING": "1", "STATUS": "draining 12 messages"},
        {"STATUS": "connecting to broker hq"},
        {"WATCHDOG": "1"},
        {"MAINPID": "4242"},
        {"EXTEND_TIMEOUT_USEC": "1500000"},
    ]


def test_status_cannot_inject_assignments(notify_socket: NotifySocket) -> None:
    """A newline in STATUS text cannot smuggle a READY=1 or WATCHDOG=1 past the daemon's logic."""
    n = Notifier(notify_socket.env_value)
    n.status("broken line\nREADY=1\nWATCHDOG=1")
    got = notify_socket.receive()
    assert got is not None
    assert got.assignments == {"STATUS": "broken line READY=1 WATCHDOG=1"}
    with pytest.raises(ValueError):
        n.send("READY=1\nWATCHDOG=1")


def test_no_notify_socket_means_no_op(tmp_path: Path) -> None:
    """Outside systemd nothing is sent and nothing fails."""
    env: dict[str, str] = {}
    n = Notifier.from_environ(env)
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False


def test_forget_removes_the_variable(notify_socket: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.env_value}
    n = Notifier.from_environ(env, forget=True)
    assert "NOTIFY_SOCKET" not in env
    assert n.ready()
    assert notify_socket.receive() is not None


def test_relative_socket_name_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """systemd only ever passes an absolute path or @name; anything else is ignored with a warning."""
    n = Notifier.from_environ({"NOTIFY_SOCKET": "notify.sock"})
    assert not n.enabled
    assert "NOTIFY_SOCKET" in caplog.text


def test_vanished_socket_is_reported_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """If systemd's socket is gone, sends return False and one warning is logged, then it recovers."""
    sock = NotifySocket(tmp_path)
    n = Notifier(sock.env_value)
    sock.close()
    os.unlink(sock.env_value)
    assert n.ready() is False
    assert n.watchdog() is False
    assert caplog.text.count("cannot notify systemd") == 1
    again = NotifySocket(tmp_path)
    try:
        assert n.watchdog() is True
        got = again.receive()
        assert got is not None and got.assignments == {"WATCHDOG": "1"}
    finally:
        again.close()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1234"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "999"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_timeout(env: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC applies only to the PID in WATCHDOG_PID (sd_watchdog_enabled semantics)."""
    assert watchdog_timeout(env, pid=1234) == expected
