"""A route's sink as files: a local directory or a directory on an SFTP server.

Each put is one frame of a file (``gateway.files.chunks``), in order per file: the route book sends
one frame of a file at a time (they share the file id as ordering key). What makes a put durable,
and so confirmable to the book:

* a **chunk** is written to the file's temporary name in the sink directory (``.jgw-*.part``),
  flushed (fsync, or the server's ``fsync@openssh.com``) *and* recorded in the file's journal in the
  node's state directory (``gateway.files.journal``): after a crash the sink reopens the temporary
  file, cuts off anything past the journal, re-hashes the rest and carries on; a chunk delivered
  again that is already written is accepted when identical;
* a **manifest** only when the file is under its final name, checked against the manifest's size
  and SHA-256 (the adapters' ``commit``: link/rename that never replaces a name), after which the
  journal goes;
* a small file in one **F** frame: written, checked and renamed in one go;
* an **A** frame (the sender gave the file up): the partial file and its journal are removed.

The final name already holding the same bytes is a file already delivered (confirmed, counted
``duplicate``, no second file); holding other bytes is a ``conflict`` (refused with that reason:
the book dead-letters it, nothing is overwritten). A chunk or manifest that does not fit the file
(missing, altered, foreign) is refused with its reason and the partial file removed: a broken
sequence never yields a file. Transient trouble (the SFTP server gone, the disk full) takes the
sink down: the put goes back to the book unconfirmed, and the sink tries again with back-off, then
says it is ready. Partial files whose journal has not moved for ``partial_timeout`` are removed.

Security: writes what the stages made (opened, checked); names come from the frames and are checked
by the adapters (``names.check_name``) before use. Logs carry file ids and name fingerprints only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.config import RouteConfig
from gateway.files.adapter import FileSink, Outcome, PutResult, Upload
from gateway.files.chunks import Abort, Chunk, Manifest, Reassembly, Whole, decode
from gateway.files.errors import ChunkError, FileError, HostKeyRefused, LinkError, from_oserror
from gateway.files.journal import Journals, Partial
from gateway.files.names import fingerprint
from gateway.files.settings import H_FILE
from gateway.metrics import Metrics
from gateway.route.behaviour import SinkFeed
from gateway.route.book import Confirm, Leg, Refuse, Result

log = logging.getLogger("jgw.files")

DOWN = "sink down"
BACKOFF_MAX = 30.0
SWEEP_EVERY = 300.0


@dataclass(eq=False)
class _Open:
    """A file being reassembled: its upload and what its journal says it holds."""

    check: Reassembly
    upload: Upload | None
    temp: bytes
    started: float


class FileRouteSink:
    """Writes a route's frames into files (see the module docstring)."""

    def __init__(self, cfg: RouteConfig, adapter: FileSink, *, journals: Journals, metrics: Metrics,
                 server: str | None = None) -> None:
        assert cfg.sink.file is not None
        self.cfg = cfg
        self.fcfg = cfg.sink.file
        self.adapter = adapter
        self.journals = journals
        self.metrics = metrics
        self.server = server
        self._feed: SinkFeed | None = None
        self._open: dict[str, _Open] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._up = False
        self._trouble = asyncio.Event()
        self._last_error: FileError | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._last_sweep = 0.0
        #: how often partial files are checked for abandonment (a fraction of the timeout)
        self._sweep_every = min(SWEEP_EVERY, max(0.5, self.fcfg.partial_timeout / 2))
        self._put_ok = False  # a put worked since the sink last said it was ready
        self._logged: tuple[str, float] = ("", 0.0)
        metrics.init_file_route(cfg.name, source=False)
        if server is not None:
            metrics.init_sftp(cfg.name, server)

    def describe(self) -> str:
        return self.fcfg.describe()

    # ------------------------------------------------------------------ up and down

    async def run(self, feed: SinkFeed) -> None:
        self._feed = feed
        backoff = 1.0
        while True:
            try:
                await self._probe()
            except FileError as exc:
                self._note_failure(exc)
                feed.problem("sink", f"{exc.reason}: {exc.detail}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if self._last_error is None:
                feed.problem("sink", None)  # (after trouble: once a put works again)
            if self.server is not None:
                self.metrics.sftp_up.labels(self.cfg.name, self.server).set(1)
            self._up = True
            self._put_ok = False
            self._trouble.clear()
            if self._last_error is None:
                log.info("file sink ready", extra={"route": self.cfg.name})
            feed.ready(True, DOWN)
            while not self._trouble.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._trouble.wait(), self._sweep_every)
                if not self._trouble.is_set():
                    with contextlib.suppress(FileError):
                        await self._sweep()
            self._up = False
            feed.ready(False, DOWN)
            err = self._last_error
            if err is not None:
                feed.problem("sink", f"{err.reason}: {err.detail}")
            # the probe may pass while puts still fail (a full disk takes an empty file): back off
            # until a put works again
            backoff = 1.0 if self._put_ok else min(backoff * 2, BACKOFF_MAX)
            await asyncio.sleep(backoff)

    async def _probe(self) -> None:
        """Make sure the directory can be written (connecting first for SFTP), sweep old partials."""
        upload = await self.adapter.begin()
        await upload.abort()
        await self._sweep()

    def _note_failure(self, exc: FileError) -> None:
        self._last_error = exc
        if self.server is not None:
            if isinstance(exc, LinkError):
                self.metrics.sftp_up.labels(self.cfg.name, self.server).set(0)
            if isinstance(exc, HostKeyRefused):
                self.metrics.sftp_host_key_failures.labels(self.cfg.name, self.server, exc.reason).inc()
        now = time.monotonic()
        if self._logged[0] != exc.reason or now - self._logged[1] > 60.0:  # once a minute per reason
            self._logged = (exc.reason, now)
            log.warning("file sink unavailable; retrying", extra={"route": self.cfg.name, "reason": exc.reason,
                                                                  "error": exc.detail})

    async def _sweep(self) -> None:
        now = time.time()
        if now - self._last_sweep < self._sweep_every * 0.9:
            return
        self._last_sweep = now
        for partial in await asyncio.to_thread(self.journals.all):
            lock = self._locks.get(partial.file_id)
            if now - partial.updated < self.fcfg.partial_timeout or (lock is not None and lock.locked()):
                continue
            await self._abandon(partial.file_id)  # its sender never finished it (nor withdrew it)
            log.warning("partial file abandoned", extra={"route": self.cfg.name, "file_id": partial.file_id,
                                                         "chunks": len(partial.lengths), "count": partial.count})

    # ------------------------------------------------------------------ puts

    def put(self, leg: Leg) -> None:
        task = asyncio.ensure_future(self._put(leg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, leg: Leg) -> None:
        assert self._feed is not None
        if not self._up:
            self._feed.unconfirmed([leg])
            return
        try:
            frame = decode(leg.message.body)
        except ChunkError as exc:
            self._feed.confirmed(leg, Refuse(exc.reason, exc.detail))
            return
        fid = frame.file_id
        carried = leg.message.headers.get(H_FILE)
        if carried is not None and str(carried) != fid:
            self._feed.confirmed(leg, Refuse("chunk-foreign", "the frame's file id is not its header's"))
            return
        lock = self._locks.setdefault(fid, asyncio.Lock())
        try:
            async with lock:
                result = await self._frame(frame)
        except FileError as exc:
            if exc.transient or exc.link_fault:
                self._drop(fid)
                self._note_failure(exc)
                if self._up:
                    self._up = False
                    self._feed.ready(False, DOWN)
                    self._trouble.set()
                self._feed.unconfirmed([leg])
                return
            await self._abandon(fid)
            log.warning("file frame refused", extra={"route": self.cfg.name, "file_id": fid, "reason": exc.reason,
                                                     "detail": exc.detail})
            result = Refuse(exc.reason, exc.detail)
        finally:
            if len(self._locks) > 10000:
                self._locks = {k: v for k, v in self._locks.items() if v.locked() or k in self._open}
        if not self._put_ok and self._last_error is not None:
            self._put_ok = True
            self._last_error = None
            self._feed.problem("sink", None)
            log.info("file sink ready", extra={"route": self.cfg.name})
        self._put_ok = True
        self._feed.confirmed(leg, result)

    async def _frame(self, frame: Chunk | Manifest | Whole | Abort) -> Result:
        if isinstance(frame, Chunk):
            return await self._chunk(frame)
        if isinstance(frame, Manifest):
            return await self._manifest(frame)
        if isinstance(frame, Whole):
            result = await self.adapter.put(frame.name, _one(frame.data), size=frame.size, sha256=frame.sha256,
                                            mtime_ns=frame.mtime_ns)
            self._placed(frame.file_id, result, 0.0)
            return Confirm.ACK
        await self._abandon(frame.file_id)
        log.info("partial file withdrawn by its sender", extra={"route": self.cfg.name, "file_id": frame.file_id})
        return Confirm.ACK

    async def _state(self, fid: str) -> _Open | None:
        """The file's reassembly: in memory, or resumed from its journal after a restart."""
        state = self._open.get(fid)
        if state is not None:
            return state
        partial = await asyncio.to_thread(self.journals.load, fid)
        if partial is None:
            return None
        if not partial.lengths:  # begun, no chunk confirmed yet: start again
            await self.adapter.discard(partial.temp)
            await asyncio.to_thread(self.journals.remove, fid)
            return None
        state = await self._resume(partial)
        self._open[fid] = state
        return state

    async def _resume(self, partial: Partial) -> _Open:
        check = Reassembly.resumed(file_id=partial.file_id, count=partial.count, lengths=partial.lengths,
                                   digests=partial.digests, tail=partial.tail)
        upload = await self.adapter.resume(partial.temp, partial.lengths, partial.digests)
        if upload is not None:
            upload.keep = True
        if upload is None and len(partial.lengths) < partial.count:
            # the temporary file lost what its journal holds: nothing to resume, nothing confirmed is lost
            # (the sender's chunks are settled), so the file cannot be completed
            raise ChunkError("chunk-missing", f"the partial file of {partial.file_id[:8]} is gone "
                                              f"({len(partial.lengths)} of {partial.count} chunks journalled)")
        log.info("partial file resumed", extra={"route": self.cfg.name, "file_id": partial.file_id,
                                                "chunks": len(partial.lengths), "count": partial.count})
        return _Open(check, upload, partial.temp, partial.started)

    async def _chunk(self, chunk: Chunk) -> Result:
        fid = chunk.file_id
        state = await self._state(fid)
        if state is None:
            if chunk.index != 0:
                raise ChunkError("chunk-missing", f"chunk {chunk.index} of {fid[:8]} without its earlier chunks")
            upload = await self.adapter.begin()
            upload.keep = True
            try:
                await asyncio.to_thread(self.journals.create, fid, upload.temp, chunk.count)
            except OSError:
                await upload.abort()
                raise
            state = _Open(Reassembly(tolerate_redelivery=True), upload, upload.temp, time.time())
            self._open[fid] = state
        data = state.check.accept_chunk(chunk)
        if data is None:
            return Confirm.ACK  # a redelivery of a chunk already written, identical
        if state.upload is None:
            raise ChunkError("chunk-missing", f"the partial file of {fid[:8]} is gone")
        try:
            await state.upload.write(data)
            await state.upload.flush()
            await asyncio.to_thread(self.journals.append, fid, chunk.index, chunk.offset, len(data), chunk.sha256,
                                    state.check.tail)
        except OSError as exc:
            raise from_oserror(exc, "write the sink's journal") from exc
        return Confirm.ACK

    async def _manifest(self, manifest: Manifest) -> Result:
        fid = manifest.file_id
        state = await self._state(fid)
        if state is None:
            if manifest.count == 0:
                result = await self.adapter.put(manifest.name, _one(b""), size=0, sha256=manifest.sha256,
                                                mtime_ns=manifest.mtime_ns)
                self._placed(fid, result, 0.0)
                return Confirm.ACK
            # delivered before (the journal goes after the rename): the same bytes must be there
            present = await _present(self.adapter, manifest)
            if present is None:
                raise ChunkError("chunk-missing", f"manifest of {fid[:8]} without its chunks")
            self._placed(fid, present, 0.0)
            return Confirm.ACK
        state.check.accept_manifest(manifest)
        if state.upload is None:  # the rename happened before a crash; the journal stayed
            present = await _present(self.adapter, manifest)
            if present is None:
                raise ChunkError("chunk-missing", f"the partial file of {fid[:8]} is gone")
            result = present
        else:
            result = await state.upload.commit(manifest.name, size=manifest.size, sha256=manifest.sha256,
                                               mtime_ns=manifest.mtime_ns)
        self._open.pop(fid, None)
        await asyncio.to_thread(self.journals.remove, fid)
        self._placed(fid, result, time.time() - state.started)
        return Confirm.ACK

    def _placed(self, fid: str, result: PutResult, seconds: float) -> None:
        name = self.cfg.name
        outcome = "delivered" if result.outcome is Outcome.DELIVERED else "duplicate"
        self.metrics.files.labels(name, outcome).inc()
        self.metrics.file_bytes.labels(name, outcome).inc(result.size)
        if outcome == "delivered":
            self.metrics.file_transfer.labels(name).observe(seconds)
        extra = {"route": name, "file": fingerprint(result.name), "file_id": fid, "size": result.size,
                 "sha256": result.sha256[:16], "verified": result.verified}
        if outcome == "delivered":
            log.info("file delivered", extra=extra)
        else:
            log.info("file already delivered", extra=extra)

    async def _abandon(self, fid: str) -> None:
        """Remove a file's partial upload and journal (a refused or withdrawn file)."""
        state = self._open.pop(fid, None)
        if state is not None and state.upload is not None:
            with contextlib.suppress(Exception):
                await state.upload.abort()
        partial = await asyncio.to_thread(self.journals.load, fid)
        if partial is not None:
            with contextlib.suppress(Exception):
                await self.adapter.discard(partial.temp)
            await asyncio.to_thread(self.journals.remove, fid)

    def _drop(self, fid: str) -> None:
        """Forget the in-memory state after a failure: the journal on disk is what holds."""
        state = self._open.pop(fid, None)
        if state is not None and state.upload is not None:
            upload = state.upload
            task = asyncio.ensure_future(_close_quietly(upload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for fid in list(self._open):
            self._drop(fid)
        with contextlib.suppress(Exception):
            await self.adapter.close()


async def _present(adapter: FileSink, manifest: Manifest) -> PutResult | None:
    present = getattr(adapter, "present", None)
    if present is None:
        return None
    result: PutResult | None = await present(manifest.name, manifest.size, manifest.sha256)
    return result


async def _close_quietly(upload: Upload) -> None:
    """Close an upload's handle without removing its temporary file (the journal may resume it)."""
    with contextlib.suppress(Exception):
        await upload.release()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data

