"""Epoch keys and batch signatures save work without making any message depend on another."""

from __future__ import annotations

import dataclasses
import time

import pytest

from gateway.envelope import Contents, EnvelopeError, Opener, OpenPolicy, Sealer, SealItem, codec
from gateway.keyring import Keyring
from tests.lab.testca import NodeKeys

from .conftest import Pki

SUITES = ("default", "pq-hybrid")


def items(n: int, start: int = 0, body: bytes = b"same payload") -> list[SealItem]:
    return [SealItem(f"m-{start + i}", Contents(body)) for i in range(n)]


def policy() -> OpenPolicy:
    return OpenPolicy(frozenset({"city-a"}), frozenset(SUITES), frozenset({"r1"}), 3600.0, 300.0)


def sealed(results: list[bytes | EnvelopeError]) -> list[bytes]:
    assert all(isinstance(r, bytes) for r in results)
    return [r for r in results if isinstance(r, bytes)]


def seal_default(pki: Pki, batch: list[SealItem], now: float) -> list[bytes]:
    sealer = Sealer(suite="default", route="r1", recipients=["dc-b"])
    return sealed(sealer.seal(batch, pki.keyrings["city-a"], now))


@pytest.mark.parametrize("suite", SUITES)
def test_one_epoch_one_root_one_hpke_per_receiver(pki: Pki, suite: str) -> None:
    """A batch of 50 in one epoch costs the receiver one signature check and one HPKE decryption."""
    sealer = Sealer(suite=suite, route="r1", recipients=["dc-b", "cs-c"])
    now = time.time()
    batch = sealed(sealer.seal(items(50), pki.keyrings["city-a"], now))
    assert sealer.epochs_started == 1
    op = Opener(policy())
    bodies = [op.open(e, pki.keyrings["dc-b"], now).contents.body for e in batch]
    assert bodies == [b"same payload"] * 50
    assert (op.root_verifications, op.hpke_decryptions) == (1, 1)
    assert len({codec.parse(e).key_block for e in batch}) == 1  # every message carries the same key block


def test_every_message_opens_alone(pki: Pki) -> None:
    """Any message of a batch opens with a fresh Opener (empty caches), in any order."""
    now = time.time()
    batch = seal_default(pki, items(7), now)
    for i in (6, 3, 0, 5):
        op = Opener(policy())
        assert op.open(batch[i], pki.keyrings["dc-b"], now).envelope.header.message_id == f"m-{i}"
        assert (op.root_verifications, op.hpke_decryptions) == (1, 1)


def test_epoch_rotates_by_count(pki: Pki) -> None:
    """epoch_messages=25 over 100 messages (in batches of 10) starts 4 epochs."""
    sealer = Sealer(suite="default", route="r1", recipients=["dc-b"], epoch_messages=25)
    now = time.time()
    envs = []
    for b in range(10):
        envs += sealed(sealer.seal(items(10, 10 * b), pki.keyrings["city-a"], now))
    assert sealer.epochs_started == 4
    epochs = [codec.parse(e).header.epoch_id for e in envs]
    assert [len(set(epochs[i:i + 25])) for i in range(0, 100, 25)] == [1, 1, 1, 1]
    op = Opener(policy())
    for e in envs:
        op.open(e, pki.keyrings["dc-b"], now)
    assert op.hpke_decryptions == 4


def test_epoch_rotates_by_time_and_clock_step_back(pki: Pki) -> None:
    """An epoch older than epoch_seconds, or a clock that went back, starts a new epoch."""
    sealer = Sealer(suite="default", route="r1", recipients=["dc-b"], epoch_seconds=60)
    now = time.time()
    city = pki.keyrings["city-a"]
    sealer.seal(items(1), city, now)
    sealer.seal(items(1), city, now + 59)
    assert sealer.epochs_started == 1
    sealer.seal(items(1), city, now + 61)
    assert sealer.epochs_started == 2
    sealer.seal(items(1), city, now + 30)
    assert sealer.epochs_started == 3


def test_epoch_rotates_when_recipient_key_changes(pki: Pki) -> None:
    """A keyring reload that changes a recipient's key id starts a new epoch sealed to the new key."""
    sealer = Sealer(suite="default", route="r1", recipients=["dc-b"])
    now = time.time()
    (before,) = sealed(sealer.seal(items(1), pki.keyrings["city-a"], now))
    new_dc = NodeKeys.create(pki.ca, "dc-b")
    others = [n for n in pki.nodes.values() if n.node_id != "dc-b"]
    reloaded = pki.nodes["city-a"].keyring([*others, new_dc], pki.trust)
    (after,) = sealed(sealer.seal(items(1), reloaded, now))
    assert sealer.epochs_started == 2
    assert codec.parse(before).header.recipients != codec.parse(after).header.recipients
    receiver = new_dc.keyring(pki.nodes.values(), pki.trust)
    assert Opener(policy()).open(after, receiver, now).contents.body == b"same payload"


def test_cached_epoch_key_not_used_after_key_retired(pki: Pki) -> None:
    """The epoch-key cache never opens a message once the keyring no longer holds that key."""
    now = time.time()
    a, b = seal_default(pki, items(2), now)
    op = Opener(policy())
    op.open(a, pki.keyrings["dc-b"], now)
    dc = pki.keyrings["dc-b"]
    retired = Keyring.build("dc-b", dc.signing, dc.trust, NodeKeys.create(pki.ca, "dc-b").decryption_keys(),
                            dc.peers.values())
    with pytest.raises(EnvelopeError) as info:
        op.open(b, retired, now)
    assert info.value.reason == "not-recipient"


def test_fresh_key_and_ciphertext_per_message(pki: Pki) -> None:
    """Identical payloads in one epoch give distinct salts and ciphertexts (a key per message)."""
    now = time.time()
    envs = seal_default(pki, items(200), now)
    payloads = [codec.parse(e).payload for e in envs]
    assert len({p[:codec.SALT_BYTES] for p in payloads}) == 200
    assert len({p[codec.SALT_BYTES:] for p in payloads}) == 200


def test_mixed_batch_refuses_only_the_bad_item(pki: Pki) -> None:
    """An unsealable item is refused on its own; the others of the batch are sealed and open."""
    now = time.time()
    batch = [*items(2), SealItem("bad id\n", Contents(b"x")), SealItem("m-3", Contents(b"y", {"t": (1, 2)}))]
    out = Sealer(suite="default", route="r1", recipients=["dc-b"]).seal(batch, pki.keyrings["city-a"], now)
    assert [type(r).__name__ for r in out] == ["bytes", "bytes", "EnvelopeError", "EnvelopeError"]
    assert {r.reason for r in out if isinstance(r, EnvelopeError)} == {"unsealable"}
    op = Opener(policy())
    assert [op.open(r, pki.keyrings["dc-b"], now).envelope.signature_block.tree_size
            for r in out if isinstance(r, bytes)] == [2, 2]


def test_hybrid_without_mldsa_key_is_a_keyring_problem(pki: Pki) -> None:
    """Sealing pq-hybrid with a keyring that has no ML-DSA key raises KeyringError (not a Refusal)."""
    from gateway.keyring import KeyringError, SigningIdentity
    city = pki.keyrings["city-a"]
    classic = dataclasses.replace(city, signing=SigningIdentity.create(city.signing.private_key,
                                                                       city.signing.certificate))
    with pytest.raises(KeyringError):
        Sealer(suite="pq-hybrid", route="r1", recipients=["dc-b"]).seal(items(1), classic, time.time())
