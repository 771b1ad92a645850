"""jgw's SFTP client key rotated as staff do it (``jgw certs ssh-key new|rotate|rollback|status``),
against a real OpenSSH sshd while a route takes files from it: the switch happens only after the
server has accepted the new key, files keep arriving across it, and every refusal changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.lab.sshd import PrivateSshd, public_key

from .nodes import Node, final_names, put_file, wait

ROOT = Path(__file__).resolve().parents[2]


def jgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def fingerprint(path: Path) -> str:
    return str(asyncssh.read_private_key(str(path)).get_fingerprint("sha256"))


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node")
    yield n
    n.close()


def test_the_client_key_rotates_under_a_running_route(node: Node, tmp_path: Path, sshd: PrivateSshd) -> None:
    out = tmp_path / "out"
    out.mkdir()
    source = {"kind": "sftp", "server": "biz", "directory": "/upload", "completion": {"rule": "rename"},
              "scan_interval": "100ms"}
    config = node.write({"k": {"personal_number": "allowed", "source": source,
                               "sink": {"kind": "directory", "directory": str(out)}}},
                        tables={"sftp": {"biz": node.sftp_server("biz", sshd)}})
    live = node.certs_dir / "sftp" / "biz_ed25519"
    staged, previous = live.with_name("biz_ed25519.new"), live.with_name("biz_ed25519.previous")
    old_bytes, old_fp = live.read_bytes(), fingerprint(live)
    node.start()
    put_file(sshd.upload, b"first.csv", b"1\n")
    wait(lambda: final_names(out) == {b"first.csv"}, what="a file with the old key")

    r = jgw("certs", "ssh-key", "rotate", str(config), "biz")
    assert r.returncode == 66 and "no key staged" in r.stderr
    r = jgw("certs", "ssh-key", "new", str(config), "nosuch")
    assert r.returncode == 64 and "no [sftp.nosuch] server" in r.stderr and "biz" in r.stderr

    r = jgw("certs", "ssh-key", "new", str(config), "biz")
    assert r.returncode == 0, r.stderr
    new_fp = fingerprint(staged)
    assert new_fp != old_fp and new_fp in r.stdout
    line = public_key(staged)  # the line staff hand to the server's administrators
    assert line.split()[:2] == r.stdout.splitlines()[2].split()[:2]
    assert staged.stat().st_mode & 0o777 == 0o600
    again = jgw("certs", "ssh-key", "new", str(config), "biz")
    assert again.returncode == 0 and "already staged" in again.stdout and fingerprint(staged) == new_fp

    # the server does not know the new key yet: refused, nothing changed
    r = jgw("certs", "ssh-key", "rotate", str(config), "biz")
    assert r.returncode == 78 and "does not accept the staged key" in r.stderr, r.stderr
    assert live.read_bytes() == old_bytes and staged.exists() and not previous.exists()
    # a staged key readable by others is refused before any login
    os.chmod(staged, 0o644)
    r = jgw("certs", "ssh-key", "rotate", str(config), "biz")
    assert r.returncode == 77 and "chmod 600" in r.stderr
    os.chmod(staged, 0o600)

    with sshd.authorized_keys.open("a") as f:  # the administrators add the new key
        f.write(line + "\n")
    r = jgw("certs", "ssh-key", "rotate", str(config), "biz", "--dry-run")
    assert r.returncode == 0 and "accepts the staged key" in r.stdout and "nothing changed" in r.stdout
    assert live.read_bytes() == old_bytes
    r = jgw("certs", "ssh-key", "rotate", str(config), "biz")
    assert r.returncode == 0, r.stderr
    assert fingerprint(live) == new_fp and previous.read_bytes() == old_bytes and not staged.exists()
    assert live.stat().st_mode & 0o777 == 0o600 and previous.stat().st_mode & 0o777 == 0o600
    assert public_key(live).split()[:2] == live.with_name("biz_ed25519.pub").read_text().split()[:2]
    assert f"ssh-key rotate: sftp.biz {old_fp} -> {new_fp}" in (node.certs_dir / "rotations.log").read_text()

    # the old key leaves the server and every session is cut: the daemon logs in with the new key
    sshd.authorized_keys.write_text(line + "\n")
    sshd.restart()
    put_file(sshd.upload, b"second.csv", b"2\n")
    wait(lambda: final_names(out) == {b"first.csv", b"second.csv"}, timeout=90, what="a file with the new key")
    assert "refused jgw's public key" not in node.log()

    r = jgw("certs", "ssh-key", "status", str(config))
    assert r.returncode == 0, r.stdout
    assert f"live      {new_fp}" in r.stdout and f"previous  {old_fp}" in r.stdout

    # the previous key is no longer at the server: a checked rollback refuses, an unchecked one goes
    r = jgw("certs", "ssh-key", "rollback", str(config), "biz")
    assert r.returncode == 78 and "does not accept the previous key" in r.stderr
    assert fingerprint(live) == new_fp
    r = jgw("certs", "ssh-key", "rollback", str(config), "biz", "--no-check")
    assert r.returncode == 0, r.stderr
    assert fingerprint(live) == old_fp and fingerprint(previous) == new_fp
