"""The audit trail: append-only, hash-chained evidence of what jgw did with each message.

NAME
    audit - write, rotate, expire and verify the node's audit segments

SYNOPSIS
    log = AuditLog.open(directory, node_id, retention=Retention(...))
    log.record("accept", msg=..., route=..., seed=..., peer=..., size=..., digest=...)
    log.commit()          # write + fsync the buffered records; call before acknowledging the source
    log.expire()          # delete whole segments past their retention (recorded first)
    log.close()
    report = verify(directory)

DESCRIPTION
    One record is one line: ``BODY<TAB>HASH<LF>``. BODY is a JSON object in canonical form (keys
    sorted, no spaces, ASCII only, so it contains no TAB or LF); HASH is the lower-case hex SHA-256
    of the BODY bytes. Every BODY holds ``seq`` (0, 1, 2, … across all segments), ``prev`` (the
    HASH of the record before it; 64 zeros before the very first), ``t`` (UTC time, RFC 3339 with
    microseconds) and ``ev`` (the event). docs/audit.md is the format reference for auditors.

    Records go to segment files ``audit-<first seq, 16 digits>.log``. A segment starts with a
    ``segment-open`` record whose ``anchor`` is the HASH of the last record of the segment before
    it, and ends with a ``segment-close`` record saying until when it must be kept. Segments rotate
    by size and age; whole segments expire, oldest first, and an ``expire`` record (written and
    fsynced before the file is removed) names the expired segment's last seq and HASH, so the
    remaining chain still verifies from a known anchor.

    ``record`` only buffers (microseconds). ``commit`` writes every buffered record with one write()
    and one fsync(): evidence is on disk before the relay acknowledges the source. A crash during a
    write can leave a torn tail (an incomplete line, or NUL bytes where blocks were not written):
    ``open`` detects it, moves the torn bytes to ``<segment>.torn-<seq>-<time>`` (kept, read-only),
    truncates the segment to its last complete record and writes a ``recovered`` record saying so.
    A complete record that fails its hash is not a crash artefact: ``open`` refuses (DataError) and
    names it; after investigation ``jgw audit recover`` sets the damaged tail aside explicitly.

    Records carry ids, route names, seed references, peers, sizes, digests and outcomes; never
    payload bytes. String values other than digests pass the 個人番号 redactor, so a source system
    that puts a 個人番号 in a message id does not put it in seven years of evidence.

BUGS
    A hash chain proves order and integrity relative to a known head. Someone able to rewrite the
    files could rewrite the whole tail consistently; export ``head()`` (``jgw audit head``)
    regularly to somewhere they cannot reach and verify with ``--anchor`` (docs/audit.md).

Security: writes local files only (directory 0700, segments 0600, closed segments 0400); reads
nothing from messages but ids, sizes and digests handed to it by the relay.
"""

from __future__ import annotations

import calendar
import datetime as dt
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import DataError, NoInputError, PermissionError_, TempFailError, UnavailableError
from gateway.redact import redact_text

if TYPE_CHECKING:
    from gateway.config import Options, RouteConfig

log = logging.getLogger(__name__)

FORMAT = "jgw-audit/1"
GENESIS = "0" * 64
SEGMENT_RE = re.compile(r"^audit-(\d{16})\.log$")
LOCK_NAME = ".lock"

#: Events the relay and the operator commands write.
EVENTS = frozenset({"accept", "deliver", "quarantine", "dead-letter", "replay", "duplicate", "operator",
                    "config-change", "cert-change", "start", "stop"})
