"""Chunked transfer: deterministic frames, a stream cut and reassembled byte-exact, and every broken
sequence (lost, duplicated, reordered, altered, foreign chunk; wrong manifest) yielding no file."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.files import ChunkError, FileChanged, IntegrityError, Outcome
from gateway.files.chunks import (
    Abort,
    Chunk,
    Chunker,
    Manifest,
    Reassembly,
    Whole,
    decode,
    reassemble,
    scan_window,
    split,
)
from gateway.files.completion import RenameRule
from gateway.files.sftp import SftpLink, SftpPeer, SftpSink
from gateway.files.spool import SpoolSink, SpoolSource
from tests.lab.sshd import PrivateSshd

from .helpers import SJIS, listdir, read_bytes, sha

FILE_ID = "00112233445566778899aabbccddeeff"
MTIME = 1_712_000_000_123_456_789


def frames_for(data: bytes, chunk_bytes: int, name: bytes = b"f.dat", file_id: str = FILE_ID) -> list[bytes]:
    chunker = Chunker(file_id=file_id, name=name, size=len(data), mtime_ns=MTIME, chunk_bytes=chunk_bytes)
    out = [c.encode() for c in chunker.feed(data)]
    tail, manifest = chunker.close()
    return out + [c.encode() for c in tail] + [manifest.encode()]


async def aiter(items: Iterable[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def into(sink_dir: Path, frames: list[bytes], **kw: bool):  # type: ignore[no-untyped-def]
    return asyncio.run(reassemble(aiter(frames), SpoolSink(sink_dir), **kw))


# -- frames -------------------------------------------------------------------------------------------

def test_golden_frames() -> None:
    """The encoding is fixed bytes: canonical JSON headers (sorted keys, no spaces), hex names."""
    chunk_frame, manifest_frame = frames_for(b"abc", 4, name="ソ".encode("shift_jis"))
    header = (b'{"count":1,"file_id":"00112233445566778899aabbccddeeff","index":0,"last":true,"length":3,'
              b'"offset":0,"overlap":"","sha256":"' + sha(b"abc").encode() + b'","v":2}')
    assert chunk_frame == b"JGWF" + b"\x43" + len(header).to_bytes(4, "big") + header + b"abc"
    mheader = (b'{"chunk_bytes":4,"count":1,"file_id":"00112233445566778899aabbccddeeff","mtime_ns":'
               b'1712000000123456789,"name":"835c","sha256":"' + sha(b"abc").encode() + b'","size":3,"v":2}')
    assert manifest_frame == b"JGWF" + b"\x4d" + len(mheader).to_bytes(4, "big") + mheader
    second = frames_for(b"abcdefg", 4)[1]
    assert b'"index":1,"last":true,"length":3,"offset":4,"overlap":"61626364",' in second
    whole = Whole(FILE_ID, b"f", 3, MTIME, sha(b"abc"), b"abc").encode()
    wheader = (b'{"file_id":"00112233445566778899aabbccddeeff","mtime_ns":1712000000123456789,"name":"66",'
               b'"sha256":"' + sha(b"abc").encode() + b'","size":3,"v":2}')
    assert whole == b"JGWF" + b"\x46" + len(wheader).to_bytes(4, "big") + wheader + b"abc"
    aheader = b'{"file_id":"00112233445566778899aabbccddeeff","v":2}'
    assert Abort(FILE_ID).encode() == b"JGWF" + b"\x41" + len(aheader).to_bytes(4, "big") + aheader
    assert decode(whole) == Whole(FILE_ID, b"f", 3, MTIME, sha(b"abc"), b"abc")
    assert decode(Abort(FILE_ID).encode()) == Abort(FILE_ID)


def test_a_small_file_is_one_frame_with_single() -> None:
    """With single, a file that fits one chunk is one F frame; a larger one is still chunks + manifest."""
    for size, kinds in ((0, [Whole]), (4, [Whole]), (5, [Chunk, Chunk, Manifest])):
        data = bytes(range(size))
        chunker = Chunker(file_id=FILE_ID, name=b"n", size=size, mtime_ns=MTIME, chunk_bytes=4, single=True)
        out: list[object] = list(chunker.feed(data))
        tail, last = chunker.close()
        out += [*tail, last]
        assert [type(f) for f in out] == kinds
        if isinstance(last, Whole):
            assert last.data == data and last.sha256 == sha(data)


def test_every_offset_is_judged_once_from_one_frame() -> None:
    """scan_window: the windows' counted ranges cover each byte of the file exactly once, each with
    context on both sides (the overlap makes a chunk judgeable on its own)."""
    data = os.urandom(3000)
    covered = [0] * len(data)
    for f in frames_for(data, 700):
        chunk = decode(f)
        if not isinstance(chunk, Chunk):
            continue
        window, lo, hi = scan_window(chunk)
        assert window[len(chunk.overlap):] == chunk.data
        start = chunk.offset - len(chunk.overlap)
        for s in range(lo, hi):
            covered[start + s] += 1
            if start + s < len(data) - 128:
                assert hi == len(window) or s + 128 <= len(window)
    assert covered == [1] * len(data)


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 30, 31])
def test_chunk_boundaries(size: int) -> None:
    """count = ceil(size / N); offsets step by N; only the last chunk is short; an empty file is a
    manifest alone."""
    data = bytes(range(256))[:size] * 1
    frames = [decode(f) for f in frames_for(data, 10)]
    chunks = [f for f in frames if isinstance(f, Chunk)]
    manifest = frames[-1]
    assert isinstance(manifest, Manifest) and manifest.count == len(chunks) == -(-size // 10)
    assert b"".join(c.data for c in chunks) == data and manifest.sha256 == sha(data)
    assert [c.offset for c in chunks] == [10 * i for i in range(len(chunks))]
    assert all(c.last == (i == len(chunks) - 1) for i, c in enumerate(chunks))


@settings(max_examples=200)
@given(st.binary(max_size=3000), st.integers(1, 700), st.lists(st.integers(1, 900), min_size=1, max_size=8))
def test_any_blocking_gives_the_same_frames(data: bytes, chunk_bytes: int, cuts: list[int]) -> None:
    """However the source's blocks fall, the frames are the same bytes, and decode(encode) round-trips."""
    chunker = Chunker(file_id=FILE_ID, name=b"n", size=len(data), mtime_ns=MTIME, chunk_bytes=chunk_bytes)
    out: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        out += [c.encode() for c in chunker.feed(data[pos:pos + step])]
        pos += step
        i += 1
    tail, manifest = chunker.close()
    out += [c.encode() for c in tail] + [manifest.encode()]
    assert out == frames_for(data, chunk_bytes, name=b"n")
    assert [decode(f).encode() for f in out] == out


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_decode_never_raises_anything_else(frame: bytes) -> None:
    """Any bytes decode or raise ChunkError, nothing else."""
    with contextlib.suppress(ChunkError):
        decode(frame)


