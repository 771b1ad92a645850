"""A route's source as files: a spool directory, an SFTP server's directory, or jgw's own endpoint.

One file is several items of the route book: the source reads it in order and hands over one
delivery per frame (``gateway.files.chunks``: a small file is one ``F`` frame; a larger one is its
chunks, then the manifest), each with its own delivery tag, holding at most the route's
``prefetch`` frames at a time (memory: prefetch × chunk size). Every frame carries the file id as
its ordering key (``order_key``, header ``x-jgw-file``), so the book sends one frame of a file at a
time, in order, at every hop. Message ids are made of the file id, the frame kind and index and the
frame data's digest (``frame_id``): a file sent again after a crash has the same ids, and each
hop's dedup store recognises what it already delivered.

A file is finished — moved into ``done/`` or removed, as the route says — only when every tag of
it has been acknowledged (``ack``): the route book acknowledges a frame only when it is durable at
the sink and its evidence is committed, so the source file goes only after the sink holds all of
it. A frame set aside (``set_aside``: a 個人番号 found by the policy stage, a sink's conflict) stops
the reading of that file; once all its other frames are settled, the file is moved into
``quarantine/`` or ``dead-letter/`` (the set-aside is durable then: ``aside_done``). A file that
changes while being read, or is given up after some chunks left, is left where it is for a later
scan, and the chunks already sent are withdrawn with an ``A`` (abort) frame; its next attempt gets a
new file id (``gateway.files.fileid``). Names refused by the completion rule (unsafe, symbolic
links) are moved into ``quarantine/`` untouched; a name that cannot even be used in a path is left
and reported.

A source with ``in_order`` gives every frame the same ordering key: files go strictly one after the
other, oldest (mtime, then name) first, for flows whose order matters (異動 per person).

Sessions: one scan-and-read loop per session (the route book's generation). An SFTP link failure
ends the session: what was handed over goes stale in the book (the files are still at the source)
and a new session scans again after a back-off. ``restart`` ends the session too.

Security: reads hostile names and bytes through the adapters (``spool``, ``sftp``), which check
names and never follow links. Logs and metrics carry file ids and name fingerprints
(``names.fingerprint``), never names; ``waiting`` shows printable names (``names.render``) to the
local operator only (``jgw status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.config import RouteConfig
from gateway.files.adapter import FileRef, FileSource, Refused
from gateway.files.chunks import Abort, Chunk, Chunker, Frame, Manifest, Whole
from gateway.files.errors import FileChanged, FileError, HostKeyRefused, LinkError
from gateway.files.fileid import FileIds
from gateway.files.names import fingerprint, render
from gateway.files.settings import H_FILE, H_FILE_ORDER
from gateway.message import Message
from gateway.metrics import Metrics
from gateway.route.behaviour import SourceFeed
from gateway.route.book import Confirm, Dest, Leg

log = logging.getLogger("jgw.files")

FRAME_TYPE = "application/x-jgw-file-frame"
FINISH_RETRY = 5.0
BACKOFF_MAX = 30.0


def frame_id(frame: Frame) -> str:
    """The message id of a frame: deterministic, so a redelivered frame is recognised by dedup."""
    if isinstance(frame, Chunk):
        return f"{frame.file_id}.c{frame.index}.{frame.sha256[:16]}"
    if isinstance(frame, Manifest):
        return f"{frame.file_id}.m.{frame.sha256[:16]}"
    if isinstance(frame, Whole):
        return f"{frame.file_id}.f.{frame.sha256[:16]}"
    return f"{frame.file_id}.a"


def frame_message(route: str, frame: Frame, now: float, *, in_order: bool = False) -> Message:
    """A frame as the route book's item. Its ordering key is the file id (one frame of a file at a
    time), or, for a route whose files go strictly one after the other, one key for all."""
    headers: dict[str, Any] = {H_FILE: frame.file_id}
    key = frame.file_id
    if in_order:
        key = headers[H_FILE_ORDER] = "in-order"
    return Message(message_id=frame_id(frame), route=route, body=frame.encode(), headers=headers,
                   content_type=FRAME_TYPE, order_key=key, received_at=now)


@dataclass(eq=False)
class _InHand:
    """A file being sent: its frames handed over and not yet settled."""

    ref: FileRef
    file_id: str
    gen: int
    started: float
    tags: set[int] = field(default_factory=set)  # handed over, not acknowledged, not set aside
    aside_tags: set[int] = field(default_factory=set)
    aside_legs: list[Leg] = field(default_factory=list)
    chunks_out: int = 0
    reading: bool = True
    dest: Dest | None = None
    reason: str = ""
    put_back: str = ""  # why the file stays where it is (changed, retry, session lost)
    finishing: bool = False
    aborted: bool = False
    finish_failures: int = 0


class FileRouteSource:
    """Takes complete files from one directory for one route (see the module docstring)."""

    def __init__(self, cfg: RouteConfig, adapter: FileSource, *, ids: FileIds, metrics: Metrics,
                 server: str | None = None) -> None:
        assert cfg.source.file is not None
        self.cfg = cfg
        self.fcfg = cfg.source.file
        self.adapter = adapter
        self.ids = ids
        self.metrics = metrics
        self.server = server
        self._feed: SourceFeed | None = None
        self._gen = 0
        self._tag = 0
        self._held = 0
        self._space = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._session_task: asyncio.Task[None] | None = None
        self._by_name: dict[bytes, _InHand] = {}
        self._by_tag: dict[int, _InHand] = {}
        self._first_seen: dict[bytes, float] = {}
        self._listed: dict[bytes, tuple[FileRef, str]] = {}  # last scan: name -> (ref, waiting|ready)
        self._reported: set[bytes] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._m_taken = metrics.files_taken.labels(cfg.name)
        metrics.init_file_route(cfg.name, source=True)
        if server is not None:
            metrics.init_sftp(cfg.name, server)

    def describe(self) -> str:
        return self.fcfg.describe()

    # ------------------------------------------------------------------ sessions

    async def run(self, feed: SourceFeed) -> None:
        self._feed = feed
        feed.aside_ready(True, "set-aside down")  # setting a file aside is a local move
        backoff = 1.0
        while True:
            await feed.may_consume()
            gen = feed.opened()
            self._gen = gen
            task = asyncio.ensure_future(self._session(feed, gen))
            self._session_task = task
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise
            why, failed = "restarted", False
            if not task.cancelled():
                exc = task.exception()
                if isinstance(exc, FileError):
                    why, failed = f"{exc.reason}: {exc.detail}", True
                    self._link_failed(feed, exc)
                elif exc is not None:
                    why, failed = f"internal error {type(exc).__name__}", True
                    log.error("file source failed", extra={"route": self.cfg.name, "error": type(exc).__name__},
                              exc_info=exc)
                    feed.problem("source", why)
            self._end_session(gen)
            feed.lost(gen, why)
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                backoff = 1.0
                await asyncio.sleep(0.05)

    def _link_failed(self, feed: SourceFeed, exc: FileError) -> None:
        if self.server is not None:
            self.metrics.sftp_up.labels(self.cfg.name, self.server).set(0)
            if isinstance(exc, HostKeyRefused):
                self.metrics.sftp_host_key_failures.labels(self.cfg.name, self.server, exc.reason).inc()
        log.warning("file source unavailable; retrying", extra={"route": self.cfg.name, "reason": exc.reason,
                                                                "error": exc.detail})
        feed.problem("source", f"{exc.reason}: {exc.detail}")

    async def _session(self, feed: SourceFeed, gen: int) -> None:
        reported = False
        while True:
            scan = await self.adapter.scan()
            if not reported:
                reported = True
                feed.problem("source", None)
                if self.server is not None:
                    self.metrics.sftp_up.labels(self.cfg.name, self.server).set(1)
                log.info("file source scanning", extra={"route": self.cfg.name})
            self._observe(scan.ready, scan.waiting)
            for refused in scan.refused:
                await self._refuse(refused)
            for ref in scan.ready:
                if self._stopping or gen != self._gen:
                    break
                if ref.name in self._by_name:
                    continue
                await self._take(feed, ref, gen)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.fcfg.scan_interval)

    def _end_session(self, gen: int) -> None:
        """The session is over: what it handed over is stale in the book; the files stay at the source."""
        for name, rec in list(self._by_name.items()):
            if rec.gen == gen and not rec.finishing:
                del self._by_name[name]
                self.metrics.files.labels(self.cfg.name, "put_back").inc()
                self.metrics.file_bytes.labels(self.cfg.name, "put_back").inc(rec.ref.size)
        self._by_tag = {t: r for t, r in self._by_tag.items() if r.gen != gen}
        self._held = 0
        self._space.set()

    def restart(self, gen: int, why: str) -> None:
        if gen == self._gen and self._session_task is not None:
            self._session_task.cancel()

    async def stop_taking(self) -> None:
        self._stopping = True
        self._wake.set()
        self._space.set()

    # ------------------------------------------------------------------ taking a file

    async def _take(self, feed: SourceFeed, ref: FileRef, gen: int) -> None:
        fid = self.ids.file_id(self.cfg.name, ref)
        rec = _InHand(ref, fid, gen, time.monotonic())
        self._by_name[ref.name] = rec
        self._m_taken.inc()
        chunker = Chunker(file_id=fid, name=ref.name, size=ref.size, mtime_ns=ref.mtime_ns,
                          chunk_bytes=self.fcfg.chunk_size, single=True)
        complete = False
        try:
            async for block in self.adapter.open(ref):
                for chunk in chunker.feed(block):
                    if not await self._hand(feed, rec, chunk):
                        return
            tail, last = chunker.close()
            for chunk in tail:
                if not await self._hand(feed, rec, chunk):
                    return
            complete = await self._hand(feed, rec, last)
        except FileChanged as exc:
            rec.put_back = exc.reason
            log.info("file changed while read; left in place", extra={
                "route": self.cfg.name, "file": fingerprint(ref.name), "file_id": fid, "reason": exc.reason,
                "detail": exc.detail})
            self._give_up(feed, rec)
        except LinkError:
            rec.put_back = "unavailable"
            raise
        except FileError as exc:  # a storage error reading it, or it became a link: leave it for now
            rec.put_back = exc.reason
            log.warning("cannot read file; left in place", extra={
                "route": self.cfg.name, "file": fingerprint(ref.name), "reason": exc.reason, "detail": exc.detail})
            self._give_up(feed, rec)
        finally:
            if not complete and not rec.put_back and rec.dest is None:
                rec.put_back = "interrupted"  # never finish a file whose last frame did not go
            rec.reading = False
            self._maybe_done(rec)

    async def _hand(self, feed: SourceFeed, rec: _InHand, frame: Frame) -> bool:
        """Hand one frame to the route (waiting for room in the window); False: stop reading this file."""
        while self._held >= self.cfg.prefetch and not isinstance(frame, Abort):
            self._space.clear()
            await self._space.wait()
            if self._stopping or rec.dest is not None or rec.gen != self._gen:
                break
        if rec.gen != self._gen or (not isinstance(frame, Abort) and (rec.dest is not None or rec.put_back)):
            return False
        if self._stopping and not isinstance(frame, Abort):
            rec.put_back = "stopping"
            return False
        self._tag += 1
        tag = self._tag
        rec.tags.add(tag)
        self._by_tag[tag] = rec
        self._held += 1
        if isinstance(frame, Chunk):
            rec.chunks_out += 1
        feed.delivered(rec.gen, tag, frame_message(self.cfg.name, frame, time.time(), in_order=self.fcfg.in_order),
                       None)
        return True

    def _give_up(self, feed: SourceFeed, rec: _InHand) -> None:
        """Withdraw the chunks already sent (an abort frame) and make the next attempt a new file id."""
        if rec.aborted or rec.chunks_out == 0:
            return
        rec.aborted = True
        with contextlib.suppress(OSError):
            self.ids.given_up(self.cfg.name, rec.ref)
        if rec.gen == self._gen:
            self._spawn(self._hand(feed, rec, Abort(rec.file_id)))

    # ------------------------------------------------------------------ settling

    def ack(self, gen: int, tags: Sequence[int]) -> None:
        if gen != self._gen:
            return
        touched: list[_InHand] = []
        for tag in tags:
            rec = self._by_tag.pop(tag, None)
            if rec is None:
                continue
            if tag in rec.tags:
                rec.tags.discard(tag)
                self._held -= 1
            touched.append(rec)
        self._space.set()
        for rec in dict.fromkeys(touched):
            self._maybe_done(rec)

    def set_aside(self, leg: Leg) -> None:
        """A frame refused (policy, sink): the file goes into quarantine/ or dead-letter/ once settled."""
        assert self._feed is not None
        recs: list[_InHand] = []
        for item in leg.parents:
            rec = self._by_tag.get(item.tag) if item.gen == self._gen else None
            if rec is None:
                continue
            if item.tag in rec.tags:
                rec.tags.discard(item.tag)
                rec.aside_tags.add(item.tag)
            recs.append(rec)
        if not recs:  # nothing of ours (stale): the book drops it; say it is done
            asyncio.get_running_loop().call_soon(self._feed.aside_done, leg, Confirm.ACK)
            return
        for rec in dict.fromkeys(recs):
            rec.aside_legs.append(leg)
            if leg.dest is Dest.RETRY:
                rec.put_back = rec.put_back or "retry"
            elif rec.dest is not Dest.QUARANTINE:
                rec.dest, rec.reason = leg.dest, leg.reason
            self._give_up(self._feed, rec)
            self._maybe_done(rec)

    def _maybe_done(self, rec: _InHand) -> None:
        if rec.reading or rec.tags or rec.finishing or rec.gen != self._gen:
            return  # (a record of an ended session is forgotten: its file is taken again)
        rec.finishing = True
        self._spawn(self._finish(rec))

    async def _finish(self, rec: _InHand) -> None:
        ref, name = rec.ref, self.cfg.name
        outcome, keep_in = "sent", ("done" if self.fcfg.after == "done" else None)
        if rec.put_back:
            outcome = "put_back"
        elif rec.dest is not None:
            outcome = "quarantined" if rec.dest is Dest.QUARANTINE else "dead_lettered"
            keep_in = "quarantine" if rec.dest is Dest.QUARANTINE else "dead-letter"
        try:
            if outcome != "put_back":
                await self.adapter.finish(ref, keep_in=keep_in)
        except FileChanged as exc:
            outcome = "put_back"
            log.warning("file changed after it was sent; left in place", extra={
                "route": name, "file": fingerprint(ref.name), "file_id": rec.file_id, "reason": exc.reason})
        except FileError as exc:
            rec.finish_failures += 1
            if rec.finish_failures % 12 == 1:  # the first time, then once a minute
                log.error("cannot finish file; will try again", extra={
                    "route": name, "file": fingerprint(ref.name), "file_id": rec.file_id, "reason": exc.reason,
                    "error": exc.detail, "attempts": rec.finish_failures})
            rec.finishing = False
            asyncio.get_running_loop().call_later(FINISH_RETRY, self._maybe_done, rec)
            return
        self.metrics.files.labels(name, outcome).inc()
        self.metrics.file_bytes.labels(name, outcome).inc(ref.size)
        extra = {"route": name, "file": fingerprint(ref.name), "file_id": rec.file_id, "size": ref.size}
        if outcome == "sent":
            self.metrics.file_transfer.labels(name).observe(time.monotonic() - rec.started)
            log.info("file sent", extra={**extra, "after": self.fcfg.after})
        elif outcome != "put_back":
            log.warning("file set aside", extra={**extra, "dest": keep_in, "reason": rec.reason})
        if self._by_name.get(ref.name) is rec:
            del self._by_name[ref.name]
        if rec.gen == self._gen:
            self._held -= len(rec.aside_tags)
            self._space.set()
        if outcome != "put_back":
            self._first_seen.pop(ref.name, None)
        assert self._feed is not None
        for leg in rec.aside_legs:
            self._feed.aside_done(leg, Confirm.ACK)
        self._wake.set()

    async def _refuse(self, refused: Refused) -> None:
        """A listed name the completion rule refuses (unsafe, a link): quarantine it, untouched."""
        extra = {"route": self.cfg.name, "file": fingerprint(refused.name), "reason": refused.error.reason}
        if refused.ref is None:
            if refused.name not in self._reported:
                self._reported.add(refused.name)
                log.warning("file name refused; left in place", extra={**extra, "detail": refused.error.detail})
            return
        try:
            await self.adapter.finish(refused.ref, keep_in="quarantine")
        except FileError as exc:
            if refused.name not in self._reported:
                self._reported.add(refused.name)
                log.warning("file name refused; left in place", extra={**extra, "detail": exc.detail})
            return
        self._m_taken.inc()
        self.metrics.files.labels(self.cfg.name, "quarantined").inc()
        self.metrics.file_bytes.labels(self.cfg.name, "quarantined").inc(refused.ref.size)
        log.warning("file set aside", extra={**extra, "dest": "quarantine", "size": refused.ref.size,
                                             "file_id": "-"})

    # ------------------------------------------------------------------ views

    def _observe(self, ready: Sequence[FileRef], waiting: Sequence[FileRef]) -> None:
        now = time.time()
        listed = {r.name: (r, "ready") for r in ready}
        listed.update({r.name: (r, "waiting") for r in waiting})
        self._listed = listed
        for name in listed:
            self._first_seen.setdefault(name, now)
        for name in list(self._first_seen):
            if name not in listed and name not in self._by_name:
                del self._first_seen[name]
        self.metrics.files_waiting.labels(self.cfg.name).set(len(self._first_seen))
        self.metrics.file_oldest_waiting.labels(self.cfg.name).set(self.oldest_waiting())

    def oldest_waiting(self) -> float:
        if not self._first_seen:
            return 0.0
        return max(0.0, time.time() - min(self._first_seen.values()))

    def waiting(self) -> list[dict[str, Any]]:
        """The files at the source not yet finished, for ``jgw status`` (oldest first)."""
        now = time.time()
        out = []
        for name, since in sorted(self._first_seen.items(), key=lambda kv: kv[1]):
            rec = self._by_name.get(name)
            ref = rec.ref if rec is not None else self._listed.get(name, (None, ""))[0]
            state = self._listed.get(name, (None, "gone"))[1]
            if rec is not None:
                state = "finishing" if rec.finishing else "sending" if rec.reading else "in hand"
            out.append({"name": render(name, 48), "file": fingerprint(name), "size": ref.size if ref else None,
                        "state": state, "age_seconds": round(now - since, 1)})
        return out

    async def depth(self) -> int | None:
        self.metrics.file_oldest_waiting.labels(self.cfg.name).set(self.oldest_waiting())
        return sum(1 for name, (_, st) in self._listed.items() if st == "ready" and name not in self._by_name)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.adapter.close()
