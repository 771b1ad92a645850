"""The spool directory as source and sink: atomic, idempotent, never overwriting, never taking a moving file."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from gateway.files import Conflict, FileChanged, IntegrityError, NameRefused, Outcome, StorageError
from gateway.files.completion import RenameRule, StableRule, TriggerRule
from gateway.files.spool import SpoolSink, SpoolSource
from tests.lab.tmpfs import tmpfs

from .helpers import SJIS, listdir, read_bytes, sha, stream

MTIME = 1_712_000_000_123_456_789


def sink_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sink"
    d.mkdir()
    return d


def put(sink: SpoolSink, name: bytes, data: bytes, digest: str | None = "auto", **kw: object):  # type: ignore[no-untyped-def]
    return asyncio.run(sink.put(name, stream(data), size=len(data), sha256=sha(data) if digest == "auto" else digest,
                                mtime_ns=MTIME, **kw))  # type: ignore[arg-type]


async def read_all(src: SpoolSource, ref) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join([b async for b in src.open(ref)])


class TestSink:
    def test_delivers_byte_exact_with_name_and_mtime(self, tmp_path: Path) -> None:
        """A Shift_JIS name is written as the same bytes, with the content, size and mtime announced."""
        d = sink_dir(tmp_path)
        data = os.urandom(300_000)
        r = put(SpoolSink(d), SJIS, data)
        assert r.outcome is Outcome.DELIVERED and r.sha256 == sha(data) and r.size == len(data)
        assert listdir(d) == {SJIS}
        path = os.path.join(os.fsencode(d), SJIS)
        assert read_bytes(d, SJIS) == data
        assert os.stat(path).st_mtime_ns == MTIME
        assert os.stat(path).st_mode & 0o777 == 0o640

    def test_same_name_same_digest_is_already_present(self, tmp_path: Path) -> None:
        """Delivering the same file twice is a no-op the second time, said as ALREADY_PRESENT (with or
        without the digest announced up front)."""
        d = sink_dir(tmp_path)
        data = b"A" * 5000
        assert put(SpoolSink(d), b"f.csv", data).outcome is Outcome.DELIVERED
        assert put(SpoolSink(d), b"f.csv", data).outcome is Outcome.ALREADY_PRESENT
        assert put(SpoolSink(d), b"f.csv", data, digest=None).outcome is Outcome.ALREADY_PRESENT
        assert listdir(d) == {b"f.csv"}

    @pytest.mark.parametrize("digest", ["auto", None])
    def test_same_name_other_bytes_is_a_conflict(self, tmp_path: Path, digest: str | None) -> None:
        """Another file under the name is never overwritten: Conflict (dead-letter), nothing left behind."""
        d = sink_dir(tmp_path)
        put(SpoolSink(d), b"f.csv", b"first")
        with pytest.raises(Conflict) as info:
            put(SpoolSink(d), b"f.csv", b"other", digest=digest)
        assert info.value.reason == "conflict" and info.value.disposition == "dead-letter"
        assert listdir(d) == {b"f.csv"}
        assert (d / "f.csv").read_bytes() == b"first"

    def test_a_directory_under_the_name_is_a_conflict(self, tmp_path: Path) -> None:
        d = sink_dir(tmp_path)
        (d / "f.csv").mkdir()
        with pytest.raises(Conflict):
            put(SpoolSink(d), b"f.csv", b"x")

    @pytest.mark.parametrize(("reason", "size_delta", "digest"), [("digest-mismatch", 0, "0" * 64),
                                                                  ("size-mismatch", 1, None)])
    def test_announced_size_or_digest_wrong(self, tmp_path: Path, reason: str, size_delta: int,
                                            digest: str | None) -> None:
        """Bytes that do not match what was announced never reach the final name, and no temporary is left."""
        d = sink_dir(tmp_path)
        data = b"payload" * 1000
        with pytest.raises(IntegrityError) as info:
            asyncio.run(SpoolSink(d).put(b"f", stream(data), size=len(data) + size_delta, sha256=digest,
                                         mtime_ns=MTIME))
        assert info.value.reason == reason and info.value.disposition == "quarantine"
        assert listdir(d) == set()

    @pytest.mark.parametrize("name", [b"../escape", b"a/b", b"", b"..", b"x\x00y"])
    def test_unsafe_name_refused_before_writing(self, tmp_path: Path, name: bytes) -> None:
        d = sink_dir(tmp_path)
        with pytest.raises(NameRefused):
            put(SpoolSink(d), name, b"x")
        assert listdir(d) == set() and listdir(tmp_path) == {b"sink"}

    def test_never_a_partial_file_under_the_final_name(self, tmp_path: Path) -> None:
        """A lister polling the directory while 24 MiB are written in small blocks never sees the final
        name with fewer bytes than the whole file: it appears complete, in one step."""
        d = sink_dir(tmp_path)
        data = os.urandom(24 * 1024 * 1024)
        seen_sizes: set[int] = set()
        temps_seen = threading.Event()
        stop = threading.Event()

        def lister() -> None:
            final = os.path.join(os.fsencode(d), b"big.dat")
            while not stop.is_set():
                names = listdir(d)
                if any(n.startswith(b".jgw-") for n in names):
                    temps_seen.set()
                if b"big.dat" in names:
                    seen_sizes.add(os.stat(final).st_size)

        t = threading.Thread(target=lister)
        t.start()
        try:
            r = put(SpoolSink(d), b"big.dat", data)
        finally:
            stop.set()
            t.join()
        assert r.outcome is Outcome.DELIVERED
        assert temps_seen.is_set(), "the lister never caught the write in progress"
        assert seen_sizes <= {len(data)}
        assert listdir(d) == {b"big.dat"}

    def test_failing_stream_leaves_nothing(self, tmp_path: Path) -> None:
        """If the source stream fails half-way (the source file changed), the temporary file is removed."""
        d = sink_dir(tmp_path)

        async def broken():  # type: ignore[no-untyped-def]
            yield b"x" * 1000
            raise FileChanged("file-changed", "test")

        with pytest.raises(FileChanged):
            asyncio.run(SpoolSink(d).put(b"f", broken(), size=2000, sha256=None, mtime_ns=MTIME))
        assert listdir(d) == set()

    def test_sweep_removes_stale_temporaries_only(self, tmp_path: Path) -> None:
        d = sink_dir(tmp_path)
        (d / ".jgw-deadbeef.part").write_bytes(b"left by a crash")
        (d / ".other.part").write_bytes(b"not ours")
        (d / "f.csv").write_bytes(b"delivered")
        assert asyncio.run(SpoolSink(d, sweep_after=0).sweep()) == 1
        assert listdir(d) == {b".other.part", b"f.csv"}
        assert asyncio.run(SpoolSink(d, sweep_after=3600).sweep()) == 0

    def test_disk_full_is_transient_and_leaves_nothing(self, tmp_path: Path) -> None:
        """On a 1 MiB tmpfs a 3 MiB file fails with disk-full (retry); no partial file, no temporary."""
        with tmpfs(tmp_path / "small", "1m") as d:
            data = os.urandom(3 * 1024 * 1024)
            with pytest.raises(StorageError) as info:
                put(SpoolSink(d), b"f.dat", data)
            assert info.value.reason == "disk-full" and info.value.transient
            assert listdir(d) == set()
            assert put(SpoolSink(d), b"small.dat", b"fits").outcome is Outcome.DELIVERED


class TestSource:
    def test_scan_open_finish_into_done(self, tmp_path: Path) -> None:
        """A complete file is listed, read byte-exact and moved into done/ with its trigger file."""
        (tmp_path / "a.csv").write_bytes(b"alpha")
        (tmp_path / "a.csv.end").write_bytes(b"")
        (tmp_path / "b.csv").write_bytes(b"beta, no trigger yet")
        src = SpoolSource(tmp_path, TriggerRule())
        scan = asyncio.run(src.scan())
        assert [r.name for r in scan.ready] == [b"a.csv"] and [w.name for w in scan.waiting] == [b"b.csv"]
        ref = scan.ready[0]
        assert asyncio.run(read_all(src, ref)) == b"alpha"
        asyncio.run(src.finish(ref, keep_in="done"))
        assert listdir(tmp_path) == {b"b.csv", b"done"}
        assert listdir(tmp_path / "done") == {b"a.csv", b"a.csv.end"}

    def test_finish_remove(self, tmp_path: Path) -> None:
        (tmp_path / "a.csv").write_bytes(b"alpha")
        src = SpoolSource(tmp_path, RenameRule())
        ref = asyncio.run(src.scan()).ready[0]
        asyncio.run(src.finish(ref, keep_in=None))
        assert listdir(tmp_path) == set()

    def test_done_never_overwrites(self, tmp_path: Path) -> None:
        """The same name finished twice is kept twice in done/ (NAME, then NAME.1)."""
        src = SpoolSource(tmp_path, RenameRule())
        for content in (b"monday", b"tuesday"):
            (tmp_path / "daily.csv").write_bytes(content)
            asyncio.run(src.finish(asyncio.run(src.scan()).ready[0], keep_in="done"))
        assert (tmp_path / "done" / "daily.csv").read_bytes() == b"monday"
        assert (tmp_path / "done" / "daily.csv.1").read_bytes() == b"tuesday"

    def test_shift_jis_name_end_to_end(self, tmp_path: Path) -> None:
        """Spool source → spool sink keeps the Shift_JIS name bytes, content and mtime."""
        src_dir = tmp_path / "in"
        src_dir.mkdir()
        path = os.path.join(os.fsencode(src_dir), SJIS)
        with open(path, "wb") as f:
            f.write(b"resident data (synthetic)")
        os.utime(path, ns=(MTIME, MTIME))
        src = SpoolSource(src_dir, RenameRule(), block_size=7)
        sink = SpoolSink(sink_dir(tmp_path))

        async def relay() -> None:
            ref = (await src.scan()).ready[0]
            r = await sink.put(ref.name, src.open(ref), size=ref.size, sha256=None, mtime_ns=ref.mtime_ns)
            assert r.outcome is Outcome.DELIVERED
            await src.finish(ref, keep_in="done")

        asyncio.run(relay())
        out = os.path.join(os.fsencode(tmp_path / "sink"), SJIS)
        assert read_bytes(tmp_path / "sink", SJIS) == b"resident data (synthetic)" and os.stat(out).st_mtime_ns == MTIME
        assert listdir(src_dir / "done") == {SJIS}

    def test_file_growing_while_read_is_put_back(self, tmp_path: Path) -> None:
        """A writer appending while jgw reads: FileChanged after the last block, the sink gets nothing,
        the file stays in place and is taken, whole, by the next scan."""
        (tmp_path / "in").mkdir()
        f = tmp_path / "in" / "g.csv"
        f.write_bytes(b"1" * 100_000)
        src = SpoolSource(tmp_path / "in", RenameRule(), block_size=10_000)
        sink_path = sink_dir(tmp_path)
        sink = SpoolSink(sink_path)

        async def appending():  # type: ignore[no-untyped-def]
            ref = (await src.scan()).ready[0]
            async for block in src.open(ref):
                with f.open("ab") as w:
                    w.write(b"2")
                yield block

        async def first() -> None:
            ref = (await src.scan()).ready[0]
            await sink.put(ref.name, appending(), size=ref.size, sha256=None, mtime_ns=ref.mtime_ns)

        with pytest.raises(FileChanged) as info:
            asyncio.run(first())
        assert info.value.reason == "file-changed" and info.value.transient
        assert listdir(sink_path) == set()
        assert listdir(tmp_path / "in") == {b"g.csv"}
        ref = asyncio.run(src.scan()).ready[0]
        assert ref.size > 100_000
        assert asyncio.run(read_all(src, ref)) == f.read_bytes()

    def test_file_replaced_while_read_is_put_back(self, tmp_path: Path) -> None:
        """Same size, same mtime, new inode (a writer renaming a new version over it): still FileChanged."""
        f = tmp_path / "r.csv"
        f.write_bytes(b"old!" * 1000)
        st = f.stat()
        src = SpoolSource(tmp_path, RenameRule(), block_size=1000)
        ref = asyncio.run(src.scan()).ready[0]

        async def read() -> None:
            async for _ in src.open(ref):
                new = tmp_path / ".new.tmp"
                new.write_bytes(b"new!" * 1000)
                os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
                os.replace(new, f)

        with pytest.raises(FileChanged):
            asyncio.run(read())

    def test_changed_between_listing_and_open(self, tmp_path: Path) -> None:
        f = tmp_path / "c.csv"
        f.write_bytes(b"v1")
        src = SpoolSource(tmp_path, RenameRule())
        ref = asyncio.run(src.scan()).ready[0]
        f.write_bytes(b"v2 longer")
        with pytest.raises(FileChanged) as info:
            asyncio.run(read_all(src, ref))
        assert info.value.reason == "file-changed"
        f.unlink()
        with pytest.raises(FileChanged) as info:
            asyncio.run(read_all(src, ref))
        assert info.value.reason == "file-vanished"

    def test_finish_refuses_a_file_changed_after_reading(self, tmp_path: Path) -> None:
        """A file rewritten after it was delivered is not moved to done/: it stays, to be taken again."""
        f = tmp_path / "c.csv"
        f.write_bytes(b"v1")
        src = SpoolSource(tmp_path, RenameRule())
        ref = asyncio.run(src.scan()).ready[0]
        asyncio.run(read_all(src, ref))
        f.write_bytes(b"v2")
        with pytest.raises(FileChanged):
            asyncio.run(src.finish(ref, keep_in="done"))
        assert listdir(tmp_path) == {b"c.csv"}

    def test_symlink_out_is_refused_and_can_be_quarantined(self, tmp_path: Path) -> None:
        """A link leading out of the spool is refused (name-symlink), never read; moving it aside moves
        the link itself and leaves its target alone."""
        (tmp_path / "secret").write_bytes(b"outside the spool")
        spool = tmp_path / "spool"
        spool.mkdir()
        os.symlink("../secret", spool / "x.csv")
        src = SpoolSource(spool, RenameRule())
        scan = asyncio.run(src.scan())
        assert scan.ready == () and len(scan.refused) == 1
        refused = scan.refused[0]
        assert refused.error.reason == "name-symlink" and "out of the directory" in refused.error.detail
        assert refused.ref is not None
        asyncio.run(src.finish(refused.ref, keep_in="quarantine"))
        assert os.path.islink(spool / "quarantine" / "x.csv")
        assert (tmp_path / "secret").read_bytes() == b"outside the spool"

    def test_stable_rule_waits_for_quiet(self, tmp_path: Path) -> None:
        """With the stable rule a file is ready only after two observations the period apart."""
        clock = [0.0]
        (tmp_path / "s.csv").write_bytes(b"x")
        src = SpoolSource(tmp_path, StableRule(10), clock=lambda: clock[0])
        assert asyncio.run(src.scan()).ready == ()
        clock[0] = 5
        assert asyncio.run(src.scan()).ready == ()
        clock[0] = 10
        assert [r.name for r in asyncio.run(src.scan()).ready] == [b"s.csv"]