@settings(max_examples=300)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_mutated_frames_decode_only_canonically(position: int, value: int) -> None:
    """A frame with one byte changed either is refused or decodes to a frame that re-encodes to itself."""
    frame = bytearray(frames_for(b"hello world", 4)[1])
    position %= len(frame)
    frame[position] = value
    try:
        item = decode(bytes(frame))
    except ChunkError:
        return
    assert item.encode() == bytes(frame)


@pytest.mark.parametrize(("case", "header"), [
    ("spaces", b'{"count": 1}'),
    ("float", b'{"chunk_bytes":4.0,"count":1}'),
    ("extra key", None),
    ("uppercase hex", None),
])
def test_non_canonical_headers_are_malformed(case: str, header: bytes | None) -> None:
    good = frames_for(b"abc", 4)[0]
    hlen = int.from_bytes(good[5:9], "big")
    raw = good[9:9 + hlen]
    if case == "extra key":
        header = raw[:-1] + b',"x":1}'
    elif case == "uppercase hex":
        header = raw.replace(FILE_ID.encode(), FILE_ID.upper().encode())
    assert header is not None
    with pytest.raises(ChunkError) as info:
        decode(good[:5] + len(header).to_bytes(4, "big") + header + b"abc")
    assert info.value.reason == "chunk-malformed"


def test_chunker_refuses_a_stream_of_another_length() -> None:
    """A file that grew or shrank since it was listed is never cut into a consistent-looking sequence."""
    with pytest.raises(FileChanged):
        Chunker(file_id=FILE_ID, name=b"n", size=3, mtime_ns=0, chunk_bytes=2).feed(b"abcd")
    short = Chunker(file_id=FILE_ID, name=b"n", size=3, mtime_ns=0, chunk_bytes=2)
    short.feed(b"ab")
    with pytest.raises(FileChanged):
        short.close()


# -- reassembly ---------------------------------------------------------------------------------------

def test_reassembly_byte_exact(tmp_path: Path) -> None:
    """Frames reassembled into a spool sink: the Shift_JIS name, bytes and mtime of the original."""
    data = os.urandom(100_000)
    r = into(tmp_path, frames_for(data, 7_000, name=SJIS))
    assert r.outcome is Outcome.DELIVERED and r.sha256 == sha(data)
    assert read_bytes(tmp_path, SJIS) == data
    assert os.stat(os.path.join(os.fsencode(tmp_path), SJIS)).st_mtime_ns == MTIME
    assert into(tmp_path, frames_for(data, 7_000, name=SJIS)).outcome is Outcome.ALREADY_PRESENT


