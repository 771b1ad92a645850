"""jgw's own SFTP endpoint: business systems push files into their route's spool directory.

One ``Account`` per business system: a login name, the public keys it may log in with (an OpenSSH
``authorized_keys`` file, read again at each login so a key rotation needs no restart), and one
directory, which is the route's spool (``spool.SpoolSource`` takes files from it by the route's
completion rule). Each session sees only its own directory, as ``/``: the path mapping is a virtual
chroot done here, in the daemon, for every request.

What a client may do, and nothing else: list ``/`` (regular files only), create, write, read back,
stat, set times on, rename and remove regular files directly in ``/``. Refused: names starting
with ``.jgw-`` (jgw's own temporaries, never taken by a completion rule), any path with a
directory component (so the spool's ``done/`` and ``quarantine/`` are out of reach), directories
(mkdir, rmdir, renaming or removing one), symbolic and hard links (creating or reading one; files
are opened with ``O_NOFOLLOW``), and every other channel: no shell, exec, scp, pty, X11, agent or
port forwarding, no tun/tap. Login is public-key only (no password, keyboard-interactive, GSSAPI
or host-based); an unknown user gets the same answer as a wrong key. Files are created mode 0640
whatever the client asks. A plain SFTP rename never replaces a name (as OpenSSH's link(2) and
unlink(2)); ``posix-rename@openssh.com``, which the OpenSSH ``sftp`` client uses for every rename,
replaces one of the account's own files, as OpenSSH's server does: a file jgw is reading at that
moment is then seen as changed and taken again. Closing a file written by a client fsyncs it, and a rename fsyncs the
directory: the client's "OK" is our acknowledgement, so it comes after the bytes are durable.

The host key file must be mode 0600 (``gateway.pki.files.check_key_mode``).

Security: faces business systems on the municipal network: hostile input (names, paths, sizes,
attributes). Runs in the daemon with its privileges; the virtual chroot is the only fence between
accounts, so every path goes through ``_Session.map_path``. asyncssh performs the file system calls
in the event loop thread (each bounded by the client's request size).
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from gateway.files.completion import JGW_TEMP_PREFIX
from gateway.files.names import check_name, fingerprint
from gateway.pki.files import check_key_mode

log = logging.getLogger("jgw.files.endpoint")

ACCOUNT_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
FILE_MODE = 0o640


@dataclass(frozen=True, slots=True)
class Account:
    """A business system's login: ``name``, its ``authorized_keys`` file, and its spool ``directory``."""

    name: str
    authorized_keys: Path
    directory: Path

    def __post_init__(self) -> None:
        if not ACCOUNT_RE.fullmatch(self.name):
            raise ValueError(f"account name {self.name!r}: lowercase letters, digits, '_' and '-', at most 32")


def _denied(what: str) -> asyncssh.SFTPPermissionDenied:
    return asyncssh.SFTPPermissionDenied(what)


