"""File routes under faults, with real components only: a private OpenSSH sshd killed mid-transfer at
the source and at the sink, the link to it cut by the fault proxy, a full disk (a small tmpfs), jgw
itself SIGKILLed between the sink's rename and the source's move and in the middle of a file, a
changed host key, a symbolic link leading out, frames lost or altered on their way.

Each test asserts: nothing lost (the file arrives byte-identical, or is kept aside with its reason),
no partial file ever visible under its final name (checked on every poll), and the counts reconcile
(files taken = sent + quarantined + dead-lettered + put back)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from gateway.files.chunks import Chunk, Chunker, Manifest, decode
from gateway.files.route_source import frame_message
from gateway.files.settings import H_FILE
from tests.lab.faultproxy import FaultProxyServer
from tests.lab.harness import Amqp, Names, purge_set_aside
from tests.lab.sshd import PrivateSshd, known_hosts_line
from tests.lab.tmpfs import tmpfs

from .helpers import read_bytes
from .nodes import Node, final_names, put_file, temporaries, wait, watch_no_partial

SPOOL = {"kind": "spool", "completion": {"rule": "rename"}, "scan_interval": "100ms"}
MiB = 1024 * 1024


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node")
    yield n
    n.close()


def route(source: dict[str, object], sink: dict[str, object], **extra: object) -> dict[str, object]:
    return {"personal_number": "allowed", "source": source, "sink": sink, **extra}


def mkdirs(tmp_path: Path, *names: str) -> list[Path]:
    for name in names:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    return [tmp_path / n for n in names]


def reconciled(node: Node, name: str) -> bool:
    taken = node.metric("jgw_files_taken_total", route=name)
    parts = sum(node.files(name, o) for o in ("sent", "quarantined", "dead_lettered", "put_back"))
    return taken == parts and taken > 0


def delivered_messages(node: Node, name: str) -> float:
    return node.metric("jgw_messages_total", route=name, outcome="delivered")


# ------------------------------------------------------------------------------------ the SFTP peer fails

@pytest.mark.slow
def test_sshd_killed_mid_download_at_the_source(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    """The business system's sshd dies while jgw reads a large file from it: the chunks already at the
    sink stay in its partial file, nothing appears under the final name, the file stays on the server;
    when sshd is back, jgw takes it again (same file id: the delivered chunks are duplicates) and it
    arrives whole; then it moves to done/ on the server."""
    (out,) = mkdirs(tmp_path, "out")
    data = os.urandom(24 * MiB)
    put_file(sshd.upload, b"big.dat", data)
    source = {**SPOOL, "kind": "sftp", "server": "biz", "directory": "/upload", "chunk_size": "256KiB"}
    node.write({"s": route(source, {"kind": "directory", "directory": str(out)}, prefetch=2)},
               tables={"sftp": {"biz": node.sftp_server("biz", sshd)}})
    node.start()
    no_partial = watch_no_partial(out, {b"big.dat": data})
    wait(lambda: delivered_messages(node, "s") >= 4, what="some chunks delivered", also=no_partial)
    sshd.kill()
    wait(lambda: node.metric("jgw_sftp_session_up", route="s", server="biz") == 0, what="session down",
         also=no_partial)
    assert final_names(out) == set()
    time.sleep(1.0)
    no_partial()
    sshd.start()
    wait(lambda: final_names(out) == {b"big.dat"}, timeout=120, what="the file after sshd came back",
         also=no_partial)
    assert read_bytes(out, b"big.dat") == data
    wait(lambda: final_names(sshd.upload / "done") == {b"big.dat"}, what="done/ on the server")
    wait(lambda: node.files("s", "sent") == 1 and reconciled(node, "s"), what="counts")
    assert node.metric("jgw_dedup_hits_total", route="s") >= 1, "the chunks already delivered were not sent again"
    assert temporaries(out) == set()


@pytest.mark.slow
def test_sshd_killed_mid_upload_at_the_sink(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    """The receiving sshd dies while jgw writes a large file to it: no final name appears; when it is
    back, the sink resumes its partial file from the journal (re-hashing what is there) and renames it
    into place whole; the source file moves to done/ only then."""
    (src,) = mkdirs(tmp_path, "in")
    data = os.urandom(24 * MiB)
    put_file(src, b"big.dat", data)
    sink = {"kind": "sftp", "server": "store", "directory": "/upload", "verify": "size"}
    node.write({"u": route({**SPOOL, "directory": str(src), "chunk_size": "256KiB"}, sink, prefetch=2)},
               tables={"sftp": {"store": node.sftp_server("store", sshd)}})
    node.start()
    no_partial = watch_no_partial(sshd.upload, {b"big.dat": data})
    wait(lambda: delivered_messages(node, "u") >= 4, what="some chunks written", also=no_partial)
    sshd.kill()
    wait(lambda: node.status("u")["state"] != "running", what="the route waits for its sink", also=no_partial)
    assert final_names(sshd.upload) == set() and final_names(src) == {b"big.dat"}
    sshd.start()
    wait(lambda: final_names(sshd.upload) == {b"big.dat"}, timeout=120, what="the file after sshd came back",
         also=no_partial)
    assert read_bytes(sshd.upload, b"big.dat") == data
    wait(lambda: final_names(src / "done") == {b"big.dat"}, what="source file finished")
    assert "partial file resumed" in node.log()
    wait(lambda: temporaries(sshd.upload) == set(), what="no temporaries left")
    wait(lambda: node.files("u", "delivered") == 1 and reconciled(node, "u"), what="counts")


@pytest.mark.slow
def test_link_cut_mid_transfer_by_the_fault_proxy(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    """jgw → fault proxy → sshd (SFTP sink). The proxy cuts every connection mid-file for a while: the
    SSH session dies, the sink waits, reconnects when the link is back and finishes the file."""
    from toxiproxy import Toxiproxy

    (src,) = mkdirs(tmp_path, "in")
    data = os.urandom(16 * MiB)
    put_file(src, b"cut.dat", data)
    with FaultProxyServer() as proxies:
        proxies.configure_client()
        link = Toxiproxy().create(upstream=f"127.0.0.1:{sshd.port}", name=f"sftp{os.getpid()}{time.time_ns()}")
        port = int(link.listen.rsplit(":", 1)[1])
        server = node.sftp_server("store", sshd)
        known = node.certs_dir / "sftp" / "store.known_hosts"
        known.write_text(known_hosts_line("127.0.0.1", port, sshd.host_key))
        server["port"] = port
        sink = {"kind": "sftp", "server": "store", "directory": "/upload", "verify": "size"}
        node.write({"c": route({**SPOOL, "directory": str(src), "chunk_size": "256KiB"}, sink, prefetch=2)},
                   tables={"sftp": {"store": server}})
        node.start()
        no_partial = watch_no_partial(sshd.upload, {b"cut.dat": data})
        wait(lambda: delivered_messages(node, "c") >= 3, what="some chunks written", also=no_partial)
        link.disable()  # every connection through the proxy is closed, new ones refused
        wait(lambda: node.metric("jgw_sftp_session_up", route="c", server="store") == 0, what="session down",
             also=no_partial)
        time.sleep(1.0)
        assert final_names(sshd.upload) == set()
        link.enable()
        wait(lambda: final_names(sshd.upload) == {b"cut.dat"}, timeout=120, what="the file after the cut",
             also=no_partial)
        assert read_bytes(sshd.upload, b"cut.dat") == data
        wait(lambda: final_names(src / "done") == {b"cut.dat"} and reconciled(node, "c"), what="finished")
        node.stop()


def test_the_sinks_disk_full(node: Node, tmp_path: Path) -> None:
    """The sink directory is a 4 MiB tmpfs, 3 MiB of it taken: a 2 MiB file cannot be written. The
    route waits (nothing under the final name, the source file stays); once space is freed the
    file is delivered whole from where it stopped."""
    (src,) = mkdirs(tmp_path, "in")
    with tmpfs(tmp_path / "out", "4m") as out:
        put_file(out, b"filler", b"\0" * (3 * MiB))
        data = os.urandom(2 * MiB)
        put_file(src, b"doc.pdf", data)
        node.write({"d": route({**SPOOL, "directory": str(src), "chunk_size": "256KiB"},
                               {"kind": "directory", "directory": str(out)}, prefetch=2)})
        node.start(wait=False)
        no_partial = watch_no_partial(out, {b"doc.pdf": data})
        wait(lambda: "disk-full" in str(node.status("d")["errors"]), what="the sink reports disk-full",
             also=no_partial)
        assert final_names(out) == {b"filler"} and final_names(src) == {b"doc.pdf"}
        (out / "filler").unlink()
        wait(lambda: final_names(out) == {b"doc.pdf"}, timeout=120, what="delivered once space is back",
             also=no_partial)
        assert read_bytes(out, b"doc.pdf") == data
        wait(lambda: final_names(src / "done") == {b"doc.pdf"} and reconciled(node, "d"), what="finished")
        wait(lambda: temporaries(out) == set(), what="no temporaries")
        node.stop()


# ------------------------------------------------------------------------------------ jgw itself fails

def test_sigkill_between_the_sinks_rename_and_the_sources_move(node: Node, tmp_path: Path) -> None:
    """The file is under its final name at the sink, but the source cannot move it (``done`` is a
    plain file, so the move fails and is retried): jgw is SIGKILLed there. After the restart (done/
    fixed) the file is taken again, recognised at the sink as already delivered (same name, same
    digest: no second file), and finished."""
    src, out = mkdirs(tmp_path, "in", "out")
    data = os.urandom(300_000)
    put_file(src, b"once.dat", data)
    put_file(src, b"once.dat.end", b"")
    put_file(src, b"done", b"not a directory")  # no trigger file: never taken itself
    source = {**SPOOL, "directory": str(src), "chunk_size": "64KiB", "completion": {"rule": "trigger"}}
    node.write({"k": route(source, {"kind": "directory", "directory": str(out)})})
    node.start()
    wait(lambda: final_names(out) == {b"once.dat"}, what="renamed into place at the sink")
    wait(lambda: "cannot finish file; will try again" in node.log(), what="the move failing")
    assert final_names(src) == {b"once.dat", b"once.dat.end", b"done"}
    node.kill()
    (src / "done").unlink()
    node.start()
    wait(lambda: final_names(src / "done") == {b"once.dat", b"once.dat.end"}, what="finished after the restart")
    assert final_names(out) == {b"once.dat"} and read_bytes(out, b"once.dat") == data and temporaries(out) == set()
    after = node.metric("jgw_dedup_hits_total", route="k") + node.files("k", "duplicate")
    assert after >= 1, "recognised as already delivered (dedup, or the sink's name+digest rule)"
    wait(lambda: node.files("k", "sent") == 1 and reconciled(node, "k"), what="counts after the restart")


def _frames(data: bytes, name: bytes, chunk: int, file_id: str) -> list[bytes]:
    chunker = Chunker(file_id=file_id, name=name, size=len(data), mtime_ns=1_712_000_000_000_000_000,
                      chunk_bytes=chunk)
    out = [c.encode() for c in chunker.feed(data)]
    tail, last = chunker.close()
    return out + [c.encode() for c in tail] + [last.encode()]


def _publish_frames(amqp: Amqp, queue: str, frames: list[bytes]) -> list[str]:
    ch = amqp.conn.channel()
    ch.confirm_delivery()
    ids = []
    for raw in frames:
        msg = frame_message("x", decode(raw), time.time())
        props = pika.BasicProperties(message_id=msg.message_id, delivery_mode=2, headers={H_FILE: msg.headers[H_FILE]})
        ch.basic_publish("", queue, raw, props, mandatory=True)
        ids.append(msg.message_id)
    ch.close()
    return ids


@pytest.fixture
def frames_route(node: Node, tmp_path: Path, amqp: Amqp, names: Names) -> Iterator[tuple[str, Path]]:
    """A route taking frames from an AMQP queue (the 庁内 hop, unsealed) into a directory."""
    (out,) = mkdirs(tmp_path, "out")
    queue = names.q("frames")
    node.write({"fr": route({"broker": "local", "queue": queue}, {"kind": "directory", "directory": str(out)},
                            prefetch=4, max_size="2MiB")},
               brokers={"local": {"urls": [amqp.url]}})
    names.configs.append(node.config)  # type: ignore[arg-type]
    yield queue, out


def test_jgw_sigkilled_mid_file_resumes_the_partial_from_its_journal(node: Node, frames_route: tuple[str, Path],
                                                                     amqp: Amqp) -> None:
    """Frames of a 40-chunk file wait in the route's source queue; jgw is SIGKILLed while it writes
    them. After the restart the sink reopens its partial file from the journal (anything written past
    the last journal line cut off, the rest re-hashed), takes the redelivered chunks it already holds
    as identical, and finishes the file byte-exact."""
    queue, out = frames_route
    data = os.urandom(40 * 256 * 1024)
    frames = _frames(data, b"resume.dat", 256 * 1024, "ab" * 16)
    node.start()
    _publish_frames(amqp, queue, frames)
    journal = node.state_dir / "files" / "journals" / "fr" / f"{'ab' * 16}.journal"
    no_partial = watch_no_partial(out, {b"resume.dat": data})
    wait(lambda: journal.exists() and journal.read_bytes().count(b"\n") >= 6, what="chunks journalled",
         also=no_partial)
    node.kill()
    assert final_names(out) == set()
    node.start()
    wait(lambda: final_names(out) == {b"resume.dat"}, timeout=120, what="the file after the restart",
         also=no_partial)
    assert read_bytes(out, b"resume.dat") == data and temporaries(out) == set()
    assert "partial file resumed" in node.log() and not journal.exists()
    wait(lambda: amqp.depth(queue) == 0, what="every frame acknowledged")


@pytest.mark.parametrize("fault", ["lost", "altered", "overlap"])
def test_a_chunk_lost_or_altered_on_its_way_never_yields_a_file(node: Node, frames_route: tuple[str, Path],
                                                               amqp: Amqp, fault: str) -> None:
    """A chunk missing from the sequence, a chunk whose bytes were changed, a chunk whose overlap was
    changed: the frame is quarantined with its reason, no file appears, the partial is removed; the
    same file sent again intact is then delivered."""
    queue, out = frames_route
    data = os.urandom(8 * 64 * 1024)
    frames = _frames(data, b"doc.dat", 64 * 1024, "cd" * 16)
    bad = list(frames)
    if fault == "lost":
        del bad[3]
        reason = "chunk-missing"
    else:
        c = decode(bad[3])
        assert isinstance(c, Chunk)
        if fault == "altered":
            bad[3] = Chunk(c.file_id, c.index, c.count, c.offset, c.sha256, b"X" + c.data[1:], c.overlap).encode()
            reason = "chunk-altered"
        else:
            bad[3] = Chunk(c.file_id, c.index, c.count, c.offset, c.sha256, c.data, b"Y" * len(c.overlap)).encode()
            reason = "chunk-altered"
    node.start()
    ids = _publish_frames(amqp, queue, bad)
    try:
        wait(lambda: node.metric("jgw_quarantined_messages_total", route="fr", reason=reason) >= 1,
             what=f"quarantined as {reason}")
        wait(lambda: amqp.depth(queue) == 0, what="every frame settled")
        assert final_names(out) == set() and temporaries(out) == set()
        m = decode(frames[-1])
        assert isinstance(m, Manifest)
        good = _frames(data, b"doc.dat", 64 * 1024, "ef" * 16)  # sent again, as a new attempt
        ids += _publish_frames(amqp, queue, good)
        wait(lambda: final_names(out) == {b"doc.dat"}, what="the intact file")
        assert hashlib.sha256(read_bytes(out, b"doc.dat")).hexdigest() == m.sha256
    finally:
        purge_set_aside(amqp.url, ids)


# ------------------------------------------------------------------------------------ the peer's identity

def test_a_changed_host_key_refuses_the_server(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    """sshd comes back with another host key: jgw refuses it (host-key-changed, counted, shown in
    status), takes nothing; a file put there meanwhile stays. Pinned again, the file goes."""
    (out,) = mkdirs(tmp_path, "out")
    put_file(sshd.upload, b"first.csv", b"1\n")
    source = {**SPOOL, "kind": "sftp", "server": "biz", "directory": "/upload"}
    node.write({"h": route(source, {"kind": "directory", "directory": str(out)})},
               tables={"sftp": {"biz": node.sftp_server("biz", sshd)}})
    node.start()
    wait(lambda: final_names(out) == {b"first.csv"}, what="first file")
    # the source finishes the file (moves it to done/ on the server) only after the sink has it:
    # restarting sshd before that would leave it there, rightly, for the next session to settle
    wait(lambda: final_names(sshd.upload / "done") == {b"first.csv"}, what="first file finished at the source")
    sshd.restart(new_host_key=True)
    put_file(sshd.upload, b"second.csv", b"2\n")
    wait(lambda: node.metric("jgw_sftp_host_key_failures_total", route="h", server="biz",
                             reason="host-key-changed") >= 1, timeout=90, what="host key refused")
    wait(lambda: "host-key-changed" in str(node.status("h")["errors"]), what="status naming the reason")
    assert node.metric("jgw_sftp_session_up", route="h", server="biz") == 0
    assert final_names(out) == {b"first.csv"} and final_names(sshd.upload) == {b"second.csv"}
    known = node.certs_dir / "sftp" / "biz.known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", sshd.port, sshd.host_key))  # staff pin the new key
    wait(lambda: final_names(out) == {b"first.csv", b"second.csv"}, timeout=90, what="second file")
    assert "host key" in node.log() or "host-key-changed" in node.log()


def test_a_symlink_leading_out_is_quarantined_not_followed(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    (out,) = mkdirs(tmp_path, "out")
    secret = sshd.chroot / "secret.txt"
    secret.write_text("not for export")
    os.symlink("../secret.txt", sshd.upload / "evil.csv")
    put_file(sshd.upload, b"fine.csv", b"ok\n")
    source = {**SPOOL, "kind": "sftp", "server": "biz", "directory": "/upload"}
    node.write({"l": route(source, {"kind": "directory", "directory": str(out)})},
               tables={"sftp": {"biz": node.sftp_server("biz", sshd)}})
    node.start()
    wait(lambda: final_names(out) == {b"fine.csv"}, what="the regular file")
    wait(lambda: os.path.islink(sshd.upload / "quarantine" / "evil.csv"), what="the link moved to quarantine/")
    assert secret.read_text() == "not for export" and not (out / "evil.csv").exists()
    wait(lambda: node.files("l", "quarantined") == 1 and node.files("l", "sent") == 1, what="counts")
    assert reconciled(node, "l")


@pytest.mark.slow
def test_one_gib_relays_with_the_daemons_memory_under_200_mib(node: Node, tmp_path: Path) -> None:
    """1 GiB through jgw run (spool → 4 MiB frames → directory): byte-exact, and the daemon's peak
    resident memory (VmHWM) stays under 200 MiB."""
    src, out = mkdirs(tmp_path, "in", "out")
    whole = hashlib.sha256()
    block = os.urandom(MiB)
    with open(src / "big.part", "wb") as f:
        for i in range(1024):
            chunk = block[:-4] + i.to_bytes(4, "big")
            f.write(chunk)
            whole.update(chunk)
    node.write({"g": route({**SPOOL, "directory": str(src)}, {"kind": "directory", "directory": str(out)})})
    node.start()
    os.rename(src / "big.part", src / "big.dat")
    wait(lambda: final_names(out) == {b"big.dat"}, timeout=900, what="1 GiB delivered")
    assert node.proc is not None and node.proc.proc is not None
    with open(f"/proc/{node.proc.proc.pid}/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    h = hashlib.sha256()
    with open(out / "big.dat", "rb") as f:
        while data := f.read(8 * MiB):
            h.update(data)
    assert h.hexdigest() == whole.hexdigest()
    assert hwm < 200 * MiB, f"peak RSS {hwm / MiB:.0f} MiB"
    print(f"1 GiB relayed; jgw peak RSS {hwm / MiB:.0f} MiB")


def test_a_partial_file_its_sender_never_finished_is_removed_after_partial_timeout(
        node: Node, tmp_path: Path, amqp: Amqp, names: Names) -> None:
    """The first chunks of a file arrive, then nothing (no manifest, no abort: the sender was lost for
    good): after partial_timeout the sink removes the partial file and its journal; no file ever."""
    (out,) = mkdirs(tmp_path, "out")
    queue = names.q("frames")
    node.write({"pt": route({"broker": "local", "queue": queue},
                            {"kind": "directory", "directory": str(out), "partial_timeout": "2s"})},
               brokers={"local": {"urls": [amqp.url]}})
    names.configs.append(node.config)  # type: ignore[arg-type]
    node.start()
    frames = _frames(os.urandom(6 * 64 * 1024), b"never.dat", 64 * 1024, "9a" * 16)
    _publish_frames(amqp, queue, frames[:3])
    journal = node.state_dir / "files" / "journals" / "pt" / f"{'9a' * 16}.journal"
    wait(lambda: journal.exists() and journal.read_bytes().count(b"\n") == 4, what="three chunks journalled")
    assert temporaries(out) != set()
    # the sink logs after it removed the files: wait for both
    wait(lambda: not journal.exists() and temporaries(out) == set() and "partial file abandoned" in node.log(),
         timeout=30, what="the partial removed, and said")
    assert final_names(out) == set()