def test_empty_file(tmp_path: Path) -> None:
    assert into(tmp_path, frames_for(b"", 10)).outcome is Outcome.DELIVERED
    assert read_bytes(tmp_path, b"f.dat") == b""


def _swap(frames: list[bytes], i: int, j: int) -> list[bytes]:
    out = list(frames)
    out[i], out[j] = out[j], out[i]
    return out


def _alter_data(frames: list[bytes], i: int) -> list[bytes]:
    out = list(frames)
    frame = bytearray(out[i])
    frame[-1] ^= 0x01
    out[i] = bytes(frame)
    return out


def _alter_consistently(frames: list[bytes], i: int) -> list[bytes]:
    """Change a chunk's bytes and its digest together: only the whole-file digest can tell."""
    chunk = decode(frames[i])
    assert isinstance(chunk, Chunk)
    data = bytes([chunk.data[0] ^ 1]) + chunk.data[1:]
    out = list(frames)
    out[i] = Chunk(chunk.file_id, chunk.index, chunk.count, chunk.offset, hashlib.sha256(data).hexdigest(),
                   data, chunk.overlap).encode()
    return out


def _alter_overlap(frames: list[bytes], i: int) -> list[bytes]:
    """A chunk whose overlap claims other previous bytes (what a policy scan would judge it with)."""
    chunk = decode(frames[i])
    assert isinstance(chunk, Chunk)
    out = list(frames)
    out[i] = Chunk(chunk.file_id, chunk.index, chunk.count, chunk.offset, chunk.sha256, chunk.data,
                   b"0" * len(chunk.overlap)).encode()
    return out


def _manifest(frames: list[bytes], **changes: object) -> list[bytes]:
    m = decode(frames[-1])
    assert isinstance(m, Manifest)
    fields = {k: getattr(m, k) for k in ("file_id", "name", "size", "mtime_ns", "sha256", "chunk_bytes", "count")}
    fields.update(changes)
    return [*frames[:-1], Manifest(**fields).encode()]  # type: ignore[arg-type]


DATA = bytes(range(256)) * 40  # 10240 bytes, 11 chunks of 1000
GOOD = frames_for(DATA, 1000)
OTHER = frames_for(DATA, 1000, file_id="ffeeddccbbaa99887766554433221100")

BROKEN: list[tuple[str, Callable[[], list[bytes]], str]] = [
    ("chunk lost", lambda: GOOD[:3] + GOOD[4:], "chunk-missing"),
    ("last chunk lost", lambda: GOOD[:-2] + GOOD[-1:], "chunk-missing"),
    ("manifest lost", lambda: GOOD[:-1], "chunk-missing"),
    ("all lost but the manifest", lambda: GOOD[-1:], "chunk-missing"),
    ("chunk duplicated", lambda: GOOD[:4] + GOOD[3:], "chunk-duplicate"),
    ("first chunk duplicated", lambda: GOOD[:1] + GOOD, "chunk-duplicate"),
    ("chunks reordered", lambda: _swap(GOOD, 2, 3), "chunk-missing"),
    ("manifest first", lambda: GOOD[-1:] + GOOD[:-1], "chunk-missing"),
    ("chunk data altered", lambda: _alter_data(GOOD, 5), "chunk-altered"),
    ("overlap altered", lambda: _alter_overlap(GOOD, 5), "chunk-altered"),
    ("chunk altered with its digest", lambda: _alter_consistently(GOOD, 5), "digest-mismatch"),
    ("chunk of another file", lambda: GOOD[:5] + OTHER[5:6] + GOOD[6:], "chunk-foreign"),
    ("manifest of another file", lambda: GOOD[:-1] + OTHER[-1:], "chunk-foreign"),
    ("manifest size wrong", lambda: _manifest(GOOD, size=10_241, count=11), "manifest-mismatch"),
    ("manifest digest wrong", lambda: _manifest(GOOD, sha256="0" * 64), "digest-mismatch"),
    ("manifest count wrong", lambda: _manifest(GOOD, chunk_bytes=1024, count=10), "manifest-mismatch"),
    ("manifest chunk size wrong", lambda: _manifest(GOOD, chunk_bytes=1001), "manifest-mismatch"),
    ("truncated frame", lambda: [*GOOD[:2], GOOD[2][:-10], *GOOD[3:]], "chunk-malformed"),
    ("garbage frame", lambda: [*GOOD[:2], b"not a frame", *GOOD[2:]], "chunk-malformed"),
]