class _Session(asyncssh.SFTPServer):
    """One SFTP session of one account; every client path is mapped (and refused) here."""

    def __init__(self, chan: asyncssh.SSHServerChannel[Any], accounts: Mapping[str, Account]) -> None:
        account = accounts.get(str(chan.get_extra_info("username")))
        if account is None:  # authenticated but unknown: cannot happen, refuse everything
            raise asyncssh.SFTPPermissionDenied("no such account")
        self.account = account
        self._root = os.fsencode(os.path.realpath(account.directory))
        self._writing: set[int] = set()
        super().__init__(chan, chroot=None)

    # -- paths ------------------------------------------------------------------------------------
    def _name(self, path: bytes) -> bytes | None:
        """The one file name ``path`` designates in the account's directory, or None for the root."""
        norm = posixpath.normpath(posixpath.join(b"/", path))
        if norm == b"/":
            return None
        name = norm[1:]
        if b"/" in name:
            raise _denied("only files directly in the home directory")
        check_name(name)
        if name.startswith(JGW_TEMP_PREFIX):
            raise _denied("names starting with .jgw- are reserved")
        return name

    def map_path(self, path: bytes) -> bytes:
        name = self._name(path)
        return self._root if name is None else posixpath.join(self._root, name)

    def reverse_map_path(self, path: bytes) -> bytes:
        if path == self._root:
            return b"/"
        if path.startswith(self._root + b"/"):
            return path[len(self._root):]
        raise _denied("outside the home directory")

    def _file(self, path: bytes) -> bytes:
        """The local path of a file (never the root directory, never a link or directory if it exists)."""
        name = self._name(path)
        if name is None:
            raise _denied("the home directory itself")
        local = posixpath.join(self._root, name)
        try:
            st = os.lstat(local)
        except FileNotFoundError:
            return local
        if not stat.S_ISREG(st.st_mode):
            raise _denied("not a regular file")
        return local

    # -- files ------------------------------------------------------------------------------------
    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        local = self._file(path)
        writing = bool(pflags & (asyncssh.FXF_WRITE | asyncssh.FXF_APPEND))
        flags = os.O_RDWR if pflags & asyncssh.FXF_READ and writing else os.O_WRONLY if writing else os.O_RDONLY
        flags |= os.O_NOFOLLOW | os.O_CLOEXEC
        for bit, flag in ((asyncssh.FXF_APPEND, os.O_APPEND), (asyncssh.FXF_CREAT, os.O_CREAT),
                          (asyncssh.FXF_TRUNC, os.O_TRUNC), (asyncssh.FXF_EXCL, os.O_EXCL)):
            if pflags & bit:
                flags |= flag
        fd = os.open(local, flags, FILE_MODE)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _denied("not a regular file")
        mode = ("r+b" if flags & os.O_RDWR else "ab" if flags & os.O_APPEND else "wb") if writing else "rb"
        f = os.fdopen(fd, mode, buffering=0)
        if writing:
            self._writing.add(id(f))
            log.debug("endpoint.upload.open", extra={"account": self.account.name,
                                                      "file": fingerprint(os.path.basename(local))})
        return f

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs) -> object:
        raise asyncssh.SFTPOpUnsupported("SFTP v3 only")

    def close(self, file_obj: object) -> None:
        f: Any = file_obj
        try:
            if id(f) in self._writing:
                self._writing.discard(id(f))
                os.fsync(f.fileno())
        finally:
            f.close()

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._file(path)
        super().setstat(path, _times_and_size(attrs))

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self.setstat(path, attrs)

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        super().fsetstat(file_obj, _times_and_size(attrs))

    def lstat(self, path: bytes) -> os.stat_result:
        """The root, or a regular file; anything else (``done/``, a link) is reported as absent."""
        local = self.map_path(path)
        st = os.lstat(local)
        if local != self._root and not stat.S_ISREG(st.st_mode):
            raise asyncssh.SFTPNoSuchFile("no such file")
        return st

    def stat(self, path: bytes) -> os.stat_result:
        """Like lstat: a link is never followed, not even to report on it."""
        return self.lstat(path)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        if self._name(path) is not None:
            raise _denied("only the home directory can be listed")
        with os.scandir(self._root) as it:
            entries = [e for e in it if e.is_file(follow_symlinks=False)]
        for e in sorted(entries, key=lambda e: e.name):
            yield asyncssh.SFTPName(e.name, attrs=asyncssh.SFTPAttrs.from_local(e.stat(follow_symlinks=False)))

    def remove(self, path: bytes) -> None:
        local = self._file(path)
        os.unlink(local)
        _fsync_dir(self._root)

    def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._file(oldpath), self._file(newpath)
        if not os.path.lexists(old):
            raise asyncssh.SFTPNoSuchFile("no such file")
        os.link(old, new, follow_symlinks=False)  # fails if the new name exists (SFTP v3 rename)
        os.unlink(old)
        _fsync_dir(self._root)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        old, new = self._file(oldpath), self._file(newpath)
        os.replace(old, new)
        _fsync_dir(self._root)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise _denied("no directories")

    def rmdir(self, path: bytes) -> None:
        raise _denied("no directories")

    def readlink(self, path: bytes) -> bytes:
        raise _denied("no links")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise _denied("no links")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise _denied("no links")


