"""What a route's file sink holds of a file being reassembled, kept on the appliance's disk so that it
survives a crash: one append-only journal per file, next to nothing but the node's state.

A large file reaches a file sink as ordered chunks, each confirmed to the route book only once it
is durable in the sink's temporary file *and* recorded here; the book then acknowledges it at its
source, which never sends it again. So after a crash the sink must know exactly which chunks its
temporary file holds: the journal says (file id, temporary name, chunk count, then one line per
chunk: index, offset, length, SHA-256, the chunk's last bytes for the next chunk's overlap).
``gateway.files.route_sink`` reopens the temporary file through the adapter's ``resume``, which
cuts off anything written after the last journal line and re-hashes the rest chunk by chunk.

Lines are canonical JSON, appended and fsynced one at a time; a torn last line (a crash in the
middle of an append) is ignored, which is safe because the chunk it described was not confirmed.
A journal is removed once its file is under its final name (or given up); one whose last append is
older than the route's ``partial_timeout`` is abandoned (its sender will never finish it) and is
removed together with its temporary file.

Security: holds file ids, temporary names, sizes and digests, never names or bytes of the file
(the tail for the overlap excepted: at most 256 bytes of the file, in the node's state directory,
mode 0600, like the file itself at the sink).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

SUFFIX = ".journal"
_FILE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class Partial:
    """A journal as read back: the chunks the temporary file holds."""

    file_id: str
    temp: bytes
    count: int
    started: float
    lengths: list[int] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)
    tail: bytes = b""
    updated: float = 0.0

    @property
    def offset(self) -> int:
        return sum(self.lengths)


def _line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journals:
    """The journals of one route's file sink (a directory under the node's state directory)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, file_id: str) -> Path:
        if not _FILE_ID.fullmatch(file_id):
            raise ValueError("not a file id")
        return self.directory / f"{file_id}{SUFFIX}"

    def create(self, file_id: str, temp: bytes, count: int) -> None:
        """Start the journal of a file whose chunks go into ``temp`` (durable before the first chunk)."""
        path = self.path(file_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, _line({"count": count, "file_id": file_id, "started": round(time.time(), 3),
                                "temp": temp.hex(), "v": 1}))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.directory)

    def append(self, file_id: str, index: int, offset: int, length: int, sha256: str, tail: bytes) -> None:
        """Record one chunk as held by the temporary file (which the caller fsynced first)."""
        fd = os.open(self.path(file_id), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            os.write(fd, _line({"i": index, "l": length, "o": offset, "s": sha256, "t": tail.hex()}))
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(file_id))
            _fsync_dir(self.directory)

    def load(self, file_id: str) -> Partial | None:
        """The journal of ``file_id``, or None when there is none (or its first line is torn)."""
        try:
            data = self.path(file_id).read_bytes()
            updated = self.path(file_id).stat().st_mtime
        except FileNotFoundError:
            return None
        return _parse(data, file_id, updated)

    def all(self) -> list[Partial]:
        out = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            fid = path.name[:-len(SUFFIX)]
            if _FILE_ID.fullmatch(fid):
                p = self.load(fid)
                if p is not None:
                    out.append(p)
        return out


def _parse(data: bytes, file_id: str, updated: float) -> Partial | None:
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines = lines[:-1]
    elif lines:
        lines = lines[:-1]  # a torn last line: the chunk it described was never confirmed
    if not lines:
        return None
    try:
        head = json.loads(lines[0])
        partial = Partial(file_id=head["file_id"], temp=bytes.fromhex(head["temp"]), count=int(head["count"]),
                          started=float(head["started"]), updated=updated)
        if partial.file_id != file_id:
            return None
        for raw in lines[1:]:
            rec = json.loads(raw)
            if rec["i"] != len(partial.lengths) or rec["o"] != partial.offset:
                break  # not the next chunk: keep what is consistent
            partial.lengths.append(int(rec["l"]))
            partial.digests.append(str(rec["s"]))
            partial.tail = bytes.fromhex(rec["t"])
    except (ValueError, KeyError, TypeError):
        return None
    return partial
