"""Throw-away PKIs for the pki tests: a dev CA and complete certs directories in tmp dirs.

Everything is generated per test (keys, CAs, CRLs) with real cryptography; nothing is committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.pki.devca import DevCa
from gateway.pki.devinit import DevPki, init_dev
from gateway.pki.layout import CertsDir

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Site:
    """One node of a dev PKI, as the tests use it."""

    node_id: str
    root: Path

    @property
    def cd(self) -> CertsDir:
        return CertsDir(self.root)


@dataclass
class World:
    pki: DevPki
    a: Site
    b: Site

    @property
    def ca(self) -> DevCa:
        return self.pki.ca


@pytest.fixture
def now() -> dt.datetime:
    return NOW


@pytest.fixture
def world(tmp_path: Path, now: dt.datetime) -> Iterator[World]:
    """Two nodes, city-a and dc-b, each with gen-0001 live and the other as a peer (pq-hybrid on)."""
    pki = init_dev(tmp_path / "pki", ["city-a", "dc-b"], now)
    yield World(pki, Site("city-a", pki.nodes["city-a"]), Site("dc-b", pki.nodes["dc-b"]))


@pytest.fixture
def other_ca(tmp_path: Path, now: dt.datetime) -> DevCa:
    """A second CA that nobody trusts; its name differs from the dev CA's."""
    return DevCa.create(tmp_path / "other-ca", now, name="untrusted CA")


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mode under ``directory`` (symlinks resolved), for exact comparisons."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mode & 0o7777)
            for p in sorted(directory.rglob("*")) if p.is_file()}
