"""jgw's SFTP endpoint with the real OpenSSH ``sftp`` client as the business system pushing files."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.files.completion import RenameRule
from gateway.files.endpoint import Account, Endpoint
from gateway.files.spool import SpoolSource
from gateway.pki.errors import KeyFileModeError
from tests.lab.sshd import installed, keygen, known_hosts_line, openssh_sftp, public_key

from .helpers import listdir, read_bytes

NAME = "異動対象者情報.csv".encode("shift_jis")  # no 0x5C byte: the sftp client's parser sees it as is


@dataclass
class Lab:
    endpoint: Endpoint
    keys: dict[str, Path]
    spools: dict[str, Path]
    known_hosts: Path
    work: Path

    def sftp(self, account: str, commands: bytes | str, *, key: Path | None = None,
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
        return openssh_sftp(self.endpoint.port, key or self.keys[account], self.known_hosts, commands,
                            user=account, extra=extra, cwd=self.work)

    def ssh(self, account: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ssh", "-F", "/dev/null", "-p", str(self.endpoint.port), "-i", str(self.keys[account]),
                               "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "BatchMode=yes",
                               "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", f"{account}@127.0.0.1",
                               *args], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


class LoopThread:
    """An event loop in a thread, so the endpoint serves while a test runs blocking clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if not installed():
        pytest.skip("the OpenSSH client is needed (python -m tests.lab.sshd --install)")
    host_key = keygen(tmp_path / "endpoint_host_ed25519", "jgw-endpoint")
    keys, spools, accounts = {}, {}, []
    for name in ("ocr", "batch"):
        keys[name] = keygen(tmp_path / f"{name}_key", f"{name}-system")
        (tmp_path / f"{name}.authorized_keys").write_text(public_key(keys[name]) + "\n")
        spools[name] = tmp_path / "spool" / name
        spools[name].mkdir(parents=True)
        accounts.append(Account(name, tmp_path / f"{name}.authorized_keys", spools[name]))
    endpoint = Endpoint(host_key=host_key, accounts=accounts, port=0)
    loop = LoopThread()
    loop.run(endpoint.start())
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", endpoint.port, host_key))
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield Lab(endpoint, keys, spools, known, work)
    finally:
        loop.run(endpoint.close())
        loop.close()


def ok(r: subprocess.CompletedProcess[bytes]) -> bytes:
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout


def test_upload_lands_in_the_spool_byte_exact(lab: Lab) -> None:
    """The OCR system puts a file with a Shift_JIS name: it lands in its route's spool with the same name
    bytes and content, mode 0640 whatever the client asked, and the spool source takes it."""
    data = os.urandom(2 * 1024 * 1024 + 7)
    local = lab.work / "upload.bin"
    local.write_bytes(data)
    ok(lab.sftp("ocr", b"put upload.bin /" + NAME + b"\nchmod 777 /" + NAME + b"\nls -l\n"))
    assert listdir(lab.spools["ocr"]) == {NAME}
    assert read_bytes(lab.spools["ocr"], NAME) == data
    assert os.stat(os.path.join(os.fsencode(lab.spools["ocr"]), NAME)).st_mode & 0o777 == 0o640
    scan = asyncio.run(SpoolSource(lab.spools["ocr"], RenameRule()).scan())
    assert [r.name for r in scan.ready] == [NAME]


def test_temporary_name_is_taken_only_after_the_rename(lab: Lab) -> None:
    """put under NAME.tmp: waiting; after the client's rename to NAME: ready."""
    (lab.work / "f.csv").write_bytes(b"complete only after the rename")
    src = SpoolSource(lab.spools["ocr"], RenameRule())
    ok(lab.sftp("ocr", "put f.csv /idou_0001.csv.tmp\n"))
    scan = asyncio.run(src.scan())
    assert scan.ready == () and [w.name for w in scan.waiting] == [b"idou_0001.csv.tmp"]
    ok(lab.sftp("ocr", "rename /idou_0001.csv.tmp /idou_0001.csv\n"))
    scan = asyncio.run(src.scan())
    assert [r.name for r in scan.ready] == [b"idou_0001.csv"] and scan.waiting == ()