@pytest.mark.parametrize(("case", "make", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_sequences_never_yield_a_file(tmp_path: Path, case: str, make: Callable[[], list[bytes]],
                                             reason: str) -> None:
    """Each broken sequence is refused with its reason (a ChunkError, or the sink's IntegrityError for the
    whole-file digest); the sink directory stays empty (no file, no temporary)."""
    with pytest.raises(IntegrityError) as info:
        into(tmp_path, make())
    assert info.value.reason == reason, info.value
    assert not info.value.transient
    assert listdir(tmp_path) == set()


def test_redelivery_can_be_tolerated(tmp_path: Path) -> None:
    """With tolerate_redelivery, an exact repeat (at-least-once transport) is skipped; an altered
    repeat is still a duplicate."""
    frames = GOOD[:4] + GOOD[3:]
    assert into(tmp_path, frames, tolerate_redelivery=True).outcome is Outcome.DELIVERED
    assert read_bytes(tmp_path, b"f.dat") == DATA
    check = Reassembly(tolerate_redelivery=True)
    first = decode(GOOD[0])
    assert isinstance(first, Chunk)
    check.accept_chunk(first)
    altered = decode(_alter_consistently(GOOD, 0)[0])
    assert isinstance(altered, Chunk)
    with pytest.raises(ChunkError, match="chunk-duplicate"):
        check.accept_chunk(altered)


def test_chunked_relay_into_sftp_sink(sshd: PrivateSshd, peer: SftpPeer, tmp_path: Path) -> None:
    """Spool source → frames → reassembly into the SFTP sink of a real sshd, byte-exact."""
    data = os.urandom(9 * 1024 * 1024 + 5)
    (tmp_path / "in").mkdir()
    with open(os.path.join(os.fsencode(tmp_path / "in"), SJIS), "wb") as f:
        f.write(data)

    async def relay() -> Outcome:
        src = SpoolSource(tmp_path / "in", RenameRule())
        ref = (await src.scan()).ready[0]
        sink = SftpSink(SftpLink(peer), "/upload")
        try:
            frames = split(src.open(ref), name=ref.name, size=ref.size, mtime_ns=ref.mtime_ns,
                           chunk_bytes=2 * 1024 * 1024)
            return (await reassemble(frames, sink)).outcome
        finally:
            await sink.close()

    assert asyncio.run(relay()) is Outcome.DELIVERED
    assert listdir(sshd.upload) == {SJIS} and read_bytes(sshd.upload, SJIS) == data


# -- a large file with flat memory --------------------------------------------------------------------

def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_one_gib_streams_with_flat_memory(tmp_path: Path) -> None:
    """1 GiB from a spool source, cut into 4 MiB chunks and reassembled into a spool sink: byte-exact,
    with the process's peak RSS growing by less than 200 MiB (VmHWM after vs VmRSS before)."""
    size = 1024 * 1024 * 1024
    src_dir, sink_dir = tmp_path / "in", tmp_path / "out"
    src_dir.mkdir()
    sink_dir.mkdir()
    block = bytearray(os.urandom(1024 * 1024))
    whole = hashlib.sha256()
    with open(src_dir / "big.dat", "wb") as f:
        for i in range(size // len(block)):
            block[:8] = i.to_bytes(8, "big")
            whole.update(block)
            f.write(block)
    del block

    async def relay() -> Outcome:
        src = SpoolSource(src_dir, RenameRule())
        ref = (await src.scan()).ready[0]
        frames = split(src.open(ref), name=ref.name, size=ref.size, mtime_ns=ref.mtime_ns)
        result = await reassemble(frames, SpoolSink(sink_dir))
        assert result.sha256 == whole.hexdigest()
        await src.finish(ref, keep_in="done")
        return result.outcome

    reset = _reset_peak()
    before = _status("VmRSS") if reset else _status("VmHWM")
    started = time.monotonic()
    assert asyncio.run(relay()) is Outcome.DELIVERED
    elapsed = time.monotonic() - started
    growth = _status("VmHWM") - before
    print(f"\n1 GiB relayed in {elapsed:.1f}s; peak RSS growth {growth / 2**20:.1f} MiB "
          f"({'VmHWM reset' if reset else 'VmHWM delta'})")
    assert growth < 200 * 1024 * 1024
    check = hashlib.sha256()
    with open(sink_dir / "big.dat", "rb") as f:
        while data := f.read(8 * 1024 * 1024):
            check.update(data)
    assert check.hexdigest() == whole.hexdigest()
    assert listdir(sink_dir) == {b"big.dat"} and listdir(src_dir / "done") == {b"big.dat"}

