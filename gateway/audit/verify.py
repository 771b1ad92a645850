"""Checking the trail: ``verify`` walks every segment and its chain; ``recover`` sets a damaged tail
aside; ``records`` reads them back.

Security: reads local files only.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.audit.format import GENESIS, LOCK_NAME, SEGMENT_RE, _parse_line, per_message, read_lines, segment_files
from gateway.audit.trail import AuditLog, _fsync_dir, _looks_torn
from gateway.errors import DataError, NoInputError, PermissionError_, TempFailError
from gateway.policy.redact import ID_KEY_NAME, IdKey, redact_text, safe_id

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


def check_dedup(path: str | Path, dedup_file: str | Path) -> list[Finding]:
    """Ids the dedup store holds as delivered that have no ``deliver`` record in the trail.

    The relay commits evidence before dedup ids, so there should be none: one means a delivery
    that a redelivery would be suppressed against without the trail holding it."""
    db_path = Path(dedup_file)
    if not db_path.is_file():
        raise NoInputError(f"{db_path}: no dedup store there")
    recorded: set[tuple[str, str]] = set()
    for _name, _number, rec in records(path):
        for one in per_message(rec):
            if one.get("ev") == "deliver" and isinstance(one.get("route"), str) and isinstance(one.get("msg"), str):
                recorded.add((one["route"], one["msg"]))
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT route, message_id FROM delivered ORDER BY at").fetchall()
    except sqlite3.Error as exc:
        raise DataError(f"{db_path}: not a jgw dedup store ({exc})") from exc
    finally:
        db.close()
    # an id holding a 個人番号-shaped digit run is recorded as its keyed digest (gateway.policy.redact
    # safe_id, under the node's key next to the store), or masked when the key could not be had
    key = IdKey(db_path.parent / ID_KEY_NAME, create=False)
    return [Finding(str(db_path), 0, None, f"route {route}: id {safe_id(mid, key)} is recorded as delivered "
                    "(dedup) but the trail holds no deliver record for it")
            for route, mid in rows if (route, mid) not in recorded and (route, safe_id(mid, key)) not in recorded
            and (route, redact_text(mid)) not in recorded]
