"""The seam between file adapters and the route runner: ``FileSource``, ``FileSink``, ``Upload``.

A source lists what is complete (``scan``), streams one file (``open``) and, once the sink holds it
durably, finishes it (``finish``: move into a kept subdirectory such as ``done/``, or remove). A
sink either takes a whole stream (``put``) or an ``Upload`` that is written piece by piece and
committed under its final name (what chunk reassembly uses: the name arrives with the manifest,
after the data). Both sides speak bytes for names and integer nanoseconds for mtimes.

Hop contract, file side: ``put``/``commit`` return only after the file is under its final name,
durable (fsync where the file system or server allows it) and checked (size and SHA-256), and a
crash before that leaves no file under the final name. The caller calls ``finish`` on the source
only after that, so a crash anywhere means the file is sent again, and the sink's name+digest rule
(``ALREADY_PRESENT``) makes the second copy a no-op.

    FileSource: scan() -> Scan; open(ref) -> AsyncIterator[bytes]; finish(ref, keep_in=...); close()
    FileSink:   put(name, chunks, size=, sha256=, mtime_ns=) -> PutResult; begin() -> Upload;
                resume(temp, lengths, digests) -> Upload | None; discard(temp); close()
    Upload:     write(data); flush(); commit(name, size=, sha256=, mtime_ns=) -> PutResult; abort()

``flush`` and ``resume`` are what a route's file sink (``gateway.files.route_sink``) needs to confirm
each chunk of a large file as it lands and to carry on after a restart.

``SinkBase`` implements ``put`` once over ``begin``/``commit`` and a sink's ``present`` check.

Security: no I/O here. Everything that crosses this seam has already been checked by the adapter
(names by ``names.check_name``, lower-layer errors translated to ``gateway.files.errors``).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.files.errors import FileError, NameRefused
from gateway.files.names import check_name, fingerprint


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file a source listed: its name (raw bytes), size, mtime, the trigger files that go with it,
    and, where the source has one, an identity that changes when the file is replaced (local:
    device, inode and ctime; SFTP v3 has none)."""

    name: bytes
    size: int
    mtime_ns: int
    companions: tuple[bytes, ...] = ()
    identity: tuple[int, ...] | None = None

    def __repr__(self) -> str:
        return f"FileRef({fingerprint(self.name)}, size={self.size}, mtime_ns={self.mtime_ns})"


@dataclass(frozen=True, slots=True)
class Refused:
    """A listed entry the source will not take. ``ref`` is set when the entry can be moved aside
    (``finish(ref, keep_in="quarantine")``); None when its name cannot even be used in a path."""

    name: bytes
    error: NameRefused
    ref: FileRef | None

    def __repr__(self) -> str:
        return f"Refused({fingerprint(self.name)}, {self.error.reason})"


@dataclass(frozen=True, slots=True)
class Scan:
    ready: tuple[FileRef, ...]
    waiting: tuple[FileRef, ...]
    refused: tuple[Refused, ...]


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    ALREADY_PRESENT = "already-present"


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a sink did. ``verified`` says how the bytes under the final name were checked."""

    outcome: Outcome
    name: bytes
    size: int
    sha256: str
    verified: str

    def __repr__(self) -> str:
        return (f"PutResult({self.outcome.value}, {fingerprint(self.name)}, size={self.size}, "
                f"sha256={self.sha256[:12]}, verified={self.verified!r})")


@runtime_checkable
class FileSource(Protocol):
    async def scan(self) -> Scan:
        """The directory now: complete files (oldest first), files still being written, refusals."""
        ...

    def open(self, ref: FileRef) -> AsyncIterator[bytes]:
        """Stream the file in bounded blocks. Raises ``FileChanged`` at open or after the last block
        when size, mtime or identity moved (the caller discards what it got; the file stays put)."""
        ...

    async def finish(self, ref: FileRef, *, keep_in: str | None) -> None:
        """After the sink holds the file: move it (and its companions) into ``keep_in`` or remove it.
        Raises ``FileChanged`` (and leaves it) if it is no longer the file that was listed."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Upload(Protocol):
    #: the temporary name it is written under (a ``.jgw-*.part`` file in the sink's directory)
    temp: bytes
    #: bytes written so far
    written: int
    #: when True, a failure that may pass leaves the temporary file (``release``), for ``resume``
    keep: bool

    async def write(self, data: bytes) -> None: ...

    async def flush(self) -> None:
        """Make what was written so far durable (fsync where the file system or server allows)."""
        ...

    async def commit(self, name: bytes, *, size: int, sha256: str | None, mtime_ns: int) -> PutResult:
        """Check size and digest (``sha256=None``: accept what was written and report its digest), make
        it durable and put it under ``name`` without overwriting anything. Aborts itself on failure."""
        ...

    async def abort(self) -> None:
        """Remove the temporary file (best effort; a sink sweeps what is left)."""
        ...

    async def release(self) -> None:
        """Close the upload but leave its temporary file (to be resumed)."""
        ...


async def end_after_failure(upload: Upload, exc: BaseException) -> None:
    """After a failed write, flush or commit: abort; but an upload that is ``keep``-ed (a route's
    file sink journals it) is only released when the failure may pass, so it can be resumed."""
    for_good = isinstance(exc, FileError) and not (exc.transient or exc.link_fault)
    if upload.keep and not for_good:
        await upload.release()
    else:
        await upload.abort()


@runtime_checkable
class FileSink(Protocol):
    async def put(self, name: bytes, chunks: AsyncIterable[bytes], *, size: int, sha256: str | None,
                  mtime_ns: int) -> PutResult:
        """Deliver a stream under ``name``. Returns DELIVERED or ALREADY_PRESENT (same name, same
        digest); raises ``Conflict`` (same name, other bytes), ``IntegrityError`` (size or digest
        differs from what was announced), ``NameRefused``, or a transient ``StorageError``/``LinkError``.
        With ``sha256`` given, an existing file is compared first and ``chunks`` may be left unconsumed
        (close it: ``aclose()``); a failing ``chunks`` aborts the upload and its exception propagates."""
        ...

    async def begin(self) -> Upload: ...

    async def resume(self, temp: bytes, lengths: Sequence[int], digests: Sequence[str]) -> Upload | None:
        """The upload of ``temp`` again (after a restart), holding the chunks of these ``lengths`` and
        SHA-256 ``digests``: anything written past them is cut off, and the bytes kept are re-hashed
        and checked chunk by chunk. None when the temporary file is gone or does not hold them."""
        ...

    async def discard(self, temp: bytes) -> None:
        """Remove a temporary file left by an upload given up (best effort)."""
        ...

    async def close(self) -> None: ...


class SinkBase:
    """``put`` over ``begin``/``commit``: with a known digest, an existing file is checked first (no
    transfer when it is already there); the stream is written to an ``Upload`` and committed."""

    async def present(self, name: bytes, size: int, sha256: str) -> PutResult | None:
        """ALREADY_PRESENT if ``name`` holds these bytes, None if absent; raises ``Conflict`` otherwise."""
        raise NotImplementedError

    async def begin(self) -> Upload:
        raise NotImplementedError

    async def put(self, name: bytes, chunks: AsyncIterable[bytes], *, size: int, sha256: str | None,
                  mtime_ns: int) -> PutResult:
        check_name(name)
        if sha256 is not None:
            existing = await self.present(name, size, sha256)
            if existing is not None:
                return existing
        upload = await self.begin()
        try:
            async for data in chunks:
                await upload.write(data)
        except BaseException:
            await asyncio.shield(upload.abort())
            raise
        return await upload.commit(name, size=size, sha256=sha256, mtime_ns=mtime_ns)
