"""Real ``jgw run`` nodes with file routes, for the route-level file tests: a config written from
tables, the process, its metrics and audit trail, and how files look at both ends.

Security: test use only; keys are throw-away (``tests.lab.sshd.keygen``), data synthetic.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.lab.harness import JgwProcess, render_config, scrape_metric
from tests.lab.rabbitnode import free_port
from tests.lab.sshd import PrivateSshd, keygen, known_hosts_line

from .helpers import listdir


@dataclass
class Node:
    """One jgw node of a test: ``write`` its config, ``start``/``stop``/``kill`` it, read its metrics."""

    base: Path
    node_id: str = "filenode"
    metrics_port: int = field(default_factory=free_port)
    proc: JgwProcess | None = None
    config: Path | None = None
    sock_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="jgwf-")))

    @property
    def state_dir(self) -> Path:
        return self.base / "state"

    @property
    def certs_dir(self) -> Path:
        return self.base / "certs"

    def write(self, routes: dict[str, dict[str, Any]], *, brokers: dict[str, dict[str, Any]] | None = None,
              tables: dict[str, dict[str, Any]] | None = None, **node: Any) -> Path:
        self.base.mkdir(parents=True, exist_ok=True)
        self.certs_dir.mkdir(exist_ok=True)
        table = {"id": self.node_id, "state_dir": str(self.state_dir), "certs_dir": str(self.certs_dir),
                 "metrics_listen": f"127.0.0.1:{self.metrics_port}",
                 "control_socket": str(self.sock_dir / f"{self.node_id}.sock"), "shutdown_grace": "5s", **node}
        self.config = self.base / "jgw.toml"
        self.config.write_text(render_config(table, brokers or {}, routes, tables=tables), encoding="utf-8")
        return self.config

    def start(self, timeout: float = 60.0, *, wait: bool = True) -> Node:
        """Start ``jgw run``; with ``wait``, until every route is running (a sink that is down is not)."""
        assert self.config is not None
        self.proc = JgwProcess(self.config, log_path=self.base / "jgw.log").start(wait=wait, timeout=timeout)
        return self

    def stop(self) -> int:
        if self.proc is None:
            return 0
        rc = self.proc.stop()
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None

    def metric(self, name: str, **labels: str) -> float:
        """One sample (0 when not exported yet, or while the endpoint is not up)."""
        try:
            return scrape_metric(self.metrics_port, name, 0.0, **labels)
        except OSError:
            return 0.0

    def files(self, route: str, outcome: str) -> int:
        return int(self.metric("jgw_files_total", route=route, outcome=outcome))

    def status(self, route: str) -> dict[str, Any]:
        """The route's entry of the daemon's status (empty values while it does not answer yet)."""
        from gateway.errors import UnavailableError

        assert self.proc is not None
        try:
            return next(r for r in self.proc.status()["routes"] if r["route"] == route)
        except (UnavailableError, OSError):  # not up yet, or too busy to answer in time
            return {"route": route, "state": "", "errors": {}, "files": []}

    def log(self) -> str:
        return (self.base / "jgw.log").read_text(errors="replace") if (self.base / "jgw.log").exists() else ""

    def audit(self) -> list[dict[str, Any]]:
        from gateway.audit import records

        return [rec for _, _, rec in records(self.state_dir / "audit")]

    def sftp_server(self, name: str, sshd: PrivateSshd) -> dict[str, Any]:
        """An ``[sftp.NAME]`` table logging in to ``sshd`` with a key of this node, its host key pinned."""
        key = self.certs_dir / "sftp" / f"{name}_ed25519"
        key.parent.mkdir(parents=True, exist_ok=True)
        if not key.exists():
            keygen(key, f"jgw-{self.node_id}")
        sshd.authorize(key)
        known = self.certs_dir / "sftp" / f"{name}.known_hosts"
        known.write_text(known_hosts_line("127.0.0.1", sshd.port, sshd.host_key))
        return {"host": "127.0.0.1", "port": sshd.port, "user": "root", "client_key": f"sftp/{name}_ed25519",
                "known_hosts": f"sftp/{name}.known_hosts", "connect_timeout": "5s"}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None
        import shutil

        shutil.rmtree(self.sock_dir, ignore_errors=True)


def put_file(directory: Path, name: bytes, data: bytes, *, mtime_ns: int | None = None) -> Path:
    """Write a file as a business system would (all at once); returns its path."""
    path = Path(os.fsdecode(os.path.join(os.fsencode(directory), name)))
    with open(os.path.join(os.fsencode(directory), name), "wb") as f:
        f.write(data)
    if mtime_ns is not None:
        os.utime(os.path.join(os.fsencode(directory), name), ns=(mtime_ns, mtime_ns))
    return path


def final_names(directory: Path) -> set[bytes]:
    """The names under which files are visible (jgw's temporaries and subdirectories left out); none
    for a directory that does not exist (yet)."""
    if not directory.is_dir():
        return set()
    return {n for n in listdir(directory) if not n.startswith(b".jgw-")
            and os.path.isfile(os.path.join(os.fsencode(directory), n))}


def temporaries(directory: Path) -> set[bytes]:
    return {n for n in listdir(directory) if n.startswith(b".jgw-")} if directory.is_dir() else set()


def watch_no_partial(directory: Path, expected: dict[bytes, bytes]) -> Callable[[], None]:
    """A check to call often: every file visible under a final name is complete and byte-identical."""
    def check() -> None:
        for name in final_names(directory):
            if name in expected:
                with open(os.path.join(os.fsencode(directory), name), "rb") as f:
                    assert f.read() == expected[name], f"partial or wrong file visible under {name!r}"
    return check


def wait(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition",
         also: Callable[[], None] | None = None) -> Any:
    """Wait on a condition (calling ``also`` on every round, e.g. a no-partial check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if also is not None:
            also()
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def iter_kinds(records: list[dict[str, Any]], event: str) -> Iterator[dict[str, Any]]:
    return (r for r in records if r.get("ev") == event)
