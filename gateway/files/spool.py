"""A spool directory on the appliance's own disk, as a file source (``SpoolSource``) and sink (``SpoolSink``).

Postfix's rule, applied to files: a file's state is the directory it is in, and a move is a rename.
The source directory holds files being written and complete ones; ``done/`` (or another subdirectory
the route names, such as ``quarantine/``) holds what jgw has finished with; nothing is ever deleted
unless the route says ``remove``.

Source. ``scan`` lists the directory without following links (``lstat``) and lets the route's
completion rule (``completion``) say which files are ready. ``open`` opens by name relative to the
directory's descriptor with ``O_NOFOLLOW``, checks the file is still the one listed (device, inode,
size, mtime, ctime), streams it in ``block_size`` blocks, and after the last block compares the open
file and the name again: a file that changed while being read raises ``FileChanged`` and stays
where it is, so it is taken again, whole, by a later scan. ``finish`` re-checks that identity, then
moves the file and its companions (trigger files) into the kept subdirectory (never over an
existing name: ``NAME``, else ``NAME.1``, ``NAME.2``, ...) or removes them, and fsyncs the directories.

Sink. ``begin`` creates ``.jgw-<random>.part`` (``O_EXCL|O_NOFOLLOW``, mode 0640) in the target
directory; ``write`` appends and hashes; ``commit`` checks size and SHA-256 against what was
announced, sets the mtime, fsyncs the file, then places it with ``link(2)`` (atomic, and fails
rather than replace an existing name), unlinks the temporary name and fsyncs the directory. The
check after placement is that the final name now points to our inode with the announced size: the
SHA-256 was computed over exactly the bytes written to that inode, so re-reading it would only
re-read the page cache. An existing name with the same size and digest is ``ALREADY_PRESENT``; with
other bytes it is a ``Conflict`` (never overwritten). A partial file never appears under its final
name; a crash leaves at most a ``.jgw-*.part`` file, which ``sweep`` (run at start) removes once its
ctime is older than ``sweep_after`` seconds. File systems without hard links fall back to
"``lstat`` says absent, then ``rename(2)``" (atomic, but racy against another writer of the same name).

Security: reads files written by business systems (through jgw's endpoint or a shared disk);
trusts nothing in them. Names are bytes and checked before use; links are never followed. Blocking
calls run in a worker thread (``asyncio.to_thread``), one block at a time, so memory stays flat.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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
from gateway.files.errors import Conflict, FileChanged, FileError, IntegrityError, NameRefused, from_oserror
from gateway.files.names import check_name, leaves_directory

DEFAULT_BLOCK_BYTES = 1024 * 1024
TEMP_SUFFIX = b".part"


class _Gone(Exception):
    """A temporary file that does not hold what its journal says (resume finds nothing to resume)."""


def temp_name() -> bytes:
    return JGW_TEMP_PREFIX + secrets.token_hex(12).encode() + TEMP_SUFFIX


def is_temp_name(name: bytes) -> bool:
    return name.startswith(JGW_TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def check_subdir(keep_in: str) -> bytes:
    """A kept subdirectory is one plain component (``done``, ``quarantine``): our own configuration."""
    sub = os.fsencode(keep_in)
    check_name(sub)
    if sub.startswith(b"."):
        raise ValueError("a kept subdirectory must not start with '.'")
    return sub


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def _same(ref: FileRef, st: os.stat_result) -> bool:
    return (stat.S_ISREG(st.st_mode) and st.st_size == ref.size and st.st_mtime_ns == ref.mtime_ns
            and (ref.identity is None or _identity(st) == ref.identity))


def fsync_dir(fd_or_path: int | bytes | Path) -> None:
    if isinstance(fd_or_path, int):
        os.fsync(fd_or_path)
        return
    fd = os.open(fd_or_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _oserrors(what: str) -> Iterator[None]:
    """The one place where the spool translates OSError (not FileError: those pass)."""
    try:
        yield
    except FileError:
        raise
    except OSError as exc:
        raise from_oserror(exc, what) from exc


def sha256_of(dir_fd: int, name: bytes, block: int = DEFAULT_BLOCK_BYTES) -> tuple[int, str]:
    """Size and SHA-256 of ``name`` in ``dir_fd``, read without following a link."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        h = hashlib.sha256()
        total = 0
        while data := os.read(fd, block):
            h.update(data)
            total += len(data)
        return total, h.hexdigest()
    finally:
        os.close(fd)


