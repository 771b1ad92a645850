"""Batch hash trees follow RFC 9162: roots match the recursive definition, every proof verifies."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from gateway.envelope import merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1, written as the RFC states it (recursive, largest power of two below n)."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


@given(st.integers(1, 300))
def test_root_and_every_proof(n: int) -> None:
    """build() gives the RFC root, and each leaf's path leads to it from that leaf only."""
    data = [i.to_bytes(4, "big") for i in range(n)]
    hashes = [merkle.leaf_hash(d) for d in data]
    root, paths = merkle.build(hashes)
    assert root == mth(data)
    for i in range(n):
        assert merkle.root_from_path(hashes[i], i, n, paths[i]) == root
        assert len(paths[i]) == merkle.path_length(i, n)
        if n > 1:
            other = (i + 1) % n
            assert merkle.root_from_path(hashes[other], i, n, paths[i]) != root


def test_bad_paths_lead_nowhere() -> None:
    """Index out of range, a path too short or too long: no root at all."""
    hashes = [merkle.leaf_hash(bytes([i])) for i in range(5)]
    root, paths = merkle.build(hashes)
    assert merkle.root_from_path(hashes[0], 5, 5, paths[0]) is None
    assert merkle.root_from_path(hashes[0], 0, 5, paths[0][:-1]) is None
    assert merkle.root_from_path(hashes[0], 0, 5, [*paths[0], root]) is None
    assert merkle.root_from_path(hashes[0], 0, 1, []) == hashes[0]


def test_leaf_cannot_pass_as_interior_node() -> None:
    """Domain separation: the hash of two leaves, presented as a leaf, is not a valid tree of one."""
    a, b = merkle.leaf_hash(b"a"), merkle.leaf_hash(b"b")
    assert merkle.leaf_hash(a + b) != merkle.node_hash(a, b)
