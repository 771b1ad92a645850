"""Files on a business system's SFTP server (OpenSSH in practice): ``SftpSource`` and ``SftpSink`` over
one ``SftpLink`` (an asyncssh client connection, opened on first use and again after a failure).

The link. The server's host key is pinned: it must be in the route's known-hosts file (OpenSSH
format, ``[host]:port`` for a port other than 22). A server presenting no pinned key is refused as
``host-key-unknown`` (the file has no entry for it) or ``host-key-changed`` (it has one, and the
server's key is another: all key types are offered in the handshake, so a server that changed key
type is also "changed", not a negotiation failure). jgw's client key file must be mode 0600
(``gateway.pki.files.check_key_mode``, checked before it is read) and unencrypted. Public-key login
only: no password, keyboard-interactive, GSSAPI or host-based login, no agent, no agent/X11/port
forwarding, no ``~/.ssh/config``, and a server that would let us in without checking our key is
refused too (``disable_trivial_auth``). Every asyncssh or socket exception is translated once, in
``SftpLink.call``; a lost connection marks the link down and the next call reconnects.

Source. ``scan`` reads the directory (OpenSSH lists with lstat, so links show as links and are
refused by the completion rule; whether one leads out of the directory is asked with realpath).
``open`` opens the file, checks its size and mtime against the listing, streams it in
``block_size`` reads (asyncssh pipelines each read in server-sized requests), then stats the open
handle and the name again: a change raises ``FileChanged`` and the file stays. SFTP v3 has no inode
and whole-second mtimes, so a file replaced by one of the same size within the same second is not
seen as changed: the completion rule is what protects against that. ``finish`` re-checks size and
mtime, then renames the file and its companions into the kept subdirectory (never over a name:
``NAME``, ``NAME.1``, ...) or removes them.

Sink. ``begin`` creates ``.jgw-<random>.part`` in the directory (exclusive create); ``write``
writes at increasing offsets and hashes what it sent; ``commit`` checks size and SHA-256 of what
was sent, sets the mtime, asks the server to fsync (``fsync@openssh.com``, where offered), closes,
then **verifies before the rename**: ``verify="readback"`` (default) reads the temporary file back
and hashes it, ``verify="size"`` only stats it. OpenSSH offers no ``check-file`` extension (and
asyncssh no client for it), so a server-side digest is not available; re-reading costs a second
transfer, which is why ``size`` exists for routes where SSH's own integrity (every packet MACed)
plus the size is judged enough. Only then is the file renamed into place with the **plain SFTP
rename**, not ``posix-rename@openssh.com``: OpenSSH implements the plain rename with link(2) and
unlink(2), which is atomic *and* fails when the target exists, while posix-rename would silently
replace a file that appeared under the name after our check. A failed rename with the name now
taken is settled by digest: same bytes = ``ALREADY_PRESENT``, other bytes = ``Conflict``. A
partial file never appears under its final name. A crash or a cut link leaves at most a
``.jgw-*.part`` file: on each new connection the sink removes those older than ``sweep_after``
seconds (by our clock against the server's mtimes: keep it well above any clock skew).

Write failures: SFTP v3 reports a full disk as a plain "Failure"; the sink then asks
``statvfs@openssh.com`` and reports ``disk-full`` when no space is left, else ``io-error``; both
transient.

Security: talks to a business system's SFTP server over SSH; trusts nothing it lists or returns
(names are bytes, checked; sizes and mtimes are compared, never believed). Holds jgw's client key
in memory. Error details never carry remote status texts, names or paths inside the directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import posixpath
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import asyncssh

from gateway.files.adapter import (
    FileRef,
    FileSink,
    FileSource,
    Outcome,
    PutResult,
    Refused,
    Scan,
    SinkBase,
    Upload,
    end_after_failure,
)
from gateway.files.completion import JGW_TEMP_PREFIX, Entry, Rule, Tracker
from gateway.files.errors import (
    Conflict,
    FileChanged,
    FileError,
    HostKeyRefused,
    IntegrityError,
    LinkError,
    LinkRefused,
    StorageError,
)
from gateway.files.names import check_name, is_safe
from gateway.files.spool import check_subdir
from gateway.pki.errors import CertificateError, KeyFileModeError
from gateway.pki.files import check_key_mode

DEFAULT_BLOCK_BYTES = 1024 * 1024
TEMP_SUFFIX = b".part"
LinkState = Literal["down", "up"]


@dataclass(frozen=True, slots=True)
class SftpPeer:
    """Where and how to log in. ``known_hosts`` pins the server's key; ``client_key`` is jgw's (0600)."""

    host: str
    port: int
    username: str
    client_key: Path
    known_hosts: Path
    connect_timeout: float = 15.0
    keepalive_interval: float = 30.0
    keepalive_count_max: int = 3

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def _mtime_ns(attrs: asyncssh.SFTPAttrs) -> int:
    return int(attrs.mtime or 0) * 1_000_000_000 + int(attrs.mtime_ns or 0)


def _is_regular(attrs: asyncssh.SFTPAttrs) -> bool:
    return attrs.permissions is not None and stat.S_ISREG(attrs.permissions)


def _same(ref: FileRef, attrs: asyncssh.SFTPAttrs) -> bool:
    return _is_regular(attrs) and attrs.size == ref.size and _mtime_ns(attrs) == ref.mtime_ns


def ip_or_empty(host: str) -> str:
    """``host`` when it is an IP address, else "" (asyncssh matches known hosts by name and by address,
    and refuses a name where an address belongs)."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ""
    return host


