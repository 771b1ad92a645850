"""Writing the trail: ``AuditLog`` buffers records, commits them with one write and one fsync, rotates
and expires segments, repairs a torn tail.

Security: writes local files only (directory 0700, segments 0600, closed segments 0400).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.audit.format import (
    _FIELD_RE,
    _GOOD_KEYS,
    _MAX_STR,
    CONTENT_NAMES,
    EVENTS,
    FORMAT,
    GENESIS,
    LOCK_NAME,
    OWN_EVENTS,
    RESERVED,
    UNREDACTED,
    _canonical,
    _parse_line,
    _parse_utc,
    _segment_name,
    _utc,
    read_lines,
    segment_files,
)
from gateway.audit.settings import Retention
from gateway.errors import DataError, PermissionError_, TempFailError, UnavailableError
from gateway.policy.redact import IdKey, is_id_field, redact_text, safe_id

log = logging.getLogger("gateway.audit")


@dataclass
class _Tail:
    """What ``open`` learns from the active segment."""

    good_end: int = 0
    last_seq: int = -1
    last_hash: str = GENESIS
    last_event: str = ""
    first_seq: int = -1
    first_time: float = 0.0
    records: int = 0
    specific: bool = False
    torn: bytes = b""
    torn_cause: str = ""
    damage: str | None = None


def _scan_active(path: Path, retention: Retention) -> _Tail:
    data = path.read_bytes()
    tail = _Tail()
    prev: str | None = None
    for line in read_lines(data):
        rec = line.record
        ok = rec is not None and (prev is None or rec["prev"] == prev) and \
            (tail.last_seq < 0 or rec["seq"] == tail.last_seq + 1)
        if not ok:
            rest = data[line.offset:]
            cause = line.problem or "the hash chain breaks here"
            if _looks_torn(rest, tail.last_seq):
                tail.torn, tail.torn_cause = rest, cause
            else:
                tail.damage = f"{path}: record {line.number} (offset {line.offset}): {cause}"
            return tail
        assert rec is not None
        if tail.first_seq < 0:
            tail.first_seq = rec["seq"]
            tail.first_time = _parse_utc(rec["t"])
        prev = line.hash
        tail.good_end = line.offset + len(line.raw) + 1
        tail.last_seq, tail.last_hash, tail.last_event = rec["seq"], line.hash, rec["ev"]
        tail.records += 1
        tail.specific = tail.specific or retention.is_specific(rec.get("route"))
    return tail


def _looks_torn(rest: bytes, last_seq: int) -> bool:
    """A torn write leaves an incomplete last line and/or NUL-filled blocks, possibly with complete
    records of the same unfinished batch after them; never a complete record that fails its hash."""
    for line in read_lines(rest):
        if line.problem is None:
            assert line.record is not None
            if line.record["seq"] <= last_seq:
                return False
        elif line.complete and line.raw.strip(b"\x00") != b"":
            return False
    return True


# --- writing ---------------------------------------------------------------------------------------

class AuditLog:
    """The node's audit log. ``record`` buffers; ``commit`` makes the buffer durable."""

    def __init__(self, directory: Path, node_id: str, retention: Retention, segment_bytes: int,
                 segment_age: float, clock: Callable[[], float], lock_fd: int,
                 id_key: bytes | None = None) -> None:
        self.directory = directory
        self.id_key = id_key
        self.node_id = node_id
        self.retention = retention
        self.segment_bytes = segment_bytes
        self.segment_age = segment_age
        self._clock = clock
        self._lock_fd = lock_fd
        self._fd = -1
        self._path = directory
        self._size = 0
        self._seq = -1
        self._head = GENESIS
        self._segment_first = 0
        self._segment_started = 0.0
        self._segment_records = 0
        self._segment_specific = False
        self._pending: list[tuple[str, float, dict[str, Any]]] = []
        self._buffer_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._broken: str | None = None

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str | Path, node_id: str, *, retention: Retention | None = None,
             segment_bytes: int = 64 * 1024 * 1024, segment_age: float = 86400.0,
             clock: Callable[[], float] = time.time, id_key: IdKey | bytes | None = None) -> AuditLog:
        """Open (or create) the log in ``directory``, recovering a torn tail left by a crash.

        ``id_key`` is the node's id-digest key (``IdKey.in_state_dir(state_dir)``, loaded here, so
        created on first start): an id that may hold a 個人番号 is recorded as its keyed digest.
        Without one such an id is masked instead (never recorded in clear, but not findable).

        Raises TempFailError if another process holds the log, DataError if a segment is damaged
        (not merely torn), PermissionError_/UnavailableError if the directory or key cannot be used.
        """
        if isinstance(id_key, IdKey):
            id_key = id_key.load()
        directory = Path(directory)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError as exc:
            raise PermissionError_(f"audit log {directory}: {exc.strerror}") from exc
        except OSError as exc:
            raise UnavailableError(f"audit log {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise TempFailError(f"audit log {directory} is in use by another process") from exc
        self = cls(directory, node_id, retention or Retention(), segment_bytes, segment_age, clock, lock_fd,
                   id_key)
        try:
            self._open_active()
        except BaseException:
            self._release()
            raise
        self.record("log-open", node=node_id, format=FORMAT, pid=os.getpid())
        self.commit()
        return self

    def _open_active(self) -> None:
        segments = segment_files(self.directory)
        while segments:
            first, path = segments[-1]
            tail = _scan_active(path, self.retention)
            if tail.damage is not None:
                raise DataError(f"audit log damaged: {tail.damage}; run `jgw audit verify {self.directory}` "
                                f"and, once investigated, `jgw audit recover {self.directory}`")
            if tail.torn:
                self._set_aside(path, tail.good_end, tail.torn, tail.last_seq + 1, tail.torn_cause)
            if tail.records == 0:  # a segment whose header never reached the disk
                path.unlink()
                _fsync_dir(self.directory)
                segments.pop()
                continue
            self._seq, self._head = tail.last_seq, tail.last_hash
            if tail.last_event == "segment-close":
                os.chmod(path, 0o400)
                self._start_segment(predecessor=path.name)
            else:
                self._attach(path, first, tail)
            return
        self._start_segment(predecessor=None)

    def _set_aside(self, path: Path, good_end: int, torn: bytes, seq: int, cause: str) -> None:
        stamp = dt.datetime.fromtimestamp(self._clock(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.torn-{seq}-{stamp}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        try:
            os.write(fd, torn)
            os.fsync(fd)
        finally:
            os.close(fd)
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.directory)
        self._pending_recovery = {"segment": path.name, "offset": good_end, "bytes": len(torn),
                                  "aside": aside.name, "aside_sha256": hashlib.sha256(torn).hexdigest(),
                                  "cause": cause}
        log.warning("audit log %s: torn tail of %d bytes at offset %d set aside as %s (%s)",
                    path.name, len(torn), good_end, aside.name, cause)

    _pending_recovery: dict[str, Any] | None = None

    def _attach(self, path: Path, first: int, tail: _Tail) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._path = path
        self._size = tail.good_end
        self._segment_first = tail.first_seq
        self._segment_started = tail.first_time
        self._segment_records = tail.records
        self._segment_specific = tail.specific
        if self._pending_recovery is not None:
            self.record("recovered", **self._pending_recovery)
            self._pending_recovery = None

    def _start_segment(self, predecessor: str | None) -> None:
        first = self._seq + 1
        path = self.directory / _segment_name(first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._fd, self._path, self._size = fd, path, 0
        self._segment_first, self._segment_started = first, self._clock()
        self._segment_records, self._segment_specific = 0, False
        policy = {"specific": str(self.retention.specific), "general": str(self.retention.general)}
        header = {"format": FORMAT, "node": self.node_id, "anchor": self._head, "predecessor": predecessor,
                  "retention": policy}
        self._write([self._serialise("segment-open", self._segment_started, header)])
        _fsync_dir(self.directory)
        if self._pending_recovery is not None:
            self.record("recovered", **self._pending_recovery)
            self._pending_recovery = None

    # -- recording ---------------------------------------------------------------------------------

    def record(self, event: str, **fields: Any) -> None:
        """Buffer one record. Raises ValueError/TypeError for a misuse (our bug), never for data."""
        if event not in EVENTS and event not in OWN_EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        clean: dict[str, Any] = {}
        for key, value in fields.items():
            if key not in _GOOD_KEYS:
                if not _FIELD_RE.match(key) or key in RESERVED or key in CONTENT_NAMES:
                    raise ValueError(f"audit field name {key!r} is not allowed")
                _GOOD_KEYS.add(key)
            clean[key] = value if value.__class__ is int else _clean_value(key, value, self.id_key)
        with self._buffer_lock:
            self._pending.append((event, self._clock(), clean))

    def commit(self) -> int:
        """Write and fsync every buffered record; return how many. Evidence first, then the ack.

        Raises TempFailError when the disk refuses (nothing is half-written: the segment is cut
        back and the records stay buffered for the next commit) and UnavailableError after a
        failed fsync (the log must be reopened: the kernel may have dropped the dirty pages).
        """
        with self._commit_lock:
            if self._broken is not None:
                raise UnavailableError(self._broken)
            with self._buffer_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            seq, head, size = self._seq, self._head, self._size
            records, specific = self._segment_records, self._segment_specific
            try:
                lines = [self._serialise(ev, ts, f) for ev, ts, f in batch]
                self._write(lines)
            except TempFailError:
                self._seq, self._head, self._size = seq, head, size
                self._segment_records, self._segment_specific = records, specific
                with self._buffer_lock:
                    self._pending[:0] = batch
                raise
            # The batch is durable from here on: a failed rotation must not re-queue it.
            for _, _, f in batch:
                if self.retention.is_specific(f.get("route")):
                    self._segment_specific = True
            if self._size >= self.segment_bytes or self._clock() - self._segment_started >= self.segment_age:
                try:
                    self._rotate()
                except (OSError, TempFailError, UnavailableError) as exc:
                    self._broken = f"audit log {self.directory}: rotation failed ({exc}); restart jgw"
                    log.error("%s", self._broken)
            return len(batch)

    def _serialise(self, event: str, ts: float, fields: Mapping[str, Any]) -> bytes:
        self._seq += 1
        body = dict(fields)
        body["seq"], body["prev"], body["t"], body["ev"] = self._seq, self._head, _utc(ts), event
        raw = _canonical(body)
        digest = hashlib.sha256(raw).hexdigest()
        self._head = digest
        self._segment_records += 1
        return raw + b"\t" + digest.encode() + b"\n"

    def _write(self, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                self._broken = f"audit log {self._path}: cannot write ({exc.strerror}) and cannot cut back"
            raise TempFailError(f"audit log {self._path}: cannot write ({exc.strerror}); messages are not "
                                "acknowledged until the audit log accepts them") from exc
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._broken = (f"audit log {self._path}: fsync failed ({exc.strerror}); reopen the log "
                            "(restart jgw) so it re-reads what reached the disk")
            raise UnavailableError(self._broken) from exc
        self._size += len(data)

    def _rotate(self) -> None:
        until = self._retain_until(self._clock())
        self._write([self._serialise("segment-close", self._clock(), {
            "records": self._segment_records + 1, "first_seq": self._segment_first, "last_seq": self._seq + 1,
            "retain": "specific" if self._segment_specific else "general", "retain_until": _utc(until)})])
        old = self._path
        os.close(self._fd)
        self._fd = -1
        os.chmod(old, 0o400)
        self._start_segment(predecessor=old.name)

    def _retain_until(self, last: float) -> float:
        period = self.retention.specific if self._segment_specific else self.retention.general
        return period.after(last)

    # -- retention ---------------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> list[str]:
        """Delete closed segments past their ``retain_until``, oldest first; return their names.

        Each deletion is preceded by a committed ``expire`` record naming the segment's last seq
        and hash, so verification of what remains starts from a recorded anchor. Stops at the first
        segment that must still be kept (or cannot be read): segments only ever go oldest first.
        """
        now = self._clock() if now is None else now
        removed: list[str] = []
        for _, path in segment_files(self.directory):
            if path == self._path:
                break
            close = _last_record(path)
            if close is None or close["ev"] != "segment-close" or _parse_utc(close["retain_until"]) > now:
                break
            self.record("expire", segment=path.name, first_seq=close["first_seq"], last_seq=close["seq"],
                        last_hash=close["_hash"], retain_until=close["retain_until"])
            self.commit()
            os.chmod(path, 0o600)
            path.unlink()
            _fsync_dir(self.directory)
            removed.append(path.name)
            log.info("audit segment %s expired (kept until %s)", path.name, close["retain_until"])
        return removed

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last committed record: export it to anchor later verification."""
        return self._seq, self._head

    def close(self) -> None:
        if self._fd >= 0 and self._broken is None:
            self.record("log-close", node=self.node_id)
            self.commit()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._release()

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({self.directory}, seq={self._seq}, segment={self._path.name})"


def _clean_value(key: str, value: Any, id_key: bytes | None) -> Any:
    """A field value as recorded: digests and names as they are; an id (``is_id_field``) as it is,
    or as its keyed digest when it may hold a 個人番号; other text with such digits masked."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"audit field {key!r}: not a finite number")
        return value
    if isinstance(value, str):
        if key in UNREDACTED:
            return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "…"
        if is_id_field(key):  # the whole id, digested before any cut, so it can be looked up
            value = safe_id(value, id_key)
            return value if len(value) <= _MAX_STR else value[:_MAX_STR] + "…"
        if len(value) > _MAX_STR:
            value = value[:_MAX_STR] + "…"
        return redact_text(value)
    if isinstance(value, list | tuple):
        return [_clean_value(key, v, id_key) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _clean_value(key, v, id_key) for k, v in value.items()}
    raise TypeError(f"audit field {key!r}: {type(value).__name__} is not recordable (never payload bytes)")


def _last_record(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - 65536))
        data = fh.read()
    end = data.rstrip(b"\n").rfind(b"\n") + 1
    line = _parse_line(0, end, data[end:].rstrip(b"\n"), data.endswith(b"\n"))
    if line.record is None:
        return None
    return {**line.record, "_hash": line.hash}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
