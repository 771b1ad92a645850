"""File routes end to end through a real ``jgw run``: spool, SFTP (a private OpenSSH sshd) and jgw's
own endpoint (pushed to by the OpenSSH ``sftp`` client) as sources, directories and SFTP as sinks.

Every test counts: files taken at the source = sent + quarantined + dead-lettered + put back, and
what arrived is byte-identical under its name (Shift_JIS names included), with the mtime kept."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab import synth
from tests.lab.rabbitnode import free_port
from tests.lab.sshd import PrivateSshd, keygen, known_hosts_line, openssh_sftp, usable

from .helpers import SJIS, read_bytes
from .nodes import Node, final_names, put_file, temporaries, wait, watch_no_partial

MTIME = 1_712_000_000_000_000_000
SPOOL = {"kind": "spool", "completion": {"rule": "rename"}, "scan_interval": "100ms", "chunk_size": "64KiB"}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node")
    yield n
    n.close()


def dirs(tmp_path: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        out.append(tmp_path / name)
    return out


def route(source: dict[str, object], sink: dict[str, object], **extra: object) -> dict[str, object]:
    return {"personal_number": "allowed", "source": source, "sink": sink, **extra}


def reconciled(node: Node, name: str, taken: int) -> bool:
    f = {o: node.files(name, o) for o in ("sent", "quarantined", "dead_lettered", "put_back")}
    return int(node.metric("jgw_files_taken_total", route=name)) == taken == sum(f.values())


# ------------------------------------------------------------------------------------ spool → directory

def test_spool_to_directory_byte_exact_names_mtimes_and_evidence(node: Node, tmp_path: Path) -> None:
    """Small (one frame), large (many 64 KiB chunks), empty and Shift_JIS-named files arrive
    byte-identical with their mtimes; each source file moves to done/ only after; both the source's
    and the sink's view count them; the audit trail holds each file's SHA-256."""
    src, out = dirs(tmp_path, "in", "out")
    files = {b"small.txt": b"hello\n", b"big.dat": os.urandom(1_000_000), b"empty": b"", SJIS: os.urandom(70_000)}
    for name, data in files.items():
        put_file(src, name, data, mtime_ns=MTIME)
    node.write({"f": route({**SPOOL, "directory": str(src)}, {"kind": "directory", "directory": str(out)})})
    node.start()
    no_partial = watch_no_partial(out, files)
    wait(lambda: final_names(out) == set(files), what="every file at the sink", also=no_partial)
    for name, data in files.items():
        assert read_bytes(out, name) == data
        assert os.stat(os.path.join(os.fsencode(out), name)).st_mtime_ns == MTIME
    wait(lambda: final_names(src / "done") == set(files), what="source files moved to done/")
    assert final_names(src) == set() and temporaries(out) == set()
    wait(lambda: node.files("f", "sent") == 4 and node.files("f", "delivered") == 4, what="file counts")
    assert reconciled(node, "f", 4)
    assert node.metric("jgw_file_bytes_total", route="f", outcome="delivered") == sum(map(len, files.values()))
    node.stop()
    digests = {r.get("file_sha256") for r in node.audit() if r.get("ev") == "deliver"}
    assert {hashlib.sha256(d).hexdigest() for d in files.values()} <= digests
    log = node.log()
    assert "big.dat" not in log and SJIS.decode("shift_jis") not in log, "no file name in the log"


def test_after_remove_and_trigger_files(node: Node, tmp_path: Path) -> None:
    """after = "remove": the file and its trigger (終了ファイル) go once delivered; a file without
    its trigger waits, and status lists it."""
    src, out = dirs(tmp_path, "in", "out")
    put_file(src, b"a.csv", b"1,2,3\n")
    put_file(src, b"a.csv.end", b"")
    put_file(src, b"b.csv", b"4,5,6\n")  # no trigger yet
    source = {"kind": "spool", "directory": str(src), "completion": {"rule": "trigger", "suffixes": [".end"]},
              "after": "remove", "scan_interval": "100ms"}
    node.write({"t": route(source, {"kind": "directory", "directory": str(out)})})
    node.start()
    wait(lambda: final_names(out) == {b"a.csv"}, what="a.csv delivered")
    wait(lambda: final_names(src) == {b"b.csv"}, what="a.csv and a.csv.end removed")
    waiting = wait(lambda: node.status("t")["files"], what="status lists the waiting file")
    assert [(f["name"], f["state"], f["size"]) for f in waiting] == [("b.csv", "waiting", 6)]
    shown = subprocess.run([sys.executable, "-m", "gateway.cli", "status", str(node.config)], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "    file b.csv  (n:" in shown.stdout and "6 bytes, waiting" in shown.stdout
    put_file(src, b"b.csv.end", b"")
    wait(lambda: final_names(out) == {b"a.csv", b"b.csv"} and final_names(src) == set(), what="b.csv")
    assert not (src / "done").exists()
    wait(lambda: reconciled(node, "t", 2), what="counts")


def test_same_file_again_is_a_duplicate_and_another_file_under_the_name_a_conflict(node: Node,
                                                                                  tmp_path: Path) -> None:
    """The sink's name+digest rule: the same bytes under a name already there are already delivered
    (no second file); other bytes are a conflict, dead-lettered with that reason, never overwritten;
    the source file is kept in dead-letter/."""
    src, out = dirs(tmp_path, "in", "out")
    same, other = os.urandom(200_000), os.urandom(200_000)
    put_file(out, b"same.dat", same)
    put_file(out, b"other.dat", b"what was there first")
    put_file(src, b"same.dat", same)
    put_file(src, b"other.dat", other)
    node.write({"c": route({**SPOOL, "directory": str(src)}, {"kind": "directory", "directory": str(out)})})
    node.start()
    wait(lambda: final_names(src / "done") == {b"same.dat"}, what="the duplicate finished")
    wait(lambda: final_names(src / "dead-letter") == {b"other.dat"}, what="the conflict dead-lettered")
    assert read_bytes(out, b"other.dat") == b"what was there first", "never overwritten"
    assert final_names(out) == {b"same.dat", b"other.dat"} and temporaries(out) == set()
    wait(lambda: node.files("c", "duplicate") == 1 and node.files("c", "dead_lettered") == 1, what="counts")
    assert node.metric("jgw_dead_lettered_messages_total", route="c", reason="conflict") >= 1
    assert reconciled(node, "c", 2)
    node.stop()
    assert any(r.get("ev") == "dead-letter" and r.get("reason") == "conflict" for r in node.audit())


def test_a_file_with_a_personal_number_on_a_forbidden_route_is_quarantined(node: Node, tmp_path: Path) -> None:
    """In its bytes (across a chunk boundary), in its name: quarantined whole, nothing at the sink,
    the name never in a log line; a clean file on the same route goes through."""
    src, out = dirs(tmp_path, "in", "out")
    rng = random.Random(7)
    number = synth.valid_personal_number(rng).encode()
    chunk = 64 * 1024
    split = b"x" * (chunk - 5) + b" " + number + b" tail" + b"y" * 100_000  # the number straddles chunks 0/1
    named = number + b"_tennyu.csv"
    files = {b"split.dat": split, named: b"nothing in here", b"clean.dat": b"z" * 200_000}
    for name, data in files.items():
        put_file(src, name, data)
    node.write({"p": {**route({**SPOOL, "directory": str(src)}, {"kind": "directory", "directory": str(out)}),
                      "personal_number": "forbidden", "payload_encoding": "utf-8"}})
    node.start()
    wait(lambda: final_names(src / "quarantine") == {b"split.dat", named}, what="both quarantined")
    wait(lambda: final_names(out) == {b"clean.dat"} and temporaries(out) == set(), what="clean file only")
    wait(lambda: node.files("p", "quarantined") == 2 and node.files("p", "sent") == 1, what="file counts")
    assert node.metric("jgw_quarantined_messages_total", route="p", reason="personal-number") >= 2
    assert reconciled(node, "p", 3)
    log = node.log()
    assert number.decode() not in log and "tennyu" not in log


def test_a_file_that_changes_while_read_is_never_delivered_half(node: Node, tmp_path: Path) -> None:
    """The sink goes down (its directory moved away) so the source holds one chunk (prefetch 1) and
    waits; the file then grows. The reader sees it changed: the chunk already sent is withdrawn
    (abort), the file stays, and is taken again whole, as it is now."""
    src, out = dirs(tmp_path, "in", "out")
    node.write({"g": route({**SPOOL, "directory": str(src)}, {"kind": "directory", "directory": str(out)},
                           prefetch=1)})
    node.start()
    away = tmp_path / "out.away"
    out.rename(away)
    first = os.urandom(300_000)
    put_file(src, b"growing.dat", first)
    wait(lambda: node.metric("jgw_files_taken_total", route="g") == 1, what="the file taken")
    wait(lambda: "io-error" in str(node.status("g")["errors"]), what="the sink down")
    assert node.metric("jgw_in_flight_messages", route="g") == 1, "one chunk in hand"
    second = first + os.urandom(50_000)
    with open(src / "growing.dat", "ab") as f:
        f.write(second[len(first):])
    away.rename(out)
    no_partial = watch_no_partial(out, {b"growing.dat": second})
    wait(lambda: final_names(out) == {b"growing.dat"}, what="the whole file", also=no_partial)
    assert read_bytes(out, b"growing.dat") == second
    wait(lambda: node.files("g", "put_back") == 1 and node.files("g", "sent") == 1, what="file counts")
    wait(lambda: temporaries(out) == set(), what="the withdrawn partial removed")
    assert reconciled(node, "g", 2)
    assert "file changed while read; left in place" in node.log()


def test_a_file_still_being_written_is_taken_only_when_stable(node: Node, tmp_path: Path) -> None:
    src, out = dirs(tmp_path, "in", "out")
    source = {"kind": "spool", "directory": str(src), "completion": {"rule": "stable", "seconds": "1s"},
              "scan_interval": "100ms"}
    node.write({"s": route(source, {"kind": "directory", "directory": str(out)})})
    node.start()
    data = b""
    with open(src / "slow.csv", "wb") as f:
        for i in range(12):  # appending for about 2.4 s, longer than the stable window
            part = f"{i:04d},".encode() * 100
            f.write(part)
            f.flush()
            data += part
            time.sleep(0.2)
            assert final_names(out) == set(), "taken while still being written"
    wait(lambda: final_names(out) == {b"slow.csv"}, what="taken once stable")
    assert read_bytes(out, b"slow.csv") == data
    wait(lambda: reconciled(node, "s", 1), what="counts")


# ------------------------------------------------------------------------------------ SFTP and endpoint

def test_sftp_source_to_sftp_sink(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    """Taken from one directory of a real sshd (trigger files), delivered into another of a second
    sshd, byte-identical with the Shift_JIS name; the source file and its trigger go to done/."""
    with PrivateSshd() as store:
        (sshd.upload / "out").mkdir()
        data = os.urandom(3 * 1024 * 1024 + 7)
        put_file(sshd.upload / "out", SJIS, data, mtime_ns=MTIME)
        put_file(sshd.upload / "out", SJIS + b".ok", b"")
        source = {"kind": "sftp", "server": "ocr", "directory": "/upload/out", "scan_interval": "200ms",
                  "completion": {"rule": "trigger"}, "chunk_size": "1MiB"}
        sink = {"kind": "sftp", "server": "store", "directory": "/upload", "verify": "size"}
        node.write({"s": route(source, sink)},
                   tables={"sftp": {"ocr": node.sftp_server("ocr", sshd), "store": node.sftp_server("store", store)}})
        node.start()
        wait(lambda: final_names(store.upload) == {SJIS}, what="the file at the far server",
             also=watch_no_partial(store.upload, {SJIS: data}))
        assert read_bytes(store.upload, SJIS) == data
        assert os.stat(os.path.join(os.fsencode(store.upload), SJIS)).st_mtime_ns == MTIME
        wait(lambda: final_names(sshd.upload / "out" / "done") == {SJIS, SJIS + b".ok"}, what="done/ on the server")
        assert node.metric("jgw_sftp_session_up", route="s", server="ocr") == 1
        assert node.metric("jgw_sftp_session_up", route="s", server="store") == 1
        assert reconciled(node, "s", 1)
        node.stop()


def test_business_system_pushes_to_jgws_endpoint(node: Node, tmp_path: Path) -> None:
    """The OpenSSH sftp client (the business system) uploads under a temporary name and renames;
    jgw's endpoint lands it in the route's spool, the route delivers it; a name with '..' or a path
    is refused by the endpoint and nothing lands outside."""
    if usable():
        pytest.skip(str(usable()))
    spool, out = dirs(tmp_path, "spool", "out")
    client = keygen(tmp_path / "kizon_ed25519", "kizon-juki")
    node.certs_dir.mkdir(parents=True)
    host_key = keygen(node.certs_dir / "endpoint_ed25519", "jgw-endpoint")
    (node.certs_dir / "kizon.pub").write_text(client.with_name(client.name + ".pub").read_text())
    port = free_port()
    tables = {"endpoint": {"listen": f"127.0.0.1:{port}", "host_key": "endpoint_ed25519",
                           "accounts": {"kizon-juki": {"authorized_keys": "kizon.pub", "directory": str(spool)}}}}
    source = {"kind": "endpoint", "account": "kizon-juki", "completion": {"rule": "rename"}, "scan_interval": "100ms"}
    node.write({"e": route(source, {"kind": "directory", "directory": str(out)})}, tables=tables)
    node.start()
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", port, host_key))
    data = os.urandom(500_000)
    (tmp_path / "local.dat").write_bytes(data)
    batch = f"put {tmp_path / 'local.dat'} juki.dat.part\nrename juki.dat.part juki.dat\n"
    r = openssh_sftp(port, client, known, batch, user="kizon-juki")
    assert r.returncode == 0, r.stderr
    wait(lambda: final_names(out) == {b"juki.dat"}, what="pushed file delivered")
    assert read_bytes(out, b"juki.dat") == data
    # '..' cannot climb out of the account's directory (a chroot: /.. is /); a path is refused
    up = openssh_sftp(port, client, known, f"put {tmp_path / 'local.dat'} ../../escape.dat\n", user="kizon-juki")
    assert up.returncode == 0, up.stderr
    sub = openssh_sftp(port, client, known, f"put {tmp_path / 'local.dat'} done/inside.dat\n", user="kizon-juki")
    assert sub.returncode != 0
    wait(lambda: final_names(out) == {b"juki.dat", b"escape.dat"}, what="the climbing name contained")
    assert not (tmp_path / "escape.dat").exists() and not (spool.parent / "escape.dat").exists()
    assert not (spool / "done" / "inside.dat").exists()
    # the source takes a file off the spool only after the sink has it durably: wait for that too
    wait(lambda: final_names(spool) == set(), what="the spool emptied")