def translate(exc: BaseException, what: str, *, missing: str = "io-error") -> FileError:
    """The FileError for an asyncssh or socket exception met while doing ``what`` (no names in it).
    ``missing`` says what "no such file" means here (``file-vanished`` for a source)."""
    kind = type(exc).__name__
    if isinstance(exc, asyncssh.SFTPNoSuchFile | asyncssh.SFTPNoSuchPath):
        if missing == "file-vanished":
            return FileChanged("file-vanished", f"{what}: no such file")
        return StorageError("io-error", f"{what}: no such file or directory")
    if isinstance(exc, asyncssh.SFTPPermissionDenied | asyncssh.SFTPWriteProtect):
        return StorageError("permission-denied", f"{what}: permission denied by the server")
    if isinstance(exc, asyncssh.SFTPNoSpaceOnFilesystem | asyncssh.SFTPQuotaExceeded):
        return StorageError("disk-full", f"{what}: {kind}")
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return LinkError("unavailable", f"{what}: connection lost")
    if isinstance(exc, asyncssh.SFTPOpUnsupported | asyncssh.SFTPBadMessage):
        return LinkError("protocol-error", f"{what}: {kind}")
    if isinstance(exc, asyncssh.SFTPError):
        return StorageError("io-error", f"{what}: the server answered {kind}")
    if isinstance(exc, asyncssh.PermissionDenied):
        return LinkRefused("auth-refused", f"{what}: the server refused public-key login")
    if isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError | OSError | TimeoutError):
        return LinkError("unavailable", f"{what}: {kind}")
    return LinkError("protocol-error", f"{what}: unexpected {kind}")


