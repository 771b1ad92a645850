"""A real ``jgw run`` child as systemd would start it, and the tools to watch and stall it from outside.

``NotifyRecorder`` reads the notify socket on a thread and time-stamps every datagram (systemd reads
its socket at once; a test that reads late would make the daemon's non-blocking sends fail with
EAGAIN). ``Daemon`` starts ``jgw run CONFIG`` the way systemd does: ``$NOTIFY_SOCKET``,
``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` equal to the daemon's own pid (a ``sh -c 'exec …'`` keeps
the pid, so the value is known before Python starts). ``ThreadFreezer`` stops threads of the daemon
with ptrace(2), leaving its event loop thread running: the stall a hung library call or disk would
cause in the stage and commit threads, seen from outside.

Security: test use only. ptrace needs the tracee to be our own child (same uid) or CAP_SYS_PTRACE.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import UnavailableError
from gateway.service import control
from tests.lab.harness import Amqp
from tests.ops.notify_socket import Datagram, NotifySocket


@dataclass(frozen=True)
class Note:
    """One datagram and when it arrived (time.monotonic())."""

    at: float
    datagram: Datagram

    @property
    def fields(self) -> dict[str, str]:
        return self.datagram.assignments


class NotifyRecorder:
    """Every datagram that reaches a NotifySocket, in order, with its arrival time."""

    def __init__(self, sock: NotifySocket) -> None:
        self.sock = sock
        self.notes: list[Note] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            got = self.sock.receive(0.2)
            if got is not None:
                with self._lock:
                    self.notes.append(Note(time.monotonic(), got))

    def snapshot(self, since: float = 0.0) -> list[Note]:
        with self._lock:
            return [n for n in self.notes if n.at >= since]

    def wait_for(self, predicate: Callable[[Note], bool], *, since: float = 0.0, timeout: float = 30.0,
                 what: str = "datagram") -> Note:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for note in self.snapshot(since):
                if predicate(note):
                    return note
            time.sleep(0.02)
        got = [n.datagram.text for n in self.snapshot(since)]
        raise AssertionError(f"no {what} within {timeout}s; got {got}")

    def watchdog_times(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [n.at for n in self.snapshot(since) if n.at <= until and n.fields.get("WATCHDOG") == "1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def has(key: str, value: str = "1") -> Callable[[Note], bool]:
    return lambda note: note.fields.get(key) == value


class Daemon:
    """``jgw run CONFIG`` with systemd's notify environment; output goes to ``log_path``."""

    def __init__(self, config: Path, log_path: Path, *, notify: str | None = None,
                 watchdog_usec: int | None = None, control_socket: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.config = config
        self.log_path = log_path
        self.control_socket = control_socket
        cmd = [sys.executable, "-m", "gateway.cli", "run", str(config)]
        if watchdog_usec is not None:
            # systemd sets WATCHDOG_PID to the main pid; exec keeps the shell's pid for jgw
            cmd = ["sh", "-c", 'WATCHDOG_PID=$$; export WATCHDOG_PID; exec "$@"', "sh", *cmd]
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        assert self.control_socket is not None
        return control.request(self.control_socket, "status", timeout=timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not go (then the return code says so)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


class Publisher:
    """Publishes numbered messages to a queue on a thread until stopped; keeps every id sent."""

    def __init__(self, url: str, queue: str, *, batch: int = 10, pause: float = 0.05,
                 body: bytes = b"\x82\xa0" * 64) -> None:
        self.url, self.queue, self.batch, self.pause, self.body = url, queue, batch, pause, body
        self.ids: list[str] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with Amqp(self.url) as amqp:
                while not self._stop.is_set():
                    self.ids += amqp.publish(self.queue, [self.body] * self.batch)
                    time.sleep(self.pause)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise AssertionError(f"publisher failed: {self.error!r}")
        return list(self.ids)


# ---------------------------------------------------------------- freezing threads with ptrace

_PTRACE_SEIZE, _PTRACE_INTERRUPT, _PTRACE_DETACH = 0x4206, 0x4207, 17
_WALL = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def _ptrace(request: int, tid: int) -> None:
    if _libc.ptrace(request, tid, None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request:#x}, {tid}): {os.strerror(err)}")


def thread_state(pid: int, tid: int) -> str:
    """The state letter of /proc/PID/task/TID/stat: 'S' sleeping, 'R' running, 't' stopped by a tracer."""
    text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()[0]


class ThreadFreezer:
    """Stops chosen threads of a process (PTRACE_SEIZE + PTRACE_INTERRUPT) until ``thaw()``.

    Unlike SIGSTOP, which stops every thread of a process, this stops single threads: the others,
    here the daemon's event loop, keep running. ptrace binds the tracee to the tracing *thread*, so
    freeze and thaw must be called from the same thread. If this process dies first, the kernel
    detaches and the threads run again.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.frozen: list[int] = []

    def helper_threads(self) -> list[int]:
        """Every thread but the main one (whose tid is the pid): stage, commit and executor threads."""
        return sorted(int(t) for t in os.listdir(f"/proc/{self.pid}/task") if int(t) != self.pid)

    def freeze(self, tids: Iterable[int]) -> list[int]:
        for tid in tids:
            try:
                _ptrace(_PTRACE_SEIZE, tid)
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    continue  # the thread ended meanwhile
                raise
            self.frozen.append(tid)
            _ptrace(_PTRACE_INTERRUPT, tid)
            os.waitpid(tid, _WALL)
            assert thread_state(self.pid, tid) == "t", f"thread {tid} not stopped"
        return list(self.frozen)

    def thaw(self) -> None:
        for tid in self.frozen:
            with contextlib.suppress(OSError):
                _ptrace(_PTRACE_DETACH, tid)
        self.frozen = []


def freeze_helpers_keeping_loop_alive(daemon: Daemon, attempts: int = 5) -> ThreadFreezer:
    """Freeze every helper thread of an idle daemon and prove its event loop still answers.

    A thread stopped while it holds (or was just handed) Python's GIL would stop the loop too; the
    control socket then stays silent, and we thaw and try again a moment later.
    """
    for _ in range(attempts):
        freezer = ThreadFreezer(daemon.pid)
        freezer.freeze(freezer.helper_threads())
        try:
            daemon.status(timeout=3.0)
            return freezer
        except (UnavailableError, TimeoutError, OSError):
            freezer.thaw()
            time.sleep(0.5)
    raise AssertionError(f"could not freeze the helper threads of {daemon.pid} with its loop answering")


def log_lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]