#: Events this module writes itself.
OWN_EVENTS = frozenset({"segment-open", "segment-close", "log-open", "log-close", "recovered", "expire"})
RESERVED = frozenset({"seq", "prev", "t", "ev"})
#: Field names that could only mean content: refused outright.
CONTENT_NAMES = frozenset({"body", "payload", "data", "content", "text"})
#: Values that are hex digests or config names: never redacted (masking a digest destroys evidence).
UNREDACTED = frozenset({"digest", "route", "seed", "reason", "outcome", "node", "peer", "key_id",
                        "fingerprint", "anchor", "last_hash", "aside_sha256", "old", "new", "format",
                        "predecessor", "segment", "aside", "retain", "retain_until", "file", "cause"})
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_GOOD_KEYS: set[str] = set()
_MAX_STR = 2048


def payload_digest(body: bytes) -> str:
    """The digest the relay records for a payload: ``sha256:<hex>`` of the exact bytes."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _canonical(obj: Mapping[str, Any]) -> bytes:
    return _ENCODER.encode(obj).encode()


_utc_cache: tuple[int, str] = (-1, "")


def _utc(ts: float) -> str:
    """RFC 3339 UTC with microseconds; the date-time part is cached per second (hot path)."""
    global _utc_cache
    whole = int(ts)
    if _utc_cache[0] != whole:
        _utc_cache = (whole, dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_utc_cache[1]}.{int((ts - whole) * 1e6):06d}Z"


def _parse_utc(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC).timestamp()


def add_years(ts: float, years: int) -> float:
    """``ts`` plus calendar years (29 February → 1 March), as 番号法 periods are counted."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    try:
        moved = d.replace(year=d.year + years)
    except ValueError:
        moved = d.replace(year=d.year + years, month=3, day=1)
    return calendar.timegm(moved.utctimetuple()) + moved.microsecond / 1e6


@dataclass(frozen=True)
class Period:
    """A retention period: whole calendar years plus seconds ("7y", "400d", "12h")."""

    years: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Period:
        m = re.fullmatch(r"\s*(\d+)\s*(y|d|h|s)\s*", text)
        if not m:
            raise ValueError(f"expected a period such as '7y', '400d' or '12h', got {text!r}")
        n, unit = int(m.group(1)), m.group(2)
        if unit == "y":
            return cls(years=n)
        return cls(seconds=n * {"d": 86400.0, "h": 3600.0, "s": 1.0}[unit])

    def after(self, ts: float) -> float:
        return add_years(ts, self.years) + self.seconds

    def __str__(self) -> str:
        if self.years and not self.seconds:
            return f"{self.years}y"
        if self.seconds % 86400 == 0 and not self.years:
            return f"{int(self.seconds // 86400)}d"
        return f"{self.years}y+{self.seconds:g}s"


@dataclass(frozen=True)
class Retention:
    """How long segments are kept after their last record.

    A segment holding any record of a route that carries 特定個人情報 keeps ``specific`` (default 7
    years: 番号法 §23 情報提供等の記録); any other segment keeps ``general``.
    """

    specific: Period = Period(years=7)
    general: Period = Period(years=7)
    specific_routes: frozenset[str] = frozenset()

    def is_specific(self, route: str | None) -> bool:
        return route is not None and route in self.specific_routes


@dataclass(frozen=True)
class AuditSettings:
    directory: Path
    retention: Retention
    segment_bytes: int
    segment_age: float


def audit_settings(opt: Options, state_dir: Path, routes: Mapping[str, RouteConfig]) -> AuditSettings:
    """Read the optional ``[audit]`` table strictly (for gateway.config). Routes that may carry the
    個人番号, or that name a seed flow (every seed flow is part of a 特定個人情報ファイル), are
    'specific'."""
    directory = opt.path_value("dir", None) or state_dir / "audit"
    periods = {}
    for key in ("retention_specific", "retention_general"):
        raw = opt.str(key, "7y")
        try:
            periods[key] = Period.parse(raw)
        except ValueError as exc:
            raise opt.error(key, str(exc)) from exc
    size = opt.size("segment_size", "64MiB")
    if size < 4096:
        raise opt.error("segment_size", "must be at least 4KiB")
    age = opt.duration("segment_age", "1d", min=60.0)
    opt.done()
    specific = frozenset(r.name for r in routes.values() if r.personal_number == "allowed" or r.seed)
    retention = Retention(periods["retention_specific"], periods["retention_general"], specific)
    return AuditSettings(Path(directory), retention, size, age)


