"""Shared throw-away key material for the envelope tests (generated once per session, in memory)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from gateway.keyring import CaTrust, Keyring
from tests.lab.testca import NodeKeys, TestCa

NODES = ("city-a", "dc-b", "cs-c", "rogue-x")


@dataclass
class Pki:
    ca: TestCa
    trust: CaTrust
    nodes: dict[str, NodeKeys]
    keyrings: dict[str, Keyring]
    #: A node whose certificates come from a CA nobody trusts, known to dc-b as a peer anyway.
    stranger: NodeKeys
    #: city-a's twin whose signing certificates expired yesterday (same node id, its own keys).
    expired: NodeKeys


@pytest.fixture(scope="session")
def pki() -> Pki:
    ca = TestCa.create()
    trust = CaTrust([ca.cert])
    nodes = {n: NodeKeys.create(ca, n) for n in NODES}
    other_ca = TestCa.create("some other CA (throw-away)")
    stranger = NodeKeys.create(other_ca, "stranger-s")
    now = dt.datetime.now(dt.UTC)
    expired = NodeKeys.create(ca, "city-a", sign_not_before=now - dt.timedelta(days=30),
                              sign_not_after=now - dt.timedelta(days=1))
    peers = [*nodes.values(), stranger]
    keyrings = {n: k.keyring(peers, trust) for n, k in nodes.items()}
    keyrings["stranger-s"] = stranger.keyring(peers, CaTrust([other_ca.cert]))
    return Pki(ca, trust, nodes, keyrings, stranger, expired)