class SftpLink:
    """One SSH connection with an SFTP session to one peer; ``state`` and ``generation`` are visible."""

    def __init__(self, peer: SftpPeer) -> None:
        self.peer = peer
        self.state: LinkState = "down"
        self.generation = 0
        self.last_error: FileError | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        why = f", last_error={self.last_error.reason}" if self.last_error else ""
        return f"SftpLink({self.peer.username}@{self.peer.where}, {self.state}, generation={self.generation}{why})"

    def _client_key(self) -> asyncssh.SSHKey:
        path = self.peer.client_key
        try:
            check_key_mode(path)
        except KeyFileModeError as exc:
            raise LinkRefused("key-mode", f"client key {path} is mode {exc.mode & 0o777:04o}, readable beyond "
                                          f"its owner; run: chmod 600 {path}") from exc
        except CertificateError as exc:
            raise LinkRefused("key-unreadable", f"client key {path}: {exc.reason}") from exc
        try:
            return asyncssh.read_private_key(str(path))
        except (asyncssh.KeyImportError, OSError, ValueError) as exc:
            raise LinkRefused("key-unreadable", f"client key {path}: not an unencrypted OpenSSH or PKCS#8 "
                                                f"private key") from exc

    def _known_hosts(self) -> tuple[asyncssh.SSHKnownHosts, bool]:
        """The pinned keys, and whether any of them is for this host and port."""
        path = self.peer.known_hosts
        try:
            known = asyncssh.read_known_hosts(str(path))
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            raise HostKeyRefused("host-key-unknown", f"{self.peer.where}: known-hosts file {path} cannot be read "
                                                     f"({type(exc).__name__})") from exc
        keys, ca_keys, *_ = asyncssh.match_known_hosts(known, self.peer.host, ip_or_empty(self.peer.host),
                                                       self.peer.port)
        return known, bool(keys or ca_keys)

    async def _connect(self) -> asyncssh.SFTPClient:
        peer = self.peer
        key = self._client_key()
        known, pinned = self._known_hosts()
        conn: asyncssh.SSHClientConnection | None = None
        try:
            async with asyncio.timeout(peer.connect_timeout * 2):
                conn = await asyncssh.connect(
                    peer.host, peer.port, username=peer.username, config=None, known_hosts=known,
                    server_host_key_algs="default", client_keys=[key], agent_path=None, agent_forwarding=False,
                    password=None, password_auth=False, kbdint_auth=False, gss_auth=False, gss_kex=False,
                    host_based_auth=False, public_key_auth=True, preferred_auth="publickey",
                    disable_trivial_auth=True, x11_forwarding=False, connect_timeout=peer.connect_timeout,
                    keepalive_interval=peer.keepalive_interval, keepalive_count_max=peer.keepalive_count_max)
                sftp = await conn.start_sftp_client(path_encoding=None)
        except asyncssh.HostKeyNotVerifiable as exc:
            reason = "host-key-changed" if pinned else "host-key-unknown"
            text = ("presented a key other than the one pinned for it" if pinned else
                    "has no key in the known-hosts file")
            raise HostKeyRefused(reason, f"{peer.where} {text} ({peer.known_hosts})") from exc
        except asyncssh.PermissionDenied as exc:
            raise LinkRefused("auth-refused", f"{peer.username}@{peer.where} refused jgw's public key "
                                              f"(or offers no public-key login)") from exc
        except asyncssh.KeyExchangeFailed as exc:
            raise LinkError("protocol-error", f"{peer.where}: key exchange failed (no common algorithm)") from exc
        except BaseException as exc:
            if conn is not None:
                conn.abort()
            if isinstance(exc, asyncssh.Error | OSError | TimeoutError):
                raise translate(exc, f"connect to {peer.where}") from exc
            raise
        self._conn, self._sftp = conn, sftp
        self.state = "up"
        self.generation += 1
        self.last_error = None
        return sftp

    async def sftp(self) -> asyncssh.SFTPClient:
        """The SFTP session, connecting first if the link is down."""
        async with self._lock:
            if self._sftp is not None:
                return self._sftp
            try:
                return await self._connect()
            except FileError as exc:
                self.last_error = exc
                raise

    async def reset(self, error: FileError | None = None) -> None:
        """Drop the connection (after a link failure); the next call reconnects."""
        conn, self._conn, self._sftp = self._conn, None, None
        self.state = "down"
        if error is not None:
            self.last_error = error
        if conn is not None:
            conn.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5)

    @contextlib.asynccontextmanager
    async def call(self, what: str, *, missing: str = "io-error") -> AsyncIterator[asyncssh.SFTPClient]:
        """The one place SFTP exceptions become FileErrors; a link fault also takes the link down."""
        sftp = await self.sftp()
        try:
            yield sftp
        except FileError:
            raise
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            err = translate(exc, what, missing=missing)
            if isinstance(err, LinkError):
                await self.reset(err)
            raise err from exc

    async def close(self) -> None:
        await self.reset()


