"""The audit record format: canonical JSON lines chained by SHA-256, segment files and how to read them.

Security: pure format; reads bytes handed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "jgw-audit/1"
GENESIS = "0" * 64
SEGMENT_RE = re.compile(r"^audit-(\d{16})\.log$")
LOCK_NAME = ".lock"

#: Events the relay and the operator commands write.
EVENTS = frozenset({"accept", "deliver", "quarantine", "dead-letter", "replay", "duplicate", "operator",
                    "config-change", "cert-change", "start", "stop"})
#: Events an operator command may ask the running daemon to record (control socket ``record``).
OPERATOR_EVENTS = frozenset({"replay", "operator"})
#: Events this module writes itself.
OWN_EVENTS = frozenset({"segment-open", "segment-close", "log-open", "log-close", "recovered", "expire"})
RESERVED = frozenset({"seq", "prev", "t", "ev"})
#: Field names that could only mean content: refused outright.
CONTENT_NAMES = frozenset({"body", "payload", "data", "content", "text"})
#: Values that are hex digests or config names: never redacted (masking a digest destroys evidence).
UNREDACTED = frozenset({"digest", "digests", "route", "seed", "reason", "outcome", "node", "peer", "key_id",
                        "fingerprint", "anchor", "last_hash", "aside_sha256", "old", "new", "format",
                        "predecessor", "segment", "aside", "retain", "retain_until", "file", "cause",
                        "file_id", "file_name", "file_sha256"})
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


#: Fields of a grouped ``deliver`` record that hold one value per delivered message, and the field
#: of the one-message form (records written before grouping) each stands for.
GROUP_FIELDS = {"msgs": "msg", "sizes": "size", "digests": "digest", "corrs": "corr"}


def per_message(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A ``deliver`` record as one record per message: the grouped form (one record per group
    commit: ``n`` and the lists of ``GROUP_FIELDS``) split into the one-message form, each with the
    group's shared fields; any other record, or the one-message form, as it is."""
    if rec.get("ev") != "deliver" or not isinstance(rec.get("msgs"), list):
        return [dict(rec)]
    shared = {k: v for k, v in rec.items() if k not in GROUP_FIELDS and k != "n"}
    lists = {single: rec.get(group) for group, single in GROUP_FIELDS.items()}
    out = []
    for i, mid in enumerate(rec["msgs"]):
        one = dict(shared, msg=mid)
        for single, values in lists.items():
            if single != "msg" and isinstance(values, list) and i < len(values):
                one[single] = values[i]
        out.append(one)
    return out
