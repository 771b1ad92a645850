"""Batch hash trees: one signature covers a batch, each message carries its proof path.

The tree is the RFC 9162 (Certificate Transparency 2.0, §2.1) Merkle tree over SHA-256: a leaf
hash is SHA-256(0x00 || leaf data), an interior node SHA-256(0x01 || left || right), and a tree of
n > 1 leaves splits at the largest power of two below n. Proof paths and their verification follow
RFC 9162 §2.1.3. The 0x00/0x01 prefixes keep a leaf from passing as an interior node.

Security: pure functions over bytes; no keys, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_BYTES = 32


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def build(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Root and every leaf's proof path, from leaf hashes, in one pass.

    Pairing nodes left to right level by level and promoting a lone last node unchanged builds the
    same tree as RFC 9162's largest-power-of-two split."""
    if not leaves:
        raise ValueError("a batch tree needs at least one leaf")
    paths: list[list[bytes]] = [[] for _ in leaves]
    members: list[list[int]] = [[i] for i in range(len(leaves))]  # leaves under each node
    level = list(leaves)
    while len(level) > 1:
        nxt: list[bytes] = []
        nxt_members: list[list[int]] = []
        for i in range(0, len(level) - 1, 2):
            left, right = level[i], level[i + 1]
            for leaf in members[i]:
                paths[leaf].append(right)
            for leaf in members[i + 1]:
                paths[leaf].append(left)
            nxt.append(node_hash(left, right))
            nxt_members.append(members[i] + members[i + 1])
        if len(level) % 2:
            nxt.append(level[-1])
            nxt_members.append(members[-1])
        level, members = nxt, nxt_members
    return level[0], paths


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root a proof path leads to (RFC 9162 §2.1.3.2), or None if the path cannot be one for
    leaf ``index`` of a tree of ``size`` leaves (wrong length, index out of range)."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0 or len(p) != HASH_BYTES:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def path_length(index: int, size: int) -> int:
    """How many hashes leaf ``index``'s proof path has in a tree of ``size`` leaves."""
    n = 0
    fn, sn = index, size - 1
    while sn:
        if fn & 1 or fn != sn:
            n += 1
        fn >>= 1
        sn >>= 1
    return n