# --- reading segments ------------------------------------------------------------------------------

@dataclass
class Line:
    number: int  # 1-based line number in its file
    offset: int
    raw: bytes  # without the LF
    complete: bool  # ended with LF
    body: bytes = b""
    hash: str = ""
    record: dict[str, Any] | None = None
    problem: str | None = None  # why it is not a valid record on its own


def _parse_line(number: int, offset: int, raw: bytes, complete: bool) -> Line:
    line = Line(number, offset, raw, complete)
    if not complete:
        line.problem = "incomplete record (no end of line): torn write or truncation"
        return line
    if raw.strip(b"\x00") == b"":
        line.problem = "unwritten bytes (NUL): torn write"
        return line
    body, tab, digest = raw.rpartition(b"\t")
    if not tab or not re.fullmatch(rb"[0-9a-f]{64}", digest):
        line.problem = "not a record (expected BODY<TAB>SHA-256)"
        return line
    line.body, line.hash = body, digest.decode()
    if hashlib.sha256(body).hexdigest() != line.hash:
        line.problem = "content does not match its hash: the record was edited"
        return line
    try:
        rec = json.loads(body)
    except ValueError:
        line.problem = "body is not JSON"
        return line
    if not (isinstance(rec, dict) and isinstance(rec.get("seq"), int) and isinstance(rec.get("prev"), str)
            and isinstance(rec.get("ev"), str) and isinstance(rec.get("t"), str)):
        line.problem = "body lacks seq, prev, t or ev"
        return line
    line.record = rec
    return line


def read_lines(data: bytes) -> Iterator[Line]:
    offset = 0
    number = 0
    while offset < len(data):
        number += 1
        end = data.find(b"\n", offset)
        if end < 0:
            yield _parse_line(number, offset, data[offset:], False)
            return
        yield _parse_line(number, offset, data[offset:end], True)
        offset = end + 1


def segment_files(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for p in directory.iterdir():
        m = SEGMENT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def _segment_name(first_seq: int) -> str:
    return f"audit-{first_seq:016d}.log"


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
                 segment_age: float, clock: Callable[[], float], lock_fd: int) -> None:
        self.directory = directory
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
             clock: Callable[[], float] = time.time) -> AuditLog:
        """Open (or create) the log in ``directory``, recovering a torn tail left by a crash.

        Raises TempFailError if another process holds the log, DataError if a segment is damaged
        (not merely torn), PermissionError_/UnavailableError if the directory cannot be used.
        """
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
        self = cls(directory, node_id, retention or Retention(), segment_bytes, segment_age, clock, lock_fd)
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
            clean[key] = value if value.__class__ is int else _clean_value(key, value)
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


