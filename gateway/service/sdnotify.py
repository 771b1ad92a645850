"""sd_notify(3) without libsystemd: tell systemd we are ready, reloading, stopping, alive.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET``; a name starting with ``@`` is in the Linux abstract namespace. The kernel
attaches our credentials, and with ``NotifyAccess=main`` systemd only listens to the main PID, so
these calls must come from the daemon process itself, not from a helper. When ``$NOTIFY_SOCKET`` is
unset (a shell, a test, a container without systemd) every call is a cheap no-op returning False.

A failed send is logged once and reported as False, never raised: the relay must not stop because
systemd went away (``systemctl daemon-reexec`` recreates the socket; the next send reaches it).

Security: writes to one local socket named by our environment. Sends only fixed keywords, numbers
and STATUS text chosen by the daemon; STATUS must never carry payloads or personal identifiers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping

log = logging.getLogger(__name__)

#: Longest STATUS= text we send; systemctl status shows one line, so longer is useless.
STATUS_MAX = 200


def _one_line(text: str) -> str:
    """A value may not contain a newline: it would start a new KEY=VALUE assignment."""
    flat = " ".join(text.splitlines()).strip()
    return flat[:STATUS_MAX]


def _socket_address(name: str) -> str:
    if name.startswith("@"):
        return "\0" + name[1:]
    return name


class Notifier:
    """A handle on ``$NOTIFY_SOCKET``; ``Notifier(None)`` is the no-op one."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *,
                     forget: bool = False) -> Notifier:
        """Read ``$NOTIFY_SOCKET``; with ``forget``, drop it so child processes never inherit it."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        if forget:
            env.pop("NOTIFY_SOCKET", None)
        if address is not None and not (address.startswith("/") or address.startswith("@")):
            log.warning("ignoring NOTIFY_SOCKET: expected an absolute path or @abstract name")
            address = None
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram. True when systemd's socket accepted it."""
        if self.address is None:
            return False
        for line in assignments:
            if "\n" in line or "=" not in line:
                raise ValueError("sd_notify assignments are single KEY=VALUE lines")
        data = "\n".join(assignments).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, _socket_address(self.address))
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd through NOTIFY_SOCKET: %s", exc.strerror or exc)
                self._warned = True
            return False
        self._warned = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup or a reload has finished: systemd ends ``start``/``reload`` successfully."""
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        return self.send(*lines)

    def reloading(self, status: str | None = None) -> bool:
        """A reload began; follow it with ``ready()`` whether it worked or not."""
        lines = ["RELOADING=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        return self.send(*lines)

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        return self.send(*lines)

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status``: what the daemon is doing, never message content."""
        return self.send("STATUS=" + _one_line(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def mainpid(self, pid: int | None = None) -> bool:
        return self.send(f"MAINPID={os.getpid() if pid is None else int(pid)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start, reload or stop (a long drain)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1_000_000))}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_timeout(environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> float | None:
    """``WatchdogSec=`` in seconds when systemd expects pings from this process, else None.

    Mirrors sd_watchdog_enabled(3): ``$WATCHDOG_PID``, when set, must be our PID.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC: not an integer")
        return None
    if value <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            log.warning("ignoring WATCHDOG_PID: not an integer")
            return None
    return value / 1_000_000
