"""Large files with flat memory: a stream cut into ordered, digested chunks plus a manifest, and back.

A file larger than one AMQP message travels as chunks of at most ``chunk_bytes`` (default 4 MiB,
well under RabbitMQ's default 128 MiB message limit and small enough to seal one at a time), then
one manifest. ``Chunker`` cuts a stream as it is read (only one chunk is ever buffered);
``Reassembly`` checks chunks in the order they arrive; ``split`` and ``reassemble`` are the async
drivers, the second writing into a sink's ``Upload`` so the file is assembled under a temporary name
and renamed only after every check passed. A missing, duplicated, reordered or altered chunk, a
foreign chunk, or a manifest that disagrees with the chunks never yields a file: the upload is
aborted and a ``ChunkError`` names the reason (``chunk-missing`` covers reordering: at the moment a
later index arrives, the expected one is missing). The whole-file SHA-256 from the manifest is
checked by the sink's commit over the bytes it wrote.

Frames (deterministic bytes; ``decode(encode(x)) == x`` and ``encode(decode(b)) == b``)::

    frame    = "JGWF" | kind u8 | header length u32 (big-endian) | header | data
    kind     = 0x43 "C" chunk, followed by exactly ``length`` data bytes
             | 0x4D "M" manifest, no data
             | 0x46 "F" a whole file in one frame, followed by exactly ``size`` data bytes
             | 0x41 "A" abort: the sender gave this file up (changed while read, refused); no data
    header   = canonical JSON: ASCII, keys sorted, separators "," and ":", no whitespace,
               integers only (no floats, no booleans except ``last``), lowercase hex strings
    chunk    = {"count":C,"file_id":F,"index":I,"last":true|false,"length":L,"offset":O,"overlap":P,
                "sha256":D,"v":2}
    manifest = {"chunk_bytes":N,"count":C,"file_id":F,"mtime_ns":T,"name":H,"sha256":D,"size":S,"v":2}
    file     = {"file_id":F,"mtime_ns":T,"name":H,"sha256":D,"size":S,"v":2}
    abort    = {"file_id":F,"v":2}

``F`` is 32 hex digits (16 bytes, the same in every frame of one file), ``D`` 64 hex digits of
SHA-256 (of the chunk's data, or of the whole file), ``H`` the hex of the name's raw bytes (exactly
as the source listed them: Shift_JIS stays Shift_JIS). ``C = ceil(S / N)`` (0 for an empty file:
the manifest alone), chunk ``I`` has ``O = I * N`` and ``L = N`` except the last (``last`` true,
``I = C - 1``, ``L = S - O``). ``P`` is the hex of the last ``min(OVERLAP, N)`` bytes of the
previous chunk (empty for chunk 0): a content check (the 個人番号 policy) can then judge each chunk
alone, across its boundary with the previous one, wherever and whenever it sees it
(``scan_window``); reassembly checks it against the bytes it wrote. A header that is not in this
canonical form (another key order, a space, an extra key, a float) is ``chunk-malformed``.

A file of at most ``chunk_bytes`` may travel as one ``F`` frame (``Chunker(single=True)``): one
message, one put, one rename at the sink.

Security: pure (no I/O, no clock). ``decode`` reads hostile bytes: lengths are checked before
slicing, the header is bounded (``MAX_HEADER_BYTES``), and it raises nothing but ``ChunkError``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import struct
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway.files.adapter import FileSink, PutResult, Upload
from gateway.files.errors import ChunkError, FileChanged
from gateway.files.names import fingerprint

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024
MAX_CHUNK_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 4096
MAX_SIZE = 2**63 - 1
VERSION = 2
#: Bytes of the previous chunk every chunk repeats in its header (``overlap``).
OVERLAP = 256
#: A content match starting in the last DEFER bytes of a chunk is judged with the next chunk.
DEFER = 128

MAGIC = b"JGWF"
KIND_CHUNK = 0x43
KIND_MANIFEST = 0x4D
KIND_FILE = 0x46
KIND_ABORT = 0x41
_PREFIX = struct.Struct(">4sBI")

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEXNAME = re.compile(r"(?:[0-9a-f]{2}){0,1024}")
_HEXOVERLAP = re.compile(rf"(?:[0-9a-f]{{2}}){{0,{OVERLAP}}}")

_CHUNK_KEYS = ("count", "file_id", "index", "last", "length", "offset", "overlap", "sha256", "v")
_MANIFEST_KEYS = ("chunk_bytes", "count", "file_id", "mtime_ns", "name", "sha256", "size", "v")
_FILE_KEYS = ("file_id", "mtime_ns", "name", "sha256", "size", "v")
_ABORT_KEYS = ("file_id", "v")


def new_file_id() -> str:
    """A fresh file id: 16 random bytes as 32 hex digits."""
    return secrets.token_hex(16)


def chunk_count(size: int, chunk_bytes: int) -> int:
    return -(-size // chunk_bytes)


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _frame(kind: int, header: bytes, data: bytes = b"") -> bytes:
    return _PREFIX.pack(MAGIC, kind, len(header)) + header + data


@dataclass(frozen=True, slots=True)
class Chunk:
    file_id: str
    index: int
    count: int
    offset: int
    sha256: str
    data: bytes
    #: the last bytes of the previous chunk (empty for chunk 0): see the module docstring
    overlap: bytes = b""

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def header(self) -> bytes:
        return _canonical({"count": self.count, "file_id": self.file_id, "index": self.index, "last": self.last,
                           "length": len(self.data), "offset": self.offset, "overlap": self.overlap.hex(),
                           "sha256": self.sha256, "v": VERSION})

    def encode(self) -> bytes:
        return _frame(KIND_CHUNK, self.header(), self.data)

    def __repr__(self) -> str:
        return (f"Chunk({self.file_id[:8]}, {self.index}/{self.count}, offset={self.offset}, "
                f"length={len(self.data)}, sha256={self.sha256[:12]})")


@dataclass(frozen=True, slots=True)
class Manifest:
    file_id: str
    name: bytes
    size: int
    mtime_ns: int
    sha256: str
    chunk_bytes: int
    count: int

    def header(self) -> bytes:
        return _canonical({"chunk_bytes": self.chunk_bytes, "count": self.count, "file_id": self.file_id,
                           "mtime_ns": self.mtime_ns, "name": self.name.hex(), "sha256": self.sha256,
                           "size": self.size, "v": VERSION})

    def encode(self) -> bytes:
        return _frame(KIND_MANIFEST, self.header())

    def __repr__(self) -> str:
        return (f"Manifest({self.file_id[:8]}, {fingerprint(self.name)}, size={self.size}, count={self.count}, "
                f"sha256={self.sha256[:12]})")


@dataclass(frozen=True, slots=True)
class Whole:
    """A whole file in one frame (at most one chunk's worth): its metadata, as a manifest's, and data."""

    file_id: str
    name: bytes
    size: int
    mtime_ns: int
    sha256: str
    data: bytes

    def header(self) -> bytes:
        return _canonical({"file_id": self.file_id, "mtime_ns": self.mtime_ns, "name": self.name.hex(),
                           "sha256": self.sha256, "size": self.size, "v": VERSION})

    def encode(self) -> bytes:
        return _frame(KIND_FILE, self.header(), self.data)

    def __repr__(self) -> str:
        return f"Whole({self.file_id[:8]}, {fingerprint(self.name)}, size={self.size}, sha256={self.sha256[:12]})"


@dataclass(frozen=True, slots=True)
class Abort:
    """The sender gave the file up after sending some of its chunks: the receiver drops what it holds."""

    file_id: str

    def header(self) -> bytes:
        return _canonical({"file_id": self.file_id, "v": VERSION})

    def encode(self) -> bytes:
        return _frame(KIND_ABORT, self.header())

    def __repr__(self) -> str:
        return f"Abort({self.file_id[:8]})"


Frame = Chunk | Manifest | Whole | Abort


def _malformed(detail: str) -> ChunkError:
    return ChunkError("chunk-malformed", detail)


def _int(obj: dict[str, Any], key: str, lo: int, hi: int) -> int:
    value = obj[key]
    if type(value) is not int or not lo <= value <= hi:
        raise _malformed(f"field {key} is not an integer in [{lo}, {hi}]")
    return value


def _hex(obj: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = obj[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _malformed(f"field {key} is not lowercase hex of the right length")
    return value


def decode(frame: bytes) -> Frame:
    """Parse one frame; raise ``ChunkError('chunk-malformed')`` for anything not in canonical form."""
    if len(frame) < _PREFIX.size:
        raise _malformed(f"frame of {len(frame)} bytes is shorter than its prefix")
    magic, kind, hlen = _PREFIX.unpack_from(frame)
    if magic != MAGIC:
        raise _malformed("not a jgw file frame (magic)")
    if kind not in _KEYS:
        raise _malformed(f"unknown frame kind 0x{kind:02x}")
    if hlen > MAX_HEADER_BYTES or _PREFIX.size + hlen > len(frame):
        raise _malformed(f"header length {hlen} out of bounds")
    raw = frame[_PREFIX.size:_PREFIX.size + hlen]
    data = frame[_PREFIX.size + hlen:]
    try:
        obj = json.loads(raw.decode("ascii"), parse_float=_refuse_float, parse_constant=_refuse_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _malformed("header is not ASCII JSON with integers") from exc
    if not isinstance(obj, dict):
        raise _malformed("header is not a JSON object")
    if tuple(sorted(obj)) != _KEYS[kind]:
        raise _malformed("header fields are not exactly the expected ones")
    if obj["v"] != VERSION or type(obj["v"]) is not int:
        raise _malformed("unknown frame version")
    item: Frame
    if kind == KIND_CHUNK:
        count = _int(obj, "count", 1, 2**32)
        index = _int(obj, "index", 0, count - 1)
        length = _int(obj, "length", 0, MAX_CHUNK_BYTES)
        offset = _int(obj, "offset", 0, MAX_SIZE)
        if not isinstance(obj["last"], bool) or obj["last"] != (index == count - 1):
            raise _malformed("field last does not match index and count")
        if len(data) != length:
            raise _malformed(f"chunk carries {len(data)} data bytes, header says {length}")
        overlap = bytes.fromhex(_hex(obj, "overlap", _HEXOVERLAP))
        if index == 0 and overlap:
            raise _malformed("chunk 0 carries an overlap")
        item = Chunk(_hex(obj, "file_id", _HEX32), index, count, offset, _hex(obj, "sha256", _HEX64), data,
                     overlap)
    elif kind == KIND_FILE:
        size = _int(obj, "size", 0, MAX_CHUNK_BYTES)
        if len(data) != size:
            raise _malformed(f"file frame carries {len(data)} data bytes, header says {size}")
        item = Whole(_hex(obj, "file_id", _HEX32), bytes.fromhex(_hex(obj, "name", _HEXNAME)), size,
                     _int(obj, "mtime_ns", -MAX_SIZE, MAX_SIZE), _hex(obj, "sha256", _HEX64), data)
    elif kind == KIND_ABORT:
        if data:
            raise _malformed("an abort carries no data")
        item = Abort(_hex(obj, "file_id", _HEX32))
    else:
        if data:
            raise _malformed("a manifest carries no data")
        chunk_bytes = _int(obj, "chunk_bytes", 1, MAX_CHUNK_BYTES)
        size = _int(obj, "size", 0, MAX_SIZE)
        count = _int(obj, "count", 0, 2**32)
        if count != chunk_count(size, chunk_bytes):
            raise ChunkError("manifest-mismatch", f"count {count} is not ceil(size {size} / chunk {chunk_bytes})")
        item = Manifest(_hex(obj, "file_id", _HEX32), bytes.fromhex(_hex(obj, "name", _HEXNAME)), size,
                        _int(obj, "mtime_ns", -MAX_SIZE, MAX_SIZE), _hex(obj, "sha256", _HEX64), chunk_bytes, count)
    if item.header() != raw:
        raise _malformed("header is not in canonical form")
    return item


_KEYS = {KIND_CHUNK: _CHUNK_KEYS, KIND_MANIFEST: _MANIFEST_KEYS, KIND_FILE: _FILE_KEYS, KIND_ABORT: _ABORT_KEYS}


def _refuse_float(text: str) -> Any:
    raise ValueError("floats and constants are not allowed in a frame header")


class Chunker:
    """Cuts a stream of blocks of any size into ``Chunk``s of ``chunk_bytes``, then the ``Manifest``.
    ``size`` is what the source listed; a stream of another length raises ``FileChanged``. With
    ``single``, a file of at most ``chunk_bytes`` (as listed) becomes one ``Whole`` frame instead."""

    def __init__(self, *, file_id: str, name: bytes, size: int, mtime_ns: int,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, single: bool = False) -> None:
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be in [1, {MAX_CHUNK_BYTES}]")
        if not _HEX32.fullmatch(file_id):
            raise ValueError("file_id must be 32 lowercase hex digits")
        self.file_id = file_id
        self.name = name
        self.size = size
        self.mtime_ns = mtime_ns
        self.chunk_bytes = chunk_bytes
        self.count = chunk_count(size, chunk_bytes)
        self.single = single and size <= chunk_bytes
        self._buf = bytearray()
        self._overlap = b""
        self._index = 0
        self._seen = 0
        self._whole = hashlib.sha256()
        self._closed = False

    def _emit(self, data: bytes) -> Chunk:
        chunk = Chunk(self.file_id, self._index, self.count, self._index * self.chunk_bytes,
                      hashlib.sha256(data).hexdigest(), data, self._overlap)
        self._overlap = data[-OVERLAP:]
        self._index += 1
        return chunk

    def feed(self, data: bytes) -> list[Chunk]:
        if self._closed:
            raise RuntimeError("feed after close")
        self._seen += len(data)
        if self._seen > self.size:
            raise FileChanged("file-changed", f"the stream is longer than the {self.size} bytes listed")
        self._whole.update(data)
        out: list[Chunk] = []
        if self.single:
            self._buf += data
            return out
        if not self._buf and len(data) == self.chunk_bytes:
            out.append(self._emit(bytes(data)))
            return out
        self._buf += data
        while len(self._buf) >= self.chunk_bytes:
            out.append(self._emit(bytes(self._buf[:self.chunk_bytes])))
            del self._buf[:self.chunk_bytes]
        return out

    def close(self) -> tuple[list[Chunk], Manifest | Whole]:
        if self._closed:
            raise RuntimeError("close twice")
        self._closed = True
        if self._seen != self.size:
            raise FileChanged("file-changed", f"the stream ended after {self._seen} of {self.size} bytes listed")
        if self.single:
            data, self._buf = bytes(self._buf), bytearray()
            return [], Whole(self.file_id, self.name, self.size, self.mtime_ns, self._whole.hexdigest(), data)
        out = [self._emit(bytes(self._buf))] if self._buf else []
        self._buf = bytearray()
        manifest = Manifest(self.file_id, self.name, self.size, self.mtime_ns, self._whole.hexdigest(),
                            self.chunk_bytes, self.count)
        return out, manifest


class Reassembly:
    """Checks chunks of one file as they arrive, in order, then its manifest (see the module docstring).
    ``tolerate_redelivery`` lets an exact repeat of an already accepted chunk through as a no-op
    (at-least-once transports); by default any repeat is ``chunk-duplicate``."""

    def __init__(self, *, tolerate_redelivery: bool = False) -> None:
        self.tolerate_redelivery = tolerate_redelivery
        self.file_id: str | None = None
        self.count: int | None = None
        self.next_index = 0
        self.next_offset = 0
        self.first_length: int | None = None
        self.manifest: Manifest | None = None
        self._digests: list[str] = []
        self.tail = b""  # the last OVERLAP bytes accepted: the next chunk's overlap

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(self._digests)

    @classmethod
    def resumed(cls, *, file_id: str, count: int, lengths: list[int], digests: list[str], tail: bytes,
                tolerate_redelivery: bool = True) -> Reassembly:
        """The state after the chunks a journal recorded (``lengths`` and ``digests`` per index)."""
        check = cls(tolerate_redelivery=tolerate_redelivery)
        check.file_id, check.count = file_id, count
        check.next_index = len(digests)
        check.next_offset = sum(lengths)
        check.first_length = lengths[0] if lengths else None
        check._digests = list(digests)
        check.tail = tail
        return check

    def __repr__(self) -> str:
        return f"Reassembly({(self.file_id or '-')[:8]}, {self.next_index}/{self.count}, offset={self.next_offset})"

    def accept_chunk(self, chunk: Chunk) -> bytes | None:
        """The chunk's data to write next, or None for a tolerated redelivery; raises ``ChunkError``."""
        if self.manifest is not None:
            raise ChunkError("manifest-mismatch", f"chunk {chunk.index} arrived after the manifest")
        if self.file_id is None:
            self.file_id, self.count = chunk.file_id, chunk.count
        elif chunk.file_id != self.file_id:
            raise ChunkError("chunk-foreign", f"chunk of file {chunk.file_id[:8]} in file {self.file_id[:8]}")
        if chunk.count != self.count:
            raise ChunkError("chunk-altered", f"chunk {chunk.index} says count {chunk.count}, earlier {self.count}")
        if chunk.index < self.next_index:
            digest = hashlib.sha256(chunk.data).hexdigest()
            if self.tolerate_redelivery and digest == chunk.sha256 == self._digests[chunk.index]:
                return None
            raise ChunkError("chunk-duplicate", f"chunk {chunk.index} arrived again (expected {self.next_index})")
        if chunk.index > self.next_index:
            raise ChunkError("chunk-missing", f"chunk {chunk.index} arrived while {self.next_index} was expected")
        if chunk.offset != self.next_offset:
            raise ChunkError("chunk-altered", f"chunk {chunk.index} at offset {chunk.offset}, expected "
                                              f"{self.next_offset}")
        length = len(chunk.data)
        if self.first_length is None:
            self.first_length = length
        elif length > self.first_length or (not chunk.last and length != self.first_length):
            raise ChunkError("chunk-altered", f"chunk {chunk.index} has {length} bytes, chunks are "
                                              f"{self.first_length}")
        digest = hashlib.sha256(chunk.data).hexdigest()
        if digest != chunk.sha256:
            raise ChunkError("chunk-altered", f"chunk {chunk.index} sha256 {digest[:12]}.., header says "
                                              f"{chunk.sha256[:12]}..")
        if chunk.overlap != self.tail:
            raise ChunkError("chunk-altered", f"chunk {chunk.index} overlap does not match the previous chunk")
        self._digests.append(digest)
        self.next_index += 1
        self.next_offset += length
        self.tail = chunk.data[-OVERLAP:]
        return chunk.data

    def accept_manifest(self, manifest: Manifest) -> Manifest:
        """The manifest, once it agrees with every chunk received; raises ``ChunkError``."""
        if self.manifest is not None:
            raise ChunkError("manifest-mismatch", "a second manifest")
        if self.file_id is not None and manifest.file_id != self.file_id:
            raise ChunkError("chunk-foreign", f"manifest of file {manifest.file_id[:8]} in file {self.file_id[:8]}")
        if self.next_index < manifest.count:
            raise ChunkError("chunk-missing", f"manifest after {self.next_index} of {manifest.count} chunks")
        if self.count is not None and self.count != manifest.count:
            raise ChunkError("manifest-mismatch", f"manifest count {manifest.count}, chunks say {self.count}")
        if manifest.size != self.next_offset:
            raise ChunkError("manifest-mismatch", f"manifest size {manifest.size}, chunks hold {self.next_offset}")
        if manifest.count > 1 and self.first_length != manifest.chunk_bytes:
            raise ChunkError("manifest-mismatch", f"manifest chunk size {manifest.chunk_bytes}, chunks are "
                                                  f"{self.first_length}")
        self.manifest = manifest
        return manifest


async def split(stream: AsyncIterable[bytes], *, name: bytes, size: int, mtime_ns: int,
                file_id: str | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES, single: bool = False
                ) -> AsyncIterator[bytes]:
    """Encoded frames for a stream: its chunks in order, then the manifest (at most one chunk held);
    with ``single``, a small file as one ``Whole`` frame."""
    chunker = Chunker(file_id=file_id or new_file_id(), name=name, size=size, mtime_ns=mtime_ns,
                      chunk_bytes=chunk_bytes, single=single)
    async for block in stream:
        for chunk in chunker.feed(block):
            yield chunk.encode()
    tail, manifest = chunker.close()
    for chunk in tail:
        yield chunk.encode()
    yield manifest.encode()


async def reassemble(frames: AsyncIterable[bytes], sink: FileSink, *, tolerate_redelivery: bool = False
                     ) -> PutResult:
    """Write a file's frames into ``sink`` through one ``Upload``; commit only after the manifest agreed
    with every chunk (and, in the commit, with the whole-file SHA-256). Any error aborts the upload."""
    check = Reassembly(tolerate_redelivery=tolerate_redelivery)
    upload: Upload | None = None
    try:
        async for frame in frames:
            item = decode(frame)
            if isinstance(item, Abort):
                raise FileChanged("file-changed", f"the sender gave file {item.file_id[:8]} up")
            if isinstance(item, Whole):
                if check.file_id is not None:
                    raise ChunkError("manifest-mismatch", "a whole-file frame among chunks")
                return await sink.put(item.name, _one(item.data), size=item.size, sha256=item.sha256,
                                      mtime_ns=item.mtime_ns)
            if isinstance(item, Manifest):
                manifest = check.accept_manifest(item)
                if upload is None:
                    upload = await sink.begin()
                result = await upload.commit(manifest.name, size=manifest.size, sha256=manifest.sha256,
                                             mtime_ns=manifest.mtime_ns)
                upload = None
                return result
            data = check.accept_chunk(item)
            if data is None:
                continue
            if upload is None:
                upload = await sink.begin()
            await upload.write(data)
        raise ChunkError("chunk-missing", f"the stream ended before the manifest ({check.next_index} chunks)")
    except BaseException:
        if upload is not None:
            await asyncio.shield(upload.abort())
        raise


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def scan_window(chunk: Chunk) -> tuple[bytes, int, int]:
    """What a content check (the 個人番号 policy) scans for ``chunk``, and which match offsets count.

    Returns ``(window, lo, hi)``: ``window`` is the chunk's overlap followed by its data; a match
    found at offset ``s`` of the window counts when ``lo <= s < hi``. Matches starting in the last
    ``DEFER`` bytes of a chunk that is not the last are left to the next chunk (whose overlap holds
    them with ``OVERLAP - DEFER`` bytes of context before); matches in the overlap's first bytes were
    judged with the previous chunk. So every offset of the file is judged exactly once, with at least
    ``DEFER`` bytes of context after it and ``OVERLAP - DEFER`` before it, from one frame alone."""
    window = chunk.overlap + chunk.data
    lo = max(0, len(chunk.overlap) - DEFER) if chunk.index else 0
    hi = len(window) if chunk.last else max(lo, len(window) - DEFER)
    return window, lo, hi


def peek(frame: bytes) -> Manifest | Whole | Abort | None:
    """The manifest, whole-file or abort frame ``frame`` is, or None for a chunk or anything else
    (cheap for chunks: only the kind byte is read; never raises)."""
    if len(frame) < _PREFIX.size or frame[:4] != MAGIC or frame[4] not in (KIND_MANIFEST, KIND_FILE, KIND_ABORT):
        return None
    try:
        item = decode(frame)
    except ChunkError:
        return None
    return item if isinstance(item, Manifest | Whole | Abort) else None