def test_accounts_are_fenced(lab: Lab) -> None:
    """The batch system sees only its own directory: the OCR system's file is not listed, not
    reachable by '..', by the host's absolute path, or by the other account's name."""
    (lab.spools["ocr"] / "private.csv").write_bytes(b"ocr only")
    (lab.spools["batch"] / "mine.csv").write_bytes(b"batch")
    listing = ok(lab.sftp("batch", "ls -1a /\nls -1a /..\n"))
    assert b"private.csv" not in listing and b"mine.csv" in listing
    for path in ("../ocr/private.csv", "/../ocr/private.csv", f"{lab.spools['ocr']}/private.csv",
                 "/ocr/private.csv", "private.csv"):
        r = lab.sftp("batch", f"get {path} stolen.csv\n")
        assert r.returncode != 0, path
    assert not (lab.work / "stolen.csv").exists()
    assert listdir(lab.spools["ocr"]) == {b"private.csv"}


def test_password_and_unknown_users_are_refused(lab: Lab) -> None:
    """Password login is not offered; an unknown user is refused like a wrong key; another account's
    key does not open this account."""
    r = lab.sftp("ocr", "ls\n", extra=("-o", "PreferredAuthentications=password,keyboard-interactive",
                                       "-o", "PubkeyAuthentication=no", "-v"))
    assert r.returncode != 0
    offered = set(re.findall(rb"Authentications that can continue: ([a-z,-]+)", r.stderr))
    assert offered == {b"publickey"}, r.stderr.decode(errors="replace")
    assert lab.sftp("nobody", "ls\n", key=lab.keys["ocr"]).returncode != 0
    assert lab.sftp("batch", "ls\n", key=lab.keys["ocr"]).returncode != 0


def test_no_shell_exec_directories_or_links(lab: Lab) -> None:
    """No command, no directories, no links, no way into done/ (the OpenSSH client's rename is
    posix-rename, which the endpoint allows among the account's own files, as OpenSSH does)."""
    (lab.spools["ocr"] / "done").mkdir()
    (lab.spools["ocr"] / "done" / "old.csv").write_bytes(b"finished")
    (lab.spools["ocr"] / "a.csv").write_bytes(b"a")
    (lab.spools["ocr"] / "b.csv").write_bytes(b"b")
    r = lab.ssh("ocr", "echo", "hello")
    assert r.returncode != 0 and b"hello" not in r.stdout
    for command in ("mkdir /d", "ls /done", "get /done/old.csv x", "rm /done/old.csv", "rename /done /d2",
                    "rmdir /done", "ln -s /a.csv /l.csv", "ln /a.csv /h.csv", "cd /done",
                    "rename /a.csv /done/a.csv", "put /etc/hostname /done/x", "put /etc/hostname /.jgw-x.part"):
        r = lab.sftp("ocr", command + "\n")
        assert r.returncode != 0, command
    assert listdir(lab.spools["ocr"]) == {b"a.csv", b"b.csv", b"done"}
    assert (lab.spools["ocr"] / "b.csv").read_bytes() == b"b"
    assert listdir(lab.spools["ocr"] / "done") == {b"old.csv"}
    assert b"done" not in ok(lab.sftp("ocr", "ls -1\n"))


def test_symlink_placed_by_someone_else_is_not_followed(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"outside")
    os.symlink(tmp_path / "secret", lab.spools["ocr"] / "link.csv")
    assert lab.sftp("ocr", "get /link.csv got.csv\n").returncode != 0
    assert not (lab.work / "got.csv").exists()


def test_host_key_must_be_0600(tmp_path: Path) -> None:
    key = keygen(tmp_path / "host")
    os.chmod(key, 0o644)
    with pytest.raises(KeyFileModeError):
        asyncio.run(Endpoint(host_key=key, accounts=[], port=0).start())