def _times_and_size(attrs: asyncssh.SFTPAttrs) -> asyncssh.SFTPAttrs:
    """Only times and size may be set by a client (not mode, owner or group)."""
    return asyncssh.SFTPAttrs(size=attrs.size, atime=attrs.atime, mtime=attrs.mtime, atime_ns=attrs.atime_ns,
                              mtime_ns=attrs.mtime_ns)


def _fsync_dir(path: bytes) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Server(asyncssh.SSHServer):
    """Login policy: public key of the named account, nothing else; no forwarding of any kind."""

    def __init__(self, accounts: Mapping[str, Account]) -> None:
        self._accounts = accounts
        self._conn: asyncssh.SSHServerConnection | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn

    def begin_auth(self, username: str) -> bool:
        account = self._accounts.get(username)
        assert self._conn is not None
        if account is None:
            return True
        try:
            self._conn.set_authorized_keys(asyncssh.read_authorized_keys(str(account.authorized_keys)))
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            log.warning("endpoint.authorized_keys.unreadable",
                        extra={"account": account.name, "error": type(exc).__name__})
        return True

    def auth_completed(self) -> None:
        assert self._conn is not None
        peer = self._conn.get_extra_info("peername") or ("?", 0)
        log.info("endpoint.login", extra={"account": self._conn.get_extra_info("username"), "peer": peer[0]})

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # keys not in the account's authorized_keys (asyncssh checks those first)

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def session_requested(self) -> bool:
        return False

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> bool:
        return False

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def tun_requested(self, unit: int | None) -> bool:
        return False

    def tap_requested(self, unit: int | None) -> bool:
        return False


class Endpoint:
    """The SFTP server. ``await start()`` listens; ``port`` is the bound port (useful with port 0)."""

    def __init__(self, *, host_key: Path, accounts: Sequence[Account], host: str = "127.0.0.1", port: int = 22,
                 login_timeout: float = 30.0, keepalive_interval: float = 60.0) -> None:
        names = [a.name for a in accounts]
        if len(set(names)) != len(names):
            raise ValueError("account names must be unique")
        self.host_key = Path(host_key)
        self.accounts = {a.name: a for a in accounts}
        self.host = host
        self.port = port
        self.login_timeout = login_timeout
        self.keepalive_interval = keepalive_interval
        self._acceptor: asyncssh.SSHAcceptor | None = None

    def __repr__(self) -> str:
        state = "listening" if self._acceptor else "stopped"
        return f"Endpoint({self.host}:{self.port}, accounts={sorted(self.accounts)}, {state})"

    async def start(self) -> None:
        check_key_mode(self.host_key)
        for account in self.accounts.values():
            if not account.directory.is_dir():
                raise FileNotFoundError(f"spool directory of account {account.name} is missing: {account.directory}")
        key = asyncssh.read_private_key(str(self.host_key))
        accounts = self.accounts
        self._acceptor = await asyncssh.listen(
            self.host, self.port, config=None, server_factory=lambda: _Server(accounts), server_host_keys=[key],
            sftp_factory=lambda chan: _Session(chan, accounts), sftp_version=3, allow_scp=False,
            process_factory=None, session_factory=None, agent_forwarding=False, x11_forwarding=False,
            allow_pty=False, password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
            host_based_auth=False, public_key_auth=True, login_timeout=self.login_timeout,
            keepalive_interval=self.keepalive_interval)
        self.port = self._acceptor.get_port()
        log.info("endpoint.listening", extra={"host": self.host, "port": self.port, "accounts": len(accounts)})

    async def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None

    async def __aenter__(self) -> Endpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