def _bytes(data: bytes | str) -> bytes:
    if not isinstance(data, bytes):  # files are opened "rb": asyncssh returns bytes
        raise TypeError("binary read returned text")
    return data


def _join(directory: bytes, name: bytes) -> bytes:
    return posixpath.join(directory, name)


async def _remote_sha256(link: SftpLink, path: bytes, block: int, what: str) -> tuple[int, str]:
    h = hashlib.sha256()
    total = 0
    async with link.call(what) as sftp:
        f = await sftp.open(path, "rb", block_size=-1)
    try:
        while True:
            async with link.call(what):
                data = _bytes(await f.read(block, total))
            if not data:
                break
            h.update(data)
            total += len(data)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(f.close())
    return total, h.hexdigest()


class SftpSource:
    """Takes complete files from a directory on an SFTP server (see the module docstring)."""

    def __init__(self, link: SftpLink, directory: bytes | str, rule: Rule, *,
                 block_size: int = DEFAULT_BLOCK_BYTES, clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.directory = directory if isinstance(directory, bytes) else directory.encode()
        self.block_size = block_size
        self._tracker = Tracker(rule)
        self._clock = clock

    def __repr__(self) -> str:
        return f"SftpSource({self.link!r}, {self.directory!r}, {self._tracker.rule!r})"

    async def _leaves(self, sftp: asyncssh.SFTPClient, name: bytes) -> bool | None:
        try:
            base = await sftp.realpath(self.directory)
            target = await sftp.realpath(_join(self.directory, name))
            await sftp.stat(target)
        except asyncssh.SFTPError:
            return None
        return not target.startswith(base.rstrip(b"/") + b"/")

    async def scan(self) -> Scan:
        entries: list[Entry] = []
        async with self.link.call("list the remote directory") as sftp:
            for item in await sftp.readdir(self.directory):
                name = item.filename
                assert isinstance(name, bytes)
                attrs = item.attrs
                link = attrs.permissions is not None and stat.S_ISLNK(attrs.permissions)
                leaves = await self._leaves(sftp, name) if link and is_safe(name) else None
                entries.append(Entry(name, int(attrs.size or 0), _mtime_ns(attrs), _is_regular(attrs), link, leaves))
        decision = self._tracker.observe(entries, self._clock())
        ready = tuple(FileRef(r.entry.name, r.entry.size, r.entry.mtime_ns, r.companions) for r in decision.ready)
        waiting = tuple(FileRef(e.name, e.size, e.mtime_ns) for e in decision.waiting)
        refused = tuple(Refused(e.name, err, FileRef(e.name, e.size, e.mtime_ns) if is_safe(e.name) else None)
                        for e, err in decision.refused)
        return Scan(ready, waiting, refused)

    async def open(self, ref: FileRef) -> AsyncIterator[bytes]:
        check_name(ref.name)
        path = _join(self.directory, ref.name)
        async with self.link.call("open a remote file", missing="file-vanished") as sftp:
            f = await sftp.open(path, "rb", block_size=-1)
        try:
            async with self.link.call("stat a remote file", missing="file-vanished"):
                before = await f.stat()
            if not _same(ref, before):
                raise FileChanged("file-changed", "size or mtime differ from the listing")
            total = 0
            while True:
                async with self.link.call("read a remote file", missing="file-vanished"):
                    data = _bytes(await f.read(self.block_size, total))
                if not data:
                    break
                total += len(data)
                if total > ref.size:
                    raise FileChanged("file-changed", f"grew past its listed size of {ref.size} bytes")
                yield data
            async with self.link.call("stat a remote file", missing="file-vanished") as sftp:
                after = await f.stat()
                named = await sftp.lstat(path)
            if total != ref.size or not _same(ref, after) or not _same(ref, named):
                raise FileChanged("file-changed", f"changed while being read ({total} of {ref.size} bytes read)")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(f.close())

    async def _ensure_dir(self, sub: bytes) -> None:
        async with self.link.call("create the kept subdirectory") as sftp:
            if not await sftp.isdir(sub):
                with contextlib.suppress(asyncssh.SFTPFailure):
                    await sftp.mkdir(sub, asyncssh.SFTPAttrs(permissions=0o750))

    async def _move_aside(self, name: bytes, sub: bytes) -> None:
        src = _join(self.directory, name)
        for i in range(1000):
            candidate = name if i == 0 else name + b".%d" % i
            async with self.link.call("move a remote file aside", missing="file-vanished") as sftp:
                if await sftp.exists(_join(sub, candidate)):
                    continue
                try:
                    await sftp.rename(src, _join(sub, candidate))
                except asyncssh.SFTPFailure:
                    if await sftp.exists(_join(sub, candidate)):
                        continue
                    raise
                return
        raise StorageError("io-error", "a thousand files of that name are kept already")

    async def finish(self, ref: FileRef, *, keep_in: str | None) -> None:
        check_name(ref.name)
        async with self.link.call("check a remote file before finishing", missing="file-vanished") as sftp:
            st = await sftp.lstat(_join(self.directory, ref.name))
        is_link = st.permissions is not None and stat.S_ISLNK(st.permissions)
        if not is_link and not _same(ref, st):
            raise FileChanged("file-changed", "replaced or modified after it was read; left in place")
        sub = None
        if keep_in is not None:
            sub = _join(self.directory, check_subdir(keep_in))
            await self._ensure_dir(sub)
        for name in (ref.name, *ref.companions):
            try:
                if sub is None:
                    async with self.link.call("remove a remote file", missing="file-vanished") as sftp:
                        await sftp.remove(_join(self.directory, name))
                else:
                    await self._move_aside(name, sub)
            except FileChanged:
                if name == ref.name:
                    raise
        self._tracker.forget(ref.name)

    async def close(self) -> None:
        await self.link.close()


class SftpUpload:
    """One file being written to an ``SftpSink`` directory under a temporary name."""

    def __init__(self, sink: SftpSink, temp: bytes, f: asyncssh.SFTPClientFile) -> None:
        self._sink = sink
        self.temp = temp
        self._f: asyncssh.SFTPClientFile | None = f
        self._hash = hashlib.sha256()
        self.written = 0
        self._done = False
        #: keep the temporary file when a write fails transiently (see ``end_after_failure``)
        self.keep = False

    def __repr__(self) -> str:
        return f"SftpUpload({self.temp.decode()}, written={self.written})"

    @property
    def _path(self) -> bytes:
        return _join(self._sink.directory, self.temp)

    async def write(self, data: bytes) -> None:
        if self._f is None:
            raise RuntimeError("write after commit or abort")
        try:
            try:
                async with self._sink.link.call("write the remote temporary file"):
                    await self._f.write(data, self.written)
            except StorageError as exc:
                raise await self._sink.refine(exc, len(data)) from exc
            self._hash.update(data)
            self.written += len(data)
        except BaseException as exc:
            await asyncio.shield(end_after_failure(self, exc))
            raise

    async def flush(self) -> None:
        if self._f is None:
            raise RuntimeError("flush after commit or abort")
        try:
            async with self._sink.link.call("fsync the remote temporary file"):
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await self._f.fsync()
        except BaseException as exc:
            await asyncio.shield(end_after_failure(self, exc))
            raise

    async def release(self) -> None:
        """Close without removing the temporary file (it can be resumed: ``SftpSink.resume``)."""
        if self._done:
            return
        self._done = True
        f, self._f = self._f, None
        with contextlib.suppress(Exception):
            if f is not None:
                await asyncio.wait_for(f.close(), 10)

    async def abort(self) -> None:
        if self._done:
            return
        await self.release()
        with contextlib.suppress(Exception):
            if self._sink.link.state == "up":
                sftp = await self._sink.link.sftp()
                await asyncio.wait_for(sftp.remove(self._path), 10)

    async def _commit(self, name: bytes, size: int, sha256: str | None, mtime_ns: int) -> PutResult:
        assert self._f is not None
        check_name(name)
        link, sink = self._sink.link, self._sink
        digest = self._hash.hexdigest()
        if self.written != size:
            raise IntegrityError("size-mismatch", f"{self.written} bytes sent, {size} announced")
        if sha256 is not None and digest != sha256.lower():
            raise IntegrityError("digest-mismatch", f"sha256 {digest[:12]}.. sent, {sha256[:12]}.. announced")
        f, self._f = self._f, None
        async with link.call("finish the remote temporary file"):
            try:
                await f.utime(ns=(mtime_ns, mtime_ns))
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await f.fsync()
            finally:
                await f.close()
        if sink.verify == "readback":
            got_size, got = await _remote_sha256(link, self._path, sink.block_size, "read back the remote file")
            if got_size != size or got != digest:
                raise IntegrityError("digest-mismatch", f"read back {got_size} bytes, sha256 {got[:12]}.., sent "
                                                        f"{size} bytes, {digest[:12]}..")
            how = "sha256 read back before rename; size after rename"
        else:
            async with link.call("stat the remote temporary file") as sftp:
                got_size = int((await sftp.stat(self._path)).size or 0)
            if got_size != size:
                raise IntegrityError("size-mismatch", f"the server holds {got_size} bytes, {size} were sent")
            how = "size before and after rename (SSH MACs cover the transfer)"
        final = _join(sink.directory, name)
        async with link.call("rename the remote file into place") as sftp:
            try:
                await sftp.rename(self._path, final)
            except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
                if not await sftp.exists(final):
                    raise
                existing = await sink.compare(name, size, digest)
                await self.abort()
                return existing
            self._done = True
            st = await sftp.lstat(final)
        if not _is_regular(st) or st.size != size:
            raise IntegrityError("size-mismatch", f"the final name holds {st.size} bytes, {size} were sent")
        return PutResult(Outcome.DELIVERED, name, size, digest, how)

    async def commit(self, name: bytes, *, size: int, sha256: str | None, mtime_ns: int) -> PutResult:
        if self._f is None:
            raise RuntimeError("commit after commit or abort")
        try:
            return await self._commit(name, size, sha256, mtime_ns)
        except BaseException as exc:
            await asyncio.shield(end_after_failure(self, exc))
            raise


class SftpSink(SinkBase):
    """Delivers files into a directory on an SFTP server atomically (see the module docstring)."""

    def __init__(self, link: SftpLink, directory: bytes | str, *, verify: Literal["readback", "size"] = "readback",
                 mode: int = 0o640, sweep_after: float = 3600.0, block_size: int = DEFAULT_BLOCK_BYTES) -> None:
        if verify not in ("readback", "size"):
            raise ValueError("verify is 'readback' or 'size'")
        self.link = link
        self.directory = directory if isinstance(directory, bytes) else directory.encode()
        self.verify = verify
        self.mode = mode
        self.sweep_after = sweep_after
        self.block_size = block_size
        self._swept_generation = 0

    def __repr__(self) -> str:
        return f"SftpSink({self.link!r}, {self.directory!r}, verify={self.verify})"

    async def refine(self, exc: StorageError, wanted: int) -> StorageError:
        """SFTP v3 says "Failure" for a full disk: ask statvfs, where offered, whether space is left."""
        if exc.reason != "io-error":
            return exc
        with contextlib.suppress(Exception):
            sftp = await self.link.sftp()
            vfs = await sftp.statvfs(self.directory)
            if vfs.bavail * vfs.frsize < max(wanted, 1):
                return StorageError("disk-full", "the server's file system has no space left (statvfs)")
        return exc

    async def compare(self, name: bytes, size: int, sha256: str) -> PutResult:
        final = _join(self.directory, name)
        async with self.link.call("check an existing remote file") as sftp:
            st = await sftp.lstat(final)
        if not _is_regular(st):
            raise Conflict("the name is taken by something that is not a regular file")
        if st.size != size:
            raise Conflict(f"a different file holds the name (size {st.size}, announced {size})")
        _, digest = await _remote_sha256(self.link, final, self.block_size, "read an existing remote file")
        if digest != sha256.lower():
            raise Conflict(f"a different file holds the name (sha256 {digest[:12]}.., announced {sha256[:12]}..)")
        return PutResult(Outcome.ALREADY_PRESENT, name, size, digest, "sha256 of the existing file read back")

    async def present(self, name: bytes, size: int, sha256: str) -> PutResult | None:
        check_name(name)
        async with self.link.call("check for an existing remote file") as sftp:
            if not await sftp.exists(_join(self.directory, name)):
                return None
        return await self.compare(name, size, sha256)

    async def sweep(self) -> int:
        """Remove jgw temporaries older than ``sweep_after`` (left by a crash or a cut link)."""
        removed = 0
        limit = time.time() - self.sweep_after
        async with self.link.call("sweep remote temporary files") as sftp:
            for item in await sftp.readdir(self.directory):
                name = item.filename
                assert isinstance(name, bytes)
                if (name.startswith(JGW_TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and _is_regular(item.attrs)
                        and (item.attrs.mtime or 0) <= limit):
                    with contextlib.suppress(asyncssh.SFTPError):
                        await sftp.remove(_join(self.directory, name))
                        removed += 1
        return removed

    async def resume(self, temp: bytes, lengths: Sequence[int], digests: Sequence[str]) -> SftpUpload | None:
        if not (temp.startswith(JGW_TEMP_PREFIX) and temp.endswith(TEMP_SUFFIX)) or b"/" in temp:
            raise ValueError("not a jgw temporary name")
        path = _join(self.directory, temp)
        offset = sum(lengths)
        async with self.link.call("reopen the remote temporary file") as sftp:
            try:
                st = await sftp.lstat(path)
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return None
            if not _is_regular(st) or int(st.size or 0) < offset:
                return None
            f = await sftp.open(path, "r+b", block_size=-1)
        try:
            whole = hashlib.sha256()
            pos = 0
            async with self.link.call("resume the remote temporary file"):
                await f.truncate(offset)
                for length, digest in zip(lengths, digests, strict=True):
                    data = _bytes(await f.read(length, pos))
                    if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
                        await f.close()
                        return None
                    whole.update(data)
                    pos += length
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(f.close())
            raise
        upload = SftpUpload(self, temp, f)
        upload._hash = whole
        upload.written = offset
        return upload

    async def discard(self, temp: bytes) -> None:
        if not (temp.startswith(JGW_TEMP_PREFIX) and temp.endswith(TEMP_SUFFIX)) or b"/" in temp:
            raise ValueError("not a jgw temporary name")
        with contextlib.suppress(Exception):
            async with self.link.call("remove a remote temporary file") as sftp:
                await sftp.remove(_join(self.directory, temp))

    async def begin(self) -> SftpUpload:
        await self.link.sftp()
        if self._swept_generation != self.link.generation:
            await self.sweep()
            self._swept_generation = self.link.generation
        temp = JGW_TEMP_PREFIX + secrets.token_hex(12).encode() + TEMP_SUFFIX
        async with self.link.call("create the remote temporary file") as sftp:
            f = await sftp.open(_join(self.directory, temp), "xb", asyncssh.SFTPAttrs(permissions=self.mode),
                                block_size=-1)
        return SftpUpload(self, temp, f)

    async def close(self) -> None:
        await self.link.close()


if TYPE_CHECKING:  # mypy holds the classes to the seam's protocols
    def _protocols(a: SftpSource, b: SftpSink, c: SftpUpload) -> tuple[FileSource, FileSink, Upload]:
        return a, b, c
