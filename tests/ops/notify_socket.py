"""A real AF_UNIX datagram socket standing where systemd's notify socket would be."""

from __future__ import annotations

import os
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Datagram:
    text: str
    pid: int

    @property
    def assignments(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.text.split("\n") if line)


class NotifySocket:
    """Binds a filesystem path or an abstract name; reads datagrams with the sender's credentials."""

    def __init__(self, tmp: Path | None = None, *, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = f"jgw-test-notify-{os.getpid()}-{secrets.token_hex(6)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            assert tmp is not None
            path = tmp / "notify.sock"
            self.sock.bind(str(path))
            self.env_value = str(path)

    def receive(self, timeout: float = 2.0) -> Datagram | None:
        self.sock.settimeout(timeout)
        try:
            data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", payload[:12])
        return Datagram(data.decode(), pid)

    def drain(self, seconds: float) -> list[Datagram]:
        """Everything that arrives within ``seconds``."""
        out: list[Datagram] = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            got = self.receive(left)
            if got is not None:
                out.append(got)
        return out

    def flush(self) -> int:
        """Discard what is already queued; returns how many datagrams that was."""
        n = 0
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recv(4096)
                n += 1
        except BlockingIOError:
            return n
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()
