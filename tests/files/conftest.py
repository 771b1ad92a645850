"""Fixtures for the file tests: a private OpenSSH sshd per test, jgw's client key, the pinned host key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.files.sftp import SftpPeer
from tests.lab.sshd import PrivateSshd, keygen, usable


@pytest.fixture
def sshd() -> Iterator[PrivateSshd]:
    reason = usable()
    if reason:
        pytest.skip(reason)
    with PrivateSshd() as server:
        yield server


@pytest.fixture
def client_key(tmp_path: Path) -> Path:
    return keygen(tmp_path / "jgw_client_ed25519", "jgw-test-client")


@pytest.fixture
def peer(sshd: PrivateSshd, client_key: Path, tmp_path: Path) -> SftpPeer:
    """Login data for the private sshd: our key authorised, its host key pinned."""
    sshd.authorize(client_key)
    known = sshd.known_hosts(tmp_path / "known_hosts")
    return SftpPeer("127.0.0.1", sshd.port, "root", client_key, known, connect_timeout=10)
