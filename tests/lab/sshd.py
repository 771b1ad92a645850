"""Private OpenSSH sshd instances as real SFTP peers for tests (``make sshd`` installs the server).

Debian ships the client (``sftp``, ``ssh-keygen``) but not the server; ``python -m tests.lab.sshd
--install`` runs ``apt-get install -y openssh-server openssh-client`` when ``/usr/sbin/sshd`` is
missing (as root; otherwise it prints the command and exits 69). Installing starts nothing usable
here (no systemd as PID 1), and nothing of the system's sshd is used or touched.

Each ``PrivateSshd`` has its own port on 127.0.0.1, its own ed25519 host key (generated), its own
``sshd_config`` and ``authorized_keys``, and runs in the foreground (``sshd -D -e -f CONFIG``, its
log in ``sshd.log``). The login user is ``root``: OpenSSH allows a chroot for root (the
``ChrootDirectory`` must be root-owned and not group/other-writable in every path component, which
rules out anything under /tmp), so no Unix user is created. The layout, under
``/var/lib/jgw-test-sshd/<pid>-<n>/`` (root, 0755)::

    sshd_config  host_ed25519_key(.pub)  authorized_keys  sshd.log  sshd.pid
    chroot/            ChrootDirectory (root, 0755), seen by the client as /
    chroot/upload/     the writable directory (the client's /upload)

``stop`` sends SIGTERM to the listener and SIGKILL to its session processes (sshd puts each
connection in a new session, so they outlive the listener otherwise); ``kill`` SIGKILLs them all at
once, as a crash would; ``restart(new_host_key=True)`` brings it back on the same port with a new
key. ``destroy`` unmounts anything a test mounted inside, removes the directory, and base
directories left by dead test processes are removed when the next instance is made.

``openssh_sftp`` runs the real OpenSSH ``sftp`` client in batch mode (the business system's side).

Security: test use only. Listens on 127.0.0.1; the keys are throw-away, generated per instance.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.rabbitnode import free_port

SSHD = Path("/usr/sbin/sshd")
SFTP = "sftp"
SSH_KEYGEN = "ssh-keygen"
BASE = Path("/var/lib/jgw-test-sshd")
PACKAGES = ("openssh-server", "openssh-client")
INSTALL_CMD = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
_counter = itertools.count(1)


def installed() -> bool:
    return SSHD.exists() and shutil.which(SFTP) is not None and shutil.which(SSH_KEYGEN) is not None


def usable() -> str | None:
    """None when private sshd instances can run here, else why not (a pytest skip reason)."""
    if not installed():
        return f"openssh-server is not installed: run  sudo {' '.join(INSTALL_CMD)}  (make test does it)"
    if os.geteuid() != 0:
        return "the private sshd needs root (its ChrootDirectory must be root-owned); run the tests as root"
    return None


def install() -> int:
    if installed():
        print(f"sshd: {SSHD} and the OpenSSH client are installed")
        return 0
    if os.geteuid() != 0:
        print(f"sshd: openssh-server is not installed.\n      run:  sudo {' '.join(INSTALL_CMD)}   (then: make test)",
              file=sys.stderr)
        return 69
    print(f"sshd: installing {' '.join(PACKAGES)} with apt-get (as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
    r = subprocess.run(INSTALL_CMD, env=env)
    if r.returncode != 0:
        print("sshd: apt-get update first?  apt-get update && " + " ".join(INSTALL_CMD), file=sys.stderr)
        r = subprocess.run(["apt-get", "update"], env=env)
        r = subprocess.run(INSTALL_CMD, env=env) if r.returncode == 0 else r
    if r.returncode != 0 or not installed():
        print("sshd: apt-get install openssh-server failed", file=sys.stderr)
        return 69
    return 0


def keygen(path: Path, comment: str = "jgw-test", kind: str = "ed25519") -> Path:
    """A fresh unencrypted key pair at ``path`` (mode 0600) and ``path.pub``; returns ``path``."""
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    subprocess.run([SSH_KEYGEN, "-q", "-t", kind, "-N", "", "-C", comment, "-f", str(path)], check=True,
                   stdout=subprocess.DEVNULL)
    os.chmod(path, 0o600)
    return path


def public_key(path: Path) -> str:
    return path.with_name(path.name + ".pub").read_text().strip()


def known_hosts_line(host: str, port: int, host_key: Path) -> str:
    kind, blob = public_key(host_key).split()[:2]
    where = host if port == 22 else f"[{host}]:{port}"
    return f"{where} {kind} {blob}\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc), deepest last."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def _sweep_stale() -> None:
    if not BASE.is_dir():
        return
    for d in BASE.iterdir():
        pid = d.name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            for m in mounts_under(d):
                subprocess.run(["umount", "-l", m], check=False)
            shutil.rmtree(d, ignore_errors=True)


def wait_banner(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None
                ) -> None:
    """Wait until something on ``port`` answers with an SSH identification string."""
    deadline = time.monotonic() + timeout
    last = "nothing yet"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"sshd exited with {proc.returncode}:\n{text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
                last = "no SSH banner"
        except OSError as exc:
            last = type(exc).__name__
        time.sleep(0.05)
    raise TimeoutError(f"sshd on port {port} did not answer within {timeout}s ({last})")


@dataclass
class PrivateSshd:
    """One private sshd (see the module docstring). Use as a context manager, or start()/destroy()."""

    user: str = "root"
    password_only: bool = False
    port: int = field(default_factory=free_port)
    base: Path = field(init=False)
    proc: subprocess.Popen[bytes] | None = field(init=False, default=None)
    _started: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if usable() is not None:
            raise RuntimeError(usable())
        BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(BASE, 0o755)
        _sweep_stale()
        self.base = BASE / f"{os.getpid()}-{next(_counter)}"
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(mode=0o755)
        os.chmod(self.base, 0o755)
        self.chroot.mkdir(mode=0o755)
        self.upload.mkdir(mode=0o755)
        self.authorized_keys.write_text("")
        keygen(self.host_key, "jgw-test-sshd-host")

    # files
    @property
    def config(self) -> Path:
        return self.base / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.base / "host_ed25519_key"

    @property
    def authorized_keys(self) -> Path:
        return self.base / "authorized_keys"

    @property
    def log(self) -> Path:
        return self.base / "sshd.log"

    @property
    def chroot(self) -> Path:
        return self.base / "chroot"

    @property
    def upload(self) -> Path:
        """The writable directory, as the local path (the client sees it as ``/upload``)."""
        return self.chroot / "upload"

    def authorize(self, client_key: Path) -> None:
        with self.authorized_keys.open("a") as f:
            f.write(public_key(client_key) + "\n")

    def known_hosts(self, path: Path) -> Path:
        """Write a known-hosts file pinning this server's current host key."""
        path.write_text(known_hosts_line("127.0.0.1", self.port, self.host_key))
        return path

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {self.base / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            f"PubkeyAuthentication {'no' if self.password_only else 'yes'}",
            f"PasswordAuthentication {'yes' if self.password_only else 'no'}",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "MaxStartups 100",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            f"Match User {self.user}",
            f"    ChrootDirectory {self.chroot}",
            "    ForceCommand internal-sftp",
            "",
        ]
        self.config.write_text("\n".join(lines))

    # lifecycle
    def start(self, timeout: float = 30.0) -> PrivateSshd:
        """Start in the foreground and wait for the SSH banner. Before the first start, a port taken
        meanwhile by someone else (free_port is only a guess) moves the instance to another port."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        for attempt in range(3):
            self._write_config()
            check = subprocess.run([str(SSHD), "-t", "-f", str(self.config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"sshd -t refused the config: {check.stderr.strip()}")
            mark = self.log.stat().st_size if self.log.exists() else 0
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.config)],
                                             stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            try:
                wait_banner(self.port, timeout, self.proc, self.log)
            except RuntimeError:
                self.proc = None
                taken = "Address already in use" in self.log.read_text(errors="replace")[mark:]
                if taken and not self._started and attempt < 2:
                    self.port = free_port()
                    continue
                raise
            self._started = True
            return self
        raise AssertionError("unreachable")

    def kill(self) -> None:
        """SIGKILL the listener and every session process at once (a crash, mid-transfer)."""
        if self.proc is None:
            return
        pids = [self.proc.pid, *_children(self.proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(10)
        self._wait_gone(pids)
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        sessions = _children(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._wait_gone(sessions)
        self.proc = None

    @staticmethod
    def _wait_gone(pids: Sequence[int], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while any(_alive(p) and not _zombie(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)

    def restart(self, *, new_host_key: bool = False) -> PrivateSshd:
        self.stop()
        if new_host_key:
            keygen(self.host_key, "jgw-test-sshd-host-new")
        return self.start()

    def destroy(self) -> None:
        self.stop()
        for m in mounts_under(self.base):
            subprocess.run(["umount", "-l", m], check=False)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PrivateSshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def openssh_sftp(port: int, key: Path, known_hosts: Path, commands: bytes | str, *, user: str = "root",
                 extra: Sequence[str] = (), cwd: Path | None = None, timeout: float = 60.0
                 ) -> subprocess.CompletedProcess[bytes]:
    """Run the real OpenSSH ``sftp`` client in batch mode with ``commands`` on its standard input."""
    data = commands.encode() if isinstance(commands, str) else commands
    argv = [SFTP, "-q", "-b", "-", "-F", "/dev/null", "-P", str(port), "-i", str(key),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=10", *extra,
            f"{user}@127.0.0.1"]
    return subprocess.run(argv, input=data, capture_output=True, cwd=cwd, timeout=timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab.sshd", description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install openssh-server/-client if missing")
    parser.add_argument("--check", action="store_true", help="start and stop one private sshd")
    args = parser.parse_args(argv)
    if args.install:
        rc = install()
        if rc:
            return rc
    if args.check:
        reason = usable()
        if reason:
            print(f"sshd: {reason}", file=sys.stderr)
            return 69
        with PrivateSshd() as sshd:
            print(f"sshd: a private sshd answered on 127.0.0.1:{sshd.port} ({sshd.base})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
