"""The SFTP client adapters against a real OpenSSH sshd: byte-exact transfers, the pinned host key,
key-only login, and faults (server killed mid-upload, disk full) that never leave a partial file."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.files import (
    Conflict,
    FileChanged,
    HostKeyRefused,
    LinkError,
    LinkRefused,
    Outcome,
    StorageError,
)
from gateway.files.completion import RenameRule, TriggerRule
from gateway.files.sftp import SftpLink, SftpPeer, SftpSink, SftpSource
from tests.lab.sshd import PrivateSshd, keygen, openssh_sftp
from tests.lab.tmpfs import tmpfs

from .helpers import SJIS, listdir, read_bytes, sha, stream, wait_until

MTIME = 1_712_000_000_000_000_000  # whole seconds: SFTP v3 carries seconds


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def put(peer: SftpPeer, name: bytes, data: bytes, directory: str = "/upload", **kw: object):  # type: ignore[no-untyped-def]
    sink = SftpSink(SftpLink(peer), directory, **kw)  # type: ignore[arg-type]
    try:
        return await sink.put(name, stream(data, 256 * 1024), size=len(data), sha256=sha(data), mtime_ns=MTIME)
    finally:
        await sink.close()


def connection_lines(sshd: PrivateSshd) -> int:
    return sshd.log.read_text(errors="replace").count("Connection from")


class TestTransfers:
    def test_upload_and_download_byte_exact(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """A file with a Shift_JIS name goes up byte-exact with its mtime, comes back byte-exact, and is
        moved into done/ on the server with its trigger file."""
        data = os.urandom(5 * 1024 * 1024 + 123)
        r = run(put(peer, SJIS, data))
        assert r.outcome is Outcome.DELIVERED and r.sha256 == sha(data) and "read back" in r.verified
        assert listdir(sshd.upload) == {SJIS}
        assert read_bytes(sshd.upload, SJIS) == data
        assert os.stat(os.path.join(os.fsencode(sshd.upload), SJIS)).st_mtime_ns == MTIME
        (sshd.upload / "x.end").write_bytes(b"")  # a trigger of nothing: ignored
        with open(os.path.join(os.fsencode(sshd.upload), SJIS + b".end"), "wb"):
            pass

        async def download() -> bytes:
            src = SftpSource(SftpLink(peer), "/upload", TriggerRule())
            try:
                scan = await src.scan()
                assert [ref.name for ref in scan.ready] == [SJIS]
                ref = scan.ready[0]
                assert ref.companions == (SJIS + b".end",) and ref.size == len(data)
                got = b"".join([b async for b in src.open(ref)])
                await src.finish(ref, keep_in="done")
                return got
            finally:
                await src.close()

        assert run(download()) == data
        assert listdir(sshd.upload) == {b"done", b"x.end"}
        assert listdir(sshd.upload / "done") == {SJIS, SJIS + b".end"}

    def test_idempotent_and_conflict(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """Same name and digest again: ALREADY_PRESENT, no transfer; other bytes: Conflict, never
        overwritten; nothing but the first file remains."""
        assert run(put(peer, b"f.csv", b"first")).outcome is Outcome.DELIVERED
        assert run(put(peer, b"f.csv", b"first")).outcome is Outcome.ALREADY_PRESENT
        with pytest.raises(Conflict):
            run(put(peer, b"f.csv", b"other"))
        assert listdir(sshd.upload) == {b"f.csv"} and (sshd.upload / "f.csv").read_bytes() == b"first"

    def test_conflict_appearing_during_upload_is_not_overwritten(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """A file that appears under the name while jgw uploads is kept: the plain SFTP rename refuses
        to replace it (posix-rename would have), and the digest says conflict."""
        data = b"jgw's" * 100_000

        async def racing() -> AsyncIterator[bytes]:
            async for block in stream(data, 100_000):
                yield block
            (sshd.upload / "race.csv").write_bytes(b"someone else's")

        async def go() -> None:
            sink = SftpSink(SftpLink(peer), "/upload")
            try:
                await sink.put(b"race.csv", racing(), size=len(data), sha256=sha(data), mtime_ns=MTIME)
            finally:
                await sink.close()

        with pytest.raises(Conflict):
            run(go())
        assert listdir(sshd.upload) == {b"race.csv"}
        assert (sshd.upload / "race.csv").read_bytes() == b"someone else's"

    def test_finish_remove(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """A route that removes finished files leaves nothing behind on the server."""
        (sshd.upload / "r.csv").write_bytes(b"read once")

        async def take() -> None:
            src = SftpSource(SftpLink(peer), "/upload", RenameRule())
            try:
                ref = (await src.scan()).ready[0]
                assert b"".join([b async for b in src.open(ref)]) == b"read once"
                await src.finish(ref, keep_in=None)
            finally:
                await src.close()

        run(take())
        assert listdir(sshd.upload) == set()

    def test_verify_by_size(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        r = run(put(peer, b"s.dat", b"z" * 70_000, verify="size"))
        assert r.outcome is Outcome.DELIVERED and r.verified.startswith("size")

    def test_file_changed_while_read_stays(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """A remote file growing while jgw reads it raises FileChanged and is left where it is."""
        f = sshd.upload / "g.csv"
        f.write_bytes(b"1" * 3_000_000)

        async def read() -> None:
            src = SftpSource(SftpLink(peer), "/upload", RenameRule(), block_size=500_000)
            try:
                ref = (await src.scan()).ready[0]
                async for _ in src.open(ref):
                    with f.open("ab") as w:
                        w.write(b"2")
            finally:
                await src.close()

        with pytest.raises(FileChanged):
            run(read())
        assert listdir(sshd.upload) == {b"g.csv"}

    def test_symlink_on_server_is_refused(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        (sshd.chroot / "outside.txt").write_bytes(b"not in the directory")
        os.symlink("../outside.txt", sshd.upload / "l.csv")
        (sshd.upload / "ok.csv").write_bytes(b"ok")

        async def scan():  # type: ignore[no-untyped-def]
            src = SftpSource(SftpLink(peer), "/upload", RenameRule())
            try:
                return await src.scan()
            finally:
                await src.close()

        result = run(scan())
        assert [r.name for r in result.ready] == [b"ok.csv"]
        assert [(r.name, r.error.reason) for r in result.refused] == [(b"l.csv", "name-symlink")]
        assert "out of the directory" in result.refused[0].error.detail

    def test_server_offers_no_check_file(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """Why the sink reads back: OpenSSH 9.2 offers posix-rename, fsync and statvfs, but no check-file
        (the extensions as the OpenSSH client logs them)."""
        r = openssh_sftp(sshd.port, peer.client_key, peer.known_hosts, "bye\n", extra=["-vvv"])
        assert r.returncode == 0, r.stderr
        ext = set(re.findall(rb'Server supports extension "([^"]+)"', r.stderr))
        assert {b"posix-rename@openssh.com", b"fsync@openssh.com", b"statvfs@openssh.com"} <= ext
        assert not any(e.startswith(b"check-file") for e in ext)

        async def flags() -> tuple[bool, bool, bool]:
            link = SftpLink(peer)
            try:
                h = (await link.sftp())._handler  # asyncssh keeps only what it understood
                return h._supports_posix_rename, h._supports_fsync, h._supports_statvfs  # type: ignore[attr-defined]
            finally:
                await link.close()

        assert run(flags()) == (True, True, True)


class TestLink:
    def test_unknown_host_key_is_refused(self, sshd: PrivateSshd, peer: SftpPeer, tmp_path: Path) -> None:
        """A known-hosts file without this server: host-key-unknown, counted as a link fault."""
        other = keygen(tmp_path / "other_host")
        (tmp_path / "kh_other").write_text(f"[127.0.0.1]:{sshd.port + 1} {(tmp_path / 'other_host.pub').read_text()}")
        for known in (tmp_path / "kh_other", tmp_path / "kh_empty"):
            known.touch()
            link = SftpLink(dataclasses.replace(peer, known_hosts=known))
            with pytest.raises(HostKeyRefused) as info:
                run(link.sftp())
            assert info.value.reason == "host-key-unknown" and info.value.link_fault
            assert info.value.disposition == "operator" and not info.value.transient
            assert f"127.0.0.1:{sshd.port}" in info.value.detail
            assert link.state == "down" and link.last_error is info.value
        del other

    def test_changed_host_key_is_refused(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """The pinned key works; after the server restarts with a new host key: host-key-changed."""
        assert run(put(peer, b"before.csv", b"x")).outcome is Outcome.DELIVERED
        sshd.restart(new_host_key=True)
        with pytest.raises(HostKeyRefused) as info:
            run(put(peer, b"after.csv", b"x"))
        assert info.value.reason == "host-key-changed"
        assert listdir(sshd.upload) == {b"before.csv"}

    def test_changed_host_key_of_another_type_is_changed(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """A server now presenting an RSA key where ed25519 was pinned is 'changed' too, not a
        negotiation failure (all key types are offered in the handshake)."""
        sshd.stop()
        keygen(sshd.host_key, "new-rsa", kind="rsa")
        sshd.start()
        with pytest.raises(HostKeyRefused) as info:
            run(SftpLink(peer).sftp())
        assert info.value.reason == "host-key-changed"

    def test_world_readable_client_key_is_refused_before_connecting(self, sshd: PrivateSshd,
                                                                    peer: SftpPeer) -> None:
        """Client key mode 0644: key-mode, and the server never saw a connection."""
        os.chmod(peer.client_key, 0o644)
        before = connection_lines(sshd)
        with pytest.raises(LinkRefused) as info:
            run(SftpLink(peer).sftp())
        assert info.value.reason == "key-mode" and "chmod 600" in info.value.detail
        assert connection_lines(sshd) == before

    def test_missing_client_key(self, peer: SftpPeer, tmp_path: Path) -> None:
        with pytest.raises(LinkRefused) as info:
            run(SftpLink(dataclasses.replace(peer, client_key=tmp_path / "nope")).sftp())
        assert info.value.reason == "key-unreadable"

    def test_key_not_authorised(self, peer: SftpPeer, tmp_path: Path) -> None:
        stranger = keygen(tmp_path / "stranger")
        with pytest.raises(LinkRefused) as info:
            run(SftpLink(dataclasses.replace(peer, client_key=stranger)).sftp())
        assert info.value.reason == "auth-refused"

    def test_password_only_server_is_refused(self, client_key: Path, tmp_path: Path) -> None:
        """A server that offers only password login: auth-refused (jgw never sends a password)."""
        with PrivateSshd(password_only=True) as server:
            server.authorize(client_key)
            known = server.known_hosts(tmp_path / "kh")
            link = SftpLink(SftpPeer("127.0.0.1", server.port, "root", client_key, known))
            with pytest.raises(LinkRefused) as info:
                run(link.sftp())
            assert info.value.reason == "auth-refused"
            assert "Failed password" not in server.log.read_text(errors="replace")

    def test_server_down_is_transient(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        sshd.stop()
        with pytest.raises(LinkError) as info:
            run(SftpLink(peer).sftp())
        assert info.value.reason == "unavailable" and info.value.transient


class TestFaults:
    def test_sshd_killed_mid_upload(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """sshd SIGKILLed while 32 MiB are uploading: a transient 'unavailable', nothing under the final
        name (the .jgw-*.part temporary remains on the server). After sshd is back, the next upload's
        new connection sweeps the temporary (sweep_after=0 here) and delivers."""
        data = os.urandom(32 * 1024 * 1024)

        async def killing() -> AsyncIterator[bytes]:
            async for i, block in aenumerate(stream(data, 1024 * 1024)):
                if i == 8:
                    wait_until(lambda: any(n.startswith(b".jgw-") for n in listdir(sshd.upload)), what="temp file")
                    sshd.kill()
                yield block

        async def go() -> None:
            sink = SftpSink(SftpLink(peer), "/upload", sweep_after=0)
            try:
                await sink.put(b"big.dat", killing(), size=len(data), sha256=sha(data), mtime_ns=MTIME)
            finally:
                await sink.close()

        with pytest.raises(LinkError) as info:
            run(go())
        assert info.value.reason == "unavailable" and info.value.transient
        names = listdir(sshd.upload)
        assert b"big.dat" not in names
        assert len(names) == 1 and next(iter(names)).startswith(b".jgw-")
        sshd.start()

        async def again() -> Outcome:
            link = SftpLink(peer)
            sink = SftpSink(link, "/upload", sweep_after=0)
            try:
                r = await sink.put(b"big.dat", stream(data, 1024 * 1024), size=len(data), sha256=sha(data),
                                   mtime_ns=MTIME)
                return r.outcome
            finally:
                await sink.close()

        assert run(again()) is Outcome.DELIVERED
        assert listdir(sshd.upload) == {b"big.dat"}
        assert read_bytes(sshd.upload, b"big.dat") == data

    def test_sshd_killed_mid_download(self, sshd: PrivateSshd, peer: SftpPeer, tmp_path: Path) -> None:
        """sshd SIGKILLed while jgw reads a 16 MiB file: 'unavailable', the spool sink got nothing, and the
        file is still on the server, taken whole once sshd is back."""
        data = os.urandom(16 * 1024 * 1024)
        (sshd.upload / "src.dat").write_bytes(data)
        out = tmp_path / "out"
        out.mkdir()

        async def relay(kill: bool) -> None:
            from gateway.files.spool import SpoolSink

            src = SftpSource(SftpLink(peer), "/upload", RenameRule(), block_size=1024 * 1024)
            try:
                ref = (await src.scan()).ready[0]

                async def blocks() -> AsyncIterator[bytes]:
                    async for i, block in aenumerate(src.open(ref)):
                        if kill and i == 4:
                            sshd.kill()
                        yield block

                await SpoolSink(out).put(ref.name, blocks(), size=ref.size, sha256=None, mtime_ns=ref.mtime_ns)
                await src.finish(ref, keep_in="done")
            finally:
                await src.close()

        with pytest.raises(LinkError) as info:
            run(relay(kill=True))
        assert info.value.reason == "unavailable"
        assert listdir(out) == set() and listdir(sshd.upload) == {b"src.dat"}
        sshd.start()
        run(relay(kill=False))
        assert read_bytes(out, b"src.dat") == data and listdir(sshd.upload / "done") == {b"src.dat"}

    def test_sink_disk_full(self, sshd: PrivateSshd, peer: SftpPeer) -> None:
        """A 1 MiB tmpfs as the remote directory: a 3 MiB upload fails with disk-full (statvfs), transient;
        no partial file and no temporary are left."""
        with tmpfs(sshd.upload / "small", "1m") as small:
            with pytest.raises(StorageError) as info:
                run(put(peer, b"f.dat", os.urandom(3 * 1024 * 1024), "/upload/small"))
            assert info.value.reason == "disk-full" and info.value.transient
            assert listdir(small) == set()
            assert run(put(peer, b"fits.dat", b"ok", "/upload/small")).outcome is Outcome.DELIVERED


async def aenumerate(it: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    i = 0
    async for x in it:
        yield i, x
        i += 1
