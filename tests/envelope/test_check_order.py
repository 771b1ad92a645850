"""The proof checks of docs/envelope.md section 9, in their order (issue 15 item 8).

Check 4 (the signatures over the root) comes before check 5 (the proof), and check 5 is the whole
RFC 9162 section 2.1.3.2 verification: a leaf index at or beyond the tree size, a tree size of 0, a
path of the wrong length or one that does not lead to the root all fail there, after the signature,
never while parsing. Check 5 fails with ``batch-proof-invalid``, or ``signature-invalid`` when the
tree size is 1 (a lone message has no proof to speak of: its signature does not cover it).
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from gateway.envelope import EnvelopeError, codec, merkle, suites
from gateway.envelope.codec import SignatureBlock
from gateway.keyring import Keyring

from .conftest import Pki
from .test_open_refusals import opener, refusal, seal


def with_block(data: bytes, **changes: object) -> bytes:
    """The same envelope with its (unsigned) signature block changed."""
    env = codec.parse(data)
    return codec.finish(env.signed_part, dataclasses.replace(env.signature_block, **changes))


def resigned(data: bytes, signer: Keyring, tree_size: int, leaf_index: int = 0) -> bytes:
    """Re-signed by the real sender over this envelope's leaf as the root, for a stated tree size."""
    env = codec.parse(data)
    root = merkle.leaf_hash(env.signed_part)
    to_sign = codec.root_signing_input(env.suite, tree_size, root)
    assert signer.signing is not None
    sigs = [suites.ecdsa_sign(signer.signing.private_key, to_sign)]
    if env.suite is suites.PQ_HYBRID:
        assert signer.signing.mldsa_private_key is not None
        sigs.append(suites.mldsa_sign(signer.signing.mldsa_private_key, to_sign))
    return codec.finish(env.signed_part, SignatureBlock(tree_size, leaf_index, root, (), tuple(sigs)))


def bad_signature(data: bytes) -> bytes:
    env = codec.parse(data)
    sig = bytearray(env.signature_block.signatures[0])
    sig[40] ^= 0x01
    return with_block(data, signatures=(bytes(sig), *env.signature_block.signatures[1:]))


@pytest.mark.parametrize("suite", ["default", "pq-hybrid"])
def test_leaf_index_beyond_a_tree_of_one_is_signature_invalid(pki: Pki, suite: str) -> None:
    """A tree of one with leaf index 1 (or 2**32-1): check 5 fails, and for a tree of one that is
    signature-invalid, as section 9 says (section 6 used to say batch-proof-invalid)."""
    (data,) = seal(pki.keyrings["city-a"], suite=suite)
    for index in (1, 2**32 - 1):
        err = refusal(with_block(data, leaf_index=index), pki.keyrings["dc-b"])
        assert err.reason == "signature-invalid", index


def test_leaf_index_beyond_a_batch_is_batch_proof_invalid(pki: Pki) -> None:
    """In a tree of 5, leaf index 5 (the signature being good) is batch-proof-invalid."""
    envs = seal(pki.keyrings["city-a"], n=5)
    assert refusal(with_block(envs[2], leaf_index=5), pki.keyrings["dc-b"]).reason == "batch-proof-invalid"


def test_signature_is_checked_before_the_proof(pki: Pki) -> None:
    """A bad signature and an impossible leaf index: the signature is check 4, so signature-invalid
    (the code used to refuse the index while parsing, before any signature)."""
    envs = seal(pki.keyrings["city-a"], n=5)
    err = refusal(bad_signature(with_block(envs[2], leaf_index=9)), pki.keyrings["dc-b"])
    assert err.reason == "signature-invalid"


def test_the_proof_sits_between_checks_4_and_6(pki: Pki) -> None:
    """An impossible leaf index is not looked at before checks 2 and 3 (a refused suite is
    suite-refused, a sender nobody knows certificate-untrusted), and it is found before check 6: a
    receiver that knows the sender's certificates but does not trust their CA says
    batch-proof-invalid."""
    envs = seal(pki.keyrings["city-a"], n=5)
    broken = with_block(envs[2], leaf_index=9)
    assert refusal(broken, pki.keyrings["dc-b"], op=opener(suites=("pq-hybrid",))).reason == "suite-refused"
    nobody = Keyring.build("auditor", None, pki.trust)
    assert refusal(broken, nobody).reason == "certificate-untrusted"
    assert refusal(envs[2], pki.keyrings["stranger-s"]).reason == "certificate-untrusted"  # check 6
    assert refusal(broken, pki.keyrings["stranger-s"]).reason == "batch-proof-invalid"


def test_tree_size_is_signed(pki: Pki) -> None:
    """Changing the tree size changes the signing input: signature-invalid."""
    envs = seal(pki.keyrings["city-a"], n=5)
    assert refusal(with_block(envs[0], tree_size=8), pki.keyrings["dc-b"]).reason == "signature-invalid"


def test_tree_size_zero_fails_the_proof(pki: Pki) -> None:
    """A tree size of 0 parses; unsigned it fails check 4, signed (by a broken sender) check 5."""
    (data,) = seal(pki.keyrings["city-a"])
    assert refusal(with_block(data, tree_size=0), pki.keyrings["dc-b"]).reason == "signature-invalid"
    signed_zero = resigned(data, pki.keyrings["city-a"], tree_size=0)
    assert codec.parse(signed_zero).signature_block.tree_size == 0
    assert refusal(signed_zero, pki.keyrings["dc-b"]).reason == "batch-proof-invalid"


def test_path_of_the_wrong_length(pki: Pki) -> None:
    """One hash too many or too few: batch-proof-invalid in a tree of 5, signature-invalid in a tree
    of one (whose path must be empty)."""
    envs = seal(pki.keyrings["city-a"], n=5)
    path = codec.parse(envs[1]).signature_block.path
    for changed in (path[:-1], (*path, bytes(32))):
        err = refusal(with_block(envs[1], path=changed), pki.keyrings["dc-b"])
        assert err.reason == "batch-proof-invalid"
    (single,) = seal(pki.keyrings["city-a"])
    assert refusal(with_block(single, path=(bytes(32),)), pki.keyrings["dc-b"]).reason == "signature-invalid"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 8, 9, 16, 17])
def test_every_leaf_of_a_batch_opens_alone(pki: Pki, n: int) -> None:
    """Each envelope of a batch of n opens by itself, and only at its own leaf index."""
    envs = seal(pki.keyrings["city-a"], n=n)
    op = opener()
    for i, data in enumerate(envs):
        assert codec.parse(data).signature_block.leaf_index == i
        assert op.open(data, pki.keyrings["dc-b"], time.time()).contents.headers == {"k": i}
        if n > 1:
            wrong = with_block(data, leaf_index=(i + 1) % n)
            with pytest.raises(EnvelopeError) as info:
                op.open(wrong, pki.keyrings["dc-b"], time.time())
            assert info.value.reason == "batch-proof-invalid"