def move_aside(dir_fd: int, name: bytes, sub: bytes) -> bytes:
    """Rename ``name`` into ``sub/`` under a name not yet taken there; returns the name used."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(sub, 0o750, dir_fd=dir_fd)
    sub_fd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        for i in range(1000):
            candidate = name if i == 0 else name + b".%d" % i
            try:
                os.lstat(candidate, dir_fd=sub_fd)
            except FileNotFoundError:
                os.rename(name, candidate, src_dir_fd=dir_fd, dst_dir_fd=sub_fd)
                os.fsync(sub_fd)
                return candidate
        raise OSError(errno.EEXIST, "a thousand files of that name are kept already")
    finally:
        os.close(sub_fd)


class SpoolSource:
    """Takes complete files from a local directory (see the module docstring)."""

    def __init__(self, directory: Path, rule: Rule, *, block_size: int = DEFAULT_BLOCK_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.directory = Path(directory)
        self.block_size = block_size
        self._tracker = Tracker(rule)
        self._clock = clock

    def __repr__(self) -> str:
        return f"SpoolSource({str(self.directory)!r}, {self._tracker.rule!r})"

    def _dir_fd(self) -> int:
        return os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _list(self) -> tuple[list[Entry], dict[bytes, tuple[int, ...]]]:
        """The entries (lstat) and each one's identity, from the same stat call."""
        entries: list[Entry] = []
        ids: dict[bytes, tuple[int, ...]] = {}
        with _oserrors("list the spool directory"), os.scandir(os.fsencode(self.directory)) as it:
            for de in it:
                try:
                    st = de.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                link = stat.S_ISLNK(st.st_mode)
                entries.append(Entry(de.name, st.st_size, st.st_mtime_ns, stat.S_ISREG(st.st_mode), link,
                                     leaves_directory(self.directory, de.name) if link else None))
                ids[de.name] = _identity(st)
        return entries, ids

    async def scan(self) -> Scan:
        entries, ids = await asyncio.to_thread(self._list)
        decision = self._tracker.observe(entries, self._clock())
        ready = tuple(FileRef(r.entry.name, r.entry.size, r.entry.mtime_ns, r.companions, ids[r.entry.name])
                      for r in decision.ready)
        waiting = tuple(FileRef(e.name, e.size, e.mtime_ns) for e in decision.waiting)
        refused = tuple(Refused(e.name, err, FileRef(e.name, e.size, e.mtime_ns)) for e, err in decision.refused)
        return Scan(ready, waiting, refused)

    def _open_checked(self, ref: FileRef) -> int:
        check_name(ref.name)
        dir_fd = self._dir_fd()
        try:
            fd = os.open(ref.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError as exc:
            raise FileChanged("file-vanished", "gone between listing and reading") from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NameRefused("name-symlink", "became a symbolic link after listing") from exc
            raise from_oserror(exc, "open a spool file") from exc
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        if not _same(ref, st):
            os.close(fd)
            raise FileChanged("file-changed", "size, mtime or inode differ from the listing")
        os.set_blocking(fd, True)
        return fd

    def _check_after(self, fd: int, ref: FileRef, total: int) -> None:
        after = os.fstat(fd)
        try:
            named = os.lstat(os.path.join(os.fsencode(self.directory), ref.name))
        except FileNotFoundError as exc:
            raise FileChanged("file-vanished", "gone while being read") from exc
        if total != ref.size or not _same(ref, after) or not _same(ref, named):
            raise FileChanged("file-changed", f"changed while being read ({total} of {ref.size} bytes read)")

    async def open(self, ref: FileRef) -> AsyncIterator[bytes]:
        with _oserrors("read a spool file"):
            fd = await asyncio.to_thread(self._open_checked, ref)
            try:
                total = 0
                while True:
                    data = await asyncio.to_thread(os.read, fd, self.block_size)
                    if not data:
                        break
                    total += len(data)
                    if total > ref.size:
                        raise FileChanged("file-changed", f"grew past its listed size of {ref.size} bytes")
                    yield data
                await asyncio.to_thread(self._check_after, fd, ref, total)
            finally:
                os.close(fd)

    def _finish(self, ref: FileRef, keep_in: str | None) -> None:
        sub = check_subdir(keep_in) if keep_in is not None else None
        dir_fd = self._dir_fd()
        try:
            try:
                st = os.lstat(ref.name, dir_fd=dir_fd)
            except FileNotFoundError as exc:
                raise FileChanged("file-vanished", "gone before it could be finished") from exc
            if not _same(ref, st) and not (stat.S_ISLNK(st.st_mode) and ref.identity is None):
                raise FileChanged("file-changed", "replaced or modified after it was read; left in place")
            for name in (ref.name, *ref.companions):
                try:
                    if sub is None:
                        os.unlink(name, dir_fd=dir_fd)
                    else:
                        move_aside(dir_fd, name, sub)
                except FileNotFoundError:
                    if name == ref.name:
                        raise
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def finish(self, ref: FileRef, *, keep_in: str | None) -> None:
        with _oserrors("finish a spool file"):
            await asyncio.to_thread(self._finish, ref, keep_in)
        self._tracker.forget(ref.name)

    async def close(self) -> None:
        return None


class SpoolUpload:
    """One file being written into a ``SpoolSink`` directory under a temporary name."""

    def __init__(self, sink: SpoolSink, dir_fd: int, name: bytes, fd: int) -> None:
        self._sink = sink
        self._dir_fd = dir_fd
        self.temp = name
        self._fd: int | None = fd
        self._hash = hashlib.sha256()
        self.written = 0
        #: keep the temporary file when a write fails transiently (see ``end_after_failure``)
        self.keep = False

    def __repr__(self) -> str:
        return f"SpoolUpload({self.temp.decode()}, written={self.written})"

    def _write(self, data: bytes) -> None:
        assert self._fd is not None, "upload already closed"
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self._hash.update(data)
        self.written += len(data)

    async def write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("write after commit or abort")
        try:
            with _oserrors("write the sink's temporary file"):
                await asyncio.to_thread(self._write, data)
        except BaseException as exc:
            await asyncio.shield(end_after_failure(self, exc))
            raise

    async def flush(self) -> None:
        if self._fd is None:
            raise RuntimeError("flush after commit or abort")
        if self._sink.fsync:
            try:
                with _oserrors("fsync the sink's temporary file"):
                    await asyncio.to_thread(os.fsync, self._fd)
            except BaseException as exc:
                await asyncio.shield(end_after_failure(self, exc))
                raise

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            os.close(self._dir_fd)
        self._dir_fd = -1

    async def release(self) -> None:
        """Close without removing the temporary file (it can be resumed: ``SpoolSink.resume``)."""
        if self._dir_fd >= 0:
            await asyncio.to_thread(self._release)

    def _abort(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.temp, dir_fd=self._dir_fd)
        self._release()

    async def abort(self) -> None:
        if self._dir_fd >= 0:
            await asyncio.to_thread(self._abort)

    def _commit(self, name: bytes, size: int, sha256: str | None, mtime_ns: int) -> PutResult:
        assert self._fd is not None
        check_name(name)
        digest = self._hash.hexdigest()
        if self.written != size:
            raise IntegrityError("size-mismatch", f"{self.written} bytes written, {size} announced")
        if sha256 is not None and digest != sha256.lower():
            raise IntegrityError("digest-mismatch", f"sha256 {digest[:12]}.. written, {sha256[:12]}.. announced")
        os.utime(self._fd, ns=(mtime_ns, mtime_ns))
        if self._sink.fsync:
            os.fsync(self._fd)
        inode = os.fstat(self._fd).st_ino
        os.close(self._fd)
        self._fd = None
        placed = self._place(name, size, digest)
        if placed is not None:
            return placed
        if self._sink.fsync:
            os.fsync(self._dir_fd)
        st = os.lstat(name, dir_fd=self._dir_fd)
        if st.st_ino != inode or st.st_size != size:
            raise IntegrityError("size-mismatch", "the final name does not hold the file just written")
        os.close(self._dir_fd)
        self._dir_fd = -1
        return PutResult(Outcome.DELIVERED, name, size, digest, "sha256 while writing; inode and size after rename")

    def _place(self, name: bytes, size: int, digest: str) -> PutResult | None:
        """Put the temporary file under ``name`` without replacing anything; a result if it was there."""
        try:
            os.link(self.temp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd, follow_symlinks=False)
        except FileExistsError:
            return self._already(name, size, digest)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                raise
            try:
                os.lstat(name, dir_fd=self._dir_fd)
            except FileNotFoundError:
                os.rename(self.temp, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
                return None
            return self._already(name, size, digest)
        os.unlink(self.temp, dir_fd=self._dir_fd)
        return None

    def _already(self, name: bytes, size: int, digest: str) -> PutResult:
        result = self._sink.compare(self._dir_fd, name, size, digest)
        self._abort()
        return result

    async def commit(self, name: bytes, *, size: int, sha256: str | None, mtime_ns: int) -> PutResult:
        if self._fd is None:
            raise RuntimeError("commit after commit or abort")
        try:
            with _oserrors("commit the sink's file"):
                return await asyncio.to_thread(self._commit, name, size, sha256, mtime_ns)
        except BaseException as exc:
            await asyncio.shield(end_after_failure(self, exc))
            raise


class SpoolSink(SinkBase):
    """Delivers files into a local directory atomically (see the module docstring)."""

    def __init__(self, directory: Path, *, mode: int = 0o640, fsync: bool = True,
                 sweep_after: float = 3600.0) -> None:
        self.directory = Path(directory)
        self.mode = mode
        self.fsync = fsync
        self.sweep_after = sweep_after
        self._swept = False

    def __repr__(self) -> str:
        return f"SpoolSink({str(self.directory)!r})"

    def _dir_fd(self) -> int:
        return os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def compare(self, dir_fd: int, name: bytes, size: int, sha256: str) -> PutResult:
        """ALREADY_PRESENT when ``name`` holds exactly these bytes, else ``Conflict``."""
        st = os.lstat(name, dir_fd=dir_fd)
        if not stat.S_ISREG(st.st_mode):
            raise Conflict("the name is taken by something that is not a regular file")
        if st.st_size != size:
            raise Conflict(f"a different file holds the name (size {st.st_size}, announced {size})")
        _, digest = sha256_of(dir_fd, name)
        if digest != sha256.lower():
            raise Conflict(f"a different file holds the name (sha256 {digest[:12]}.., announced {sha256[:12]}..)")
        return PutResult(Outcome.ALREADY_PRESENT, name, size, digest, "sha256 of the existing file")

    def _present(self, name: bytes, size: int, sha256: str) -> PutResult | None:
        dir_fd = self._dir_fd()
        try:
            try:
                os.lstat(name, dir_fd=dir_fd)
            except FileNotFoundError:
                return None
            return self.compare(dir_fd, name, size, sha256)
        finally:
            os.close(dir_fd)

    async def present(self, name: bytes, size: int, sha256: str) -> PutResult | None:
        check_name(name)
        with _oserrors("check the sink for an existing file"):
            return await asyncio.to_thread(self._present, name, size, sha256)

    def _begin(self) -> SpoolUpload:
        if not self._swept:
            self._sweep()
            self._swept = True
        dir_fd = self._dir_fd()
        try:
            name = temp_name()
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, self.mode,
                         dir_fd=dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        return SpoolUpload(self, dir_fd, name, fd)

    async def begin(self) -> SpoolUpload:
        with _oserrors("create the sink's temporary file"):
            return await asyncio.to_thread(self._begin)

    def _resume(self, temp: bytes, lengths: Sequence[int], digests: Sequence[str]) -> SpoolUpload | None:
        if not is_temp_name(temp):
            raise ValueError("not a jgw temporary name")
        dir_fd = self._dir_fd()
        try:
            fd = os.open(temp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            os.close(dir_fd)
            return None
        except BaseException:
            os.close(dir_fd)
            raise
        try:
            offset = sum(lengths)
            if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_size < offset:
                raise _Gone()
            os.ftruncate(fd, offset)
            whole = hashlib.sha256()
            pos = 0
            for length, digest in zip(lengths, digests, strict=True):
                data = os.pread(fd, length, pos)
                if len(data) != length or hashlib.sha256(data).hexdigest() != digest:
                    raise _Gone()
                whole.update(data)
                pos += length
            os.lseek(fd, offset, os.SEEK_SET)
        except _Gone:
            os.close(fd)
            os.close(dir_fd)
            return None
        except BaseException:
            os.close(fd)
            os.close(dir_fd)
            raise
        upload = SpoolUpload(self, dir_fd, temp, fd)
        upload._hash = whole
        upload.written = offset
        return upload

    async def resume(self, temp: bytes, lengths: Sequence[int], digests: Sequence[str]) -> SpoolUpload | None:
        with _oserrors("resume the sink's temporary file"):
            return await asyncio.to_thread(self._resume, temp, lengths, digests)

    async def discard(self, temp: bytes) -> None:
        if not is_temp_name(temp):
            raise ValueError("not a jgw temporary name")
        with contextlib.suppress(OSError):
            await asyncio.to_thread(os.unlink, os.path.join(os.fsencode(self.directory), temp))

    def _sweep(self) -> int:
        removed = 0
        limit = time.time() - self.sweep_after
        with os.scandir(os.fsencode(self.directory)) as it:
            for de in it:
                if not is_temp_name(de.name):
                    continue
                with contextlib.suppress(OSError):
                    st = de.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_ctime <= limit:
                        os.unlink(os.path.join(os.fsencode(self.directory), de.name))
                        removed += 1
        return removed

    async def sweep(self) -> int:
        """Remove jgw temporaries left by a crash (older than ``sweep_after``); returns how many."""
        with _oserrors("sweep the sink's temporary files"):
            return await asyncio.to_thread(self._sweep)

    async def close(self) -> None:
        return None


if TYPE_CHECKING:  # mypy holds the classes to the seam's protocols
    def _protocols(a: SpoolSource, b: SpoolSink, c: SpoolUpload) -> tuple[FileSource, FileSink, Upload]:
        return a, b, c