def _clean_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"audit field {key!r}: not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_STR:
            value = value[:_MAX_STR] + "…"
        return value if key in UNREDACTED else redact_text(value)
    if isinstance(value, list | tuple):
        return [_clean_value(key, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _clean_value(key, v) for k, v in value.items()}
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


# --- verification ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    file: str
    record: int  # line number in the file (1-based); 0 for the file as a whole
    seq: int | None
    what: str

    def __str__(self) -> str:
        where = f"{self.file}: record {self.record}" if self.record else self.file
        seq = f" (seq {self.seq})" if self.seq is not None else ""
        return f"{where}{seq}: {self.what}"


@dataclass
class Report:
    segments: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str | None = None
    problems: list[Finding] = field(default_factory=list)
    notices: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def verify(path: str | Path, anchors: Mapping[int, str] | None = None) -> Report:
    """Check every segment under ``path`` (a directory, or one segment file).

    Reports, with file, record (line) number and seq: edited records, removed or reordered
    records, segments missing or out of place, a torn tail, records before the first remaining
    one that no ``expire`` record accounts for, and ``anchors`` ({seq: hash} exported earlier)
    that do not match. Raises NoInputError when there is nothing to verify.
    """
    path = Path(path)
    if path.is_dir():
        files = [p for _, p in segment_files(path)]
        directory = path
    elif path.is_file():
        files, directory = [path], path.parent
    else:
        raise NoInputError(f"{path}: no such file or directory")
    if not files:
        raise NoInputError(f"{path}: no audit segments (audit-*.log)")
    report = Report(segments=len(files))

    def bad(file: str, number: int, seq: int | None, what: str) -> None:
        report.problems.append(Finding(file, number, seq, what))

    def note(file: str, number: int, seq: int | None, what: str) -> None:
        report.notices.append(Finding(file, number, seq, what))

    live = _writer_active(directory)
    expired: dict[str, dict[str, Any]] = {}
    hashes: dict[int, str] = {}
    head: str | None = None
    expect_seq: int | None = None
    first_anchor: tuple[Finding, int, str] | None = None
    for index, file in enumerate(files):
        name = file.name
        last_file = index == len(files) - 1
        try:
            data = file.read_bytes()
        except PermissionError as exc:
            raise PermissionError_(f"{file}: {exc.strerror}") from exc
        closed = False
        first = True
        for line in read_lines(data):
            rec = line.record
            if rec is None:
                torn = last_file and _looks_torn(data[line.offset:], expect_seq - 1 if expect_seq else -1)
                if torn and live:
                    note(name, line.number, None, f"{line.problem}; a writer is "
                                                  "active, this may be a write in progress")
                    break
                what = line.problem or "not a record"
                if torn:
                    what += " (consistent with a crash: `jgw run` sets it aside on start)"
                bad(name, line.number, None, what)
                if torn:
                    break
                head = line.hash or head
                if expect_seq is not None:
                    expect_seq += 1
                first = False
                continue
            seq, ev = rec["seq"], rec["ev"]
            report.records += 1
            report.first_seq = seq if report.first_seq is None else report.first_seq
            if closed:
                bad(name, line.number, seq, "record after the segment-close record")
            if first:
                m = SEGMENT_RE.match(name)
                if ev != "segment-open":
                    bad(name, line.number, seq, "a segment must start with "
                                                   "segment-open: its beginning was removed")
                elif rec.get("anchor") != rec["prev"]:
                    bad(name, line.number, seq, "segment-open anchor differs from prev")
                if m and int(m.group(1)) != seq and path.is_dir():
                    bad(name, line.number, seq, f"file name says first seq "
                                                   f"{int(m.group(1))}: segment renamed or reordered")
            if expect_seq is None:
                if not (seq == 0 and rec["prev"] == GENESIS):
                    first_anchor = (Finding(name, line.number, seq, ""), seq, rec["prev"])
            elif seq != expect_seq:
                if seq > expect_seq:
                    what = f"seq jumps from {expect_seq - 1} to {seq}: record(s) removed or moved"
                else:
                    what = f"seq {seq} after {expect_seq - 1}: record moved or duplicated"
                bad(name, line.number, seq, what)
            elif rec["prev"] != head:
                what = "the record before this one was altered or replaced (hash chain broken)"
                if first:
                    what = "does not follow the previous segment's last record (anchor mismatch)"
                bad(name, line.number, seq, what)
            if ev == "segment-close":
                closed = True
            if ev == "expire":
                expired[rec.get("last_hash", "")] = rec
            if ev == "recovered":
                note(name, line.number, seq, f"torn tail of {rec.get('bytes')} bytes set "
                                              f"aside as {rec.get('aside')} at start-up ({rec.get('cause')})")
            hashes[seq] = line.hash
            head, expect_seq = line.hash, seq + 1
            report.last_seq, report.head = seq, line.hash
            first = False
        if not closed and not last_file:
            bad(name, 0, None, "segment ends without segment-close: truncated, or a "
                                           "later segment was put in its place")
    if first_anchor is not None:
        finding, seq, anchor = first_anchor
        rec = expired.get(anchor)
        if rec is not None and rec.get("last_seq") == seq - 1:
            note(finding.file, finding.record, seq, f"records before seq {seq} expired "
                                          f"with segment {rec.get('segment')} (kept until "
                                          f"{rec.get('retain_until')}); chain anchored to its last hash")
        elif path.is_dir():
            bad(finding.file, finding.record, seq, f"records 0..{seq - 1} are missing "
                                           "and no expire record accounts for them")
        else:
            note(finding.file, finding.record, seq, "single segment checked: its anchor "
                                          "to earlier segments was not verified")
    for seq, digest in sorted((anchors or {}).items()):
        if hashes.get(seq) is None:
            bad(str(path), 0, seq, "anchored record not found (removed or expired)")
        elif hashes[seq] != digest:
            bad(str(path), 0, seq, "does not match the exported anchor hash")
    return report


def _writer_active(directory: Path) -> bool:
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


def recover(directory: str | Path, actor: str, *, clock: Callable[[], float] = time.time) -> str | None:
    """Set a damaged tail aside explicitly (operator action); return the side file's name or None.

    Everything from the first record that breaks the chain in the newest segment is moved to a
    side file (kept, read-only), and the log reopens with a ``recovered`` record naming the actor.
    """
    directory = Path(directory)
    segments = segment_files(directory)
    if not segments:
        raise NoInputError(f"{directory}: no audit segments")
    lock_fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise TempFailError(f"audit log {directory} is in use (stop jgw first)") from exc
        path = segments[-1][1]
        data = path.read_bytes()
        prev: str | None = None
        last_seq = -1
        good_end = 0
        cause = ""
        for line in read_lines(data):
            rec = line.record
            if rec is None or (prev is not None and rec["prev"] != prev) or \
                    (last_seq >= 0 and rec["seq"] != last_seq + 1):
                cause = line.problem or "the hash chain breaks here"
                break
            prev, last_seq, good_end = line.hash, rec["seq"], line.offset + len(line.raw) + 1
        if good_end == len(data):
            return None
        stamp = dt.datetime.fromtimestamp(clock(), dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        aside = path.with_name(f"{path.name}.damaged-{last_seq + 1}-{stamp}")
        rest = data[good_end:]
        aside.write_bytes(rest)
        os.chmod(aside, 0o400)
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            os.fsync(fh.fileno())
        _fsync_dir(directory)
    finally:
        os.close(lock_fd)
    node = "unknown"
    first = _first_record(segments[0][1])
    if first is not None:
        node = str(first.get("node", node))
    with AuditLog.open(directory, node, clock=clock) as audit:
        audit.record("recovered", segment=path.name, offset=good_end, bytes=len(rest), aside=aside.name,
                     aside_sha256=hashlib.sha256(rest).hexdigest(), cause=f"operator: {cause}")
        audit.record("operator", actor=actor, action="audit-recover")
        audit.commit()
    return aside.name


def _first_record(path: Path) -> dict[str, Any] | None:
    with open(path, "rb") as fh:
        line = _parse_line(1, 0, fh.readline().rstrip(b"\n"), True)
    return line.record


def records(path: str | Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(file name, line number, record) for every readable record, in order (for ``jgw audit show``)."""
    path = Path(path)
    if not (path.is_dir() or path.is_file()):
        raise NoInputError(f"{path}: no such file or directory")  # exit 66, as verify, not "unexpected"
    files = [p for _, p in segment_files(path)] if path.is_dir() else [path]
    for file in files:
        for line in read_lines(file.read_bytes()):
            if line.record is not None:
                yield file.name, line.number, line.record
