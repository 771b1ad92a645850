"""Every bad input of issue 3 ends in EnvelopeError with the right reason, and never opens."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import time

import pytest

from gateway.envelope import Contents, EnvelopeError, Opener, OpenPolicy, Sealer, SealItem, codec
from gateway.keyring import CaTrust, EncryptionKey, Keyring, PeerKeys
from tests.lab.testca import NodeKeys

from .conftest import Pki
from .forge import flip, reforge, sections

SUITES = ("default", "pq-hybrid")
SKEW = 300.0
WINDOW = 3600.0


BODY = b"\x82\xa0 opaque \xff bytes"


def seal(keyring: Keyring, *, suite: str = "default", recipients: tuple[str, ...] = ("dc-b",), n: int = 1,
         now: float | None = None, route: str = "r1", body: bytes = BODY) -> list[bytes]:
    sealer = Sealer(suite=suite, route=route, recipients=recipients)
    items = [SealItem(f"msg-{i}", Contents(body + bytes([i]), {"k": i}, content_type="application/x-test"))
             for i in range(n)]
    out = sealer.seal(items, keyring, time.time() if now is None else now)
    assert all(isinstance(e, bytes) for e in out)
    return [e for e in out if isinstance(e, bytes)]


def opener(*, senders: tuple[str, ...] = ("city-a",), suites: tuple[str, ...] = SUITES,
           routes: tuple[str, ...] = ("r1",)) -> Opener:
    return Opener(OpenPolicy(frozenset(senders), frozenset(suites), frozenset(routes), WINDOW, SKEW))


def refusal(data: bytes, keyring: Keyring, *, op: Opener | None = None, now: float | None = None,
            expected_id: str | None = None) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as info:
        when = time.time() if now is None else now
        (op or opener()).open(data, keyring, when, expected_message_id=expected_id)
    return info.value


# -- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_valid_envelope_opens(pki: Pki, suite: str) -> None:
    """The control case: the untouched envelope opens to the exact body and headers."""
    (data,) = seal(pki.keyrings["city-a"], suite=suite)
    opened = opener().open(data, pki.keyrings["dc-b"], time.time())
    assert opened.contents.body == b"\x82\xa0 opaque \xff bytes\x00"
    assert opened.contents.headers == {"k": 0}
    assert opened.envelope.header.sender == "city-a"


def test_every_truncation_is_malformed(pki: Pki) -> None:
    """Each proper prefix of a valid envelope is refused as malformed."""
    (data,) = seal(pki.keyrings["city-a"])
    op = opener()
    for n in range(len(data)):
        err = refusal(data[:n], pki.keyrings["dc-b"], op=op)
        assert err.reason == "envelope-malformed", n


GARBAGE = {"empty": b"", "one-byte": b"J", "magic-only": b"JGWE", "zeros": b"\x00" * 1000,
           "gif": b"GIF89a" + bytes(range(256)), "random": random.Random(3).randbytes(4096)}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_malformed(pki: Pki, garbage: bytes) -> None:
    """Bytes that are not an envelope are refused as malformed."""
    assert refusal(garbage, pki.keyrings["dc-b"]).reason == "envelope-malformed"


def test_trailing_byte_is_malformed(pki: Pki) -> None:
    """One byte after the signature block is malformed, not ignored."""
    (data,) = seal(pki.keyrings["city-a"])
    assert refusal(data + b"\x00", pki.keyrings["dc-b"]).reason == "envelope-malformed"


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_version(pki: Pki, version: int) -> None:
    """A version byte other than 1 is refused as envelope-version."""
    (data,) = seal(pki.keyrings["city-a"])
    mutated = data[:4] + bytes([version]) + data[5:]
    assert refusal(mutated, pki.keyrings["dc-b"]).reason == "envelope-version"


def test_unknown_suite_id(pki: Pki) -> None:
    """A suite id this node does not know is refused as suite-refused."""
    (data,) = seal(pki.keyrings["city-a"])
    assert refusal(data[:5] + b"\x07" + data[6:], pki.keyrings["dc-b"]).reason == "suite-refused"


# -- flipped bits -----------------------------------------------------------------------------


def _flip_cases(data: bytes, batched: bool) -> dict[str, int]:
    s = sections(data)
    h, k, p, g = s["header"][0], s["key_block"][0], s["payload"][0], s["signature_block"][0]
    n_path = data[g + 40]
    cases = {
        "header message id": h + 3,
        "header payload digest": s["header"][1] - 10,
        "key block entry": k + 1 + 2 + 5,
        "payload salt": p + 3,
        "payload ciphertext": p + 40,
        "payload tag": s["payload"][1] - 1,
        "signature": g + 41 + 32 * n_path + 1 + 2 + 7,
        "signed root": g + 8 + 5,
    }
    if batched:
        cases["proof path"] = g + 41 + 3
    return cases


@pytest.mark.parametrize("suite", SUITES)
def test_flipped_bit_single_message(pki: Pki, suite: str) -> None:
    """In a batch of one, a flipped bit anywhere in header, key block, payload or signature is
    signature-invalid: the signature covers every byte before the signature block."""
    (data,) = seal(pki.keyrings["city-a"], suite=suite)
    for name, offset in _flip_cases(data, batched=False).items():
        err = refusal(flip(data, offset), pki.keyrings["dc-b"])
        assert err.reason == "signature-invalid", name


@pytest.mark.parametrize("suite", SUITES)
def test_flipped_bit_batched_message(pki: Pki, suite: str) -> None:
    """In a batch, a flipped bit in the contents or proof path no longer leads to the signed root
    (batch-proof-invalid); one in the root or a signature is signature-invalid."""
    batch = seal(pki.keyrings["city-a"], suite=suite, n=5)
    data = batch[2]
    expected = {"signature": "signature-invalid", "signed root": "signature-invalid"}
    for name, offset in _flip_cases(data, batched=True).items():
        err = refusal(flip(data, offset), pki.keyrings["dc-b"])
        assert err.reason == expected.get(name, "batch-proof-invalid"), name


def test_every_bit_flip_is_refused(pki: Pki) -> None:
    """Flipping any single bit of a default-suite envelope never yields an opened message."""
    (data,) = seal(pki.keyrings["city-a"])
    op = opener()
    allowed = {"envelope-malformed", "envelope-version", "suite-refused", "signature-invalid",
               "batch-proof-invalid", "certificate-untrusted"}
    seen = set()
    for offset in range(len(data)):
        for bit in range(8):
            err = refusal(flip(data, offset, bit), pki.keyrings["dc-b"], op=op)
            assert err.reason in allowed, (offset, bit, err)
            seen.add(err.reason)
    assert {"envelope-malformed", "signature-invalid", "certificate-untrusted"} <= seen


# -- who signed it ----------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_resigned_by_unauthorised_sender(pki: Pki, suite: str) -> None:
    """A valid message re-signed by another trusted node (named as sender) is sender-unauthorised."""
    (data,) = seal(pki.keyrings["city-a"], suite=suite)
    forged = reforge(data, pki.keyrings["dc-b"], pki.keyrings["rogue-x"])
    assert refusal(forged, pki.keyrings["dc-b"]).reason == "sender-unauthorised"


def test_resigned_under_the_authorised_name(pki: Pki) -> None:
    """Re-signed with another node's key but still naming city-a: the key is not city-a's."""
    (data,) = seal(pki.keyrings["city-a"])
    rogue = pki.keyrings["rogue-x"]
    forged = reforge(data, pki.keyrings["dc-b"], rogue, sender="city-a")
    err = refusal(forged, pki.keyrings["dc-b"])
    assert err.reason == "certificate-untrusted"
    assert rogue.signing.key_id in err.detail


def test_sender_not_a_known_peer(pki: Pki) -> None:
    """A sender the keyring has never heard of is certificate-untrusted."""
    (data,) = seal(pki.keyrings["city-a"])
    dc = pki.keyrings["dc-b"]
    no_city = dataclasses.replace(dc, peers={k: v for k, v in dc.peers.items() if k != "city-a"})
    assert refusal(data, no_city).reason == "certificate-untrusted"


def test_signing_certificate_from_unknown_ca(pki: Pki) -> None:
    """A peer whose certificate chains to no trusted CA is certificate-untrusted (unknown-ca)."""
    (data,) = seal(pki.keyrings["stranger-s"])
    err = refusal(data, pki.keyrings["dc-b"], op=opener(senders=("stranger-s",)))
    assert err.reason == "certificate-untrusted"
    assert "unknown-ca" in err.detail


def _dc_knowing(pki: Pki, city: NodeKeys, trust: CaTrust | None = None) -> Keyring:
    peers = [n for n in pki.nodes.values() if n.node_id not in ("city-a", "dc-b")] + [city]
    return pki.nodes["dc-b"].keyring(peers, trust or pki.trust)


def test_expired_signing_certificate(pki: Pki) -> None:
    """A message signed with a certificate that had expired at created-at is certificate-untrusted."""
    twin = pki.expired
    sender = twin.keyring(pki.nodes.values(), pki.trust)
    (data,) = seal(sender)
    err = refusal(data, _dc_knowing(pki, twin))
    assert err.reason == "certificate-untrusted"
    assert "expired" in err.detail


def test_revoked_signing_certificate(pki: Pki) -> None:
    """A signing certificate on its CA's CRL is certificate-untrusted (revoked)."""
    (data,) = seal(pki.keyrings["city-a"])
    crl = pki.ca.crl([pki.nodes["city-a"].sign_cert.serial_number])
    dc = _dc_knowing(pki, pki.nodes["city-a"], CaTrust([pki.ca.cert], crls=[crl]))
    err = refusal(data, dc)
    assert err.reason == "certificate-untrusted"
    assert "revoked" in err.detail


def test_previous_signing_certificate_still_accepted(pki: Pki) -> None:
    """After city-a rotates its signing key, dc-b (knowing both certificates) opens old and new."""
    old = pki.nodes["city-a"]
    new = NodeKeys.create(pki.ca, "city-a")
    assert old.mldsa_cert is not None
    rotated = dataclasses.replace(new, old_sign_certs=(old.sign_cert, old.mldsa_cert))
    dc = _dc_knowing(pki, rotated)
    (before,) = seal(pki.keyrings["city-a"], suite="pq-hybrid")
    (after,) = seal(new.keyring(pki.nodes.values(), pki.trust), suite="pq-hybrid")
    op = opener()
    assert op.open(before, dc, time.time()).contents.body.startswith(b"\x82")
    assert op.open(after, dc, time.time()).contents.body.startswith(b"\x82")


# -- for whom, which route, when --------------------------------------------------------------


def test_message_for_another_recipient(pki: Pki) -> None:
    """dc-b cannot open a message sealed for cs-c alone: not-recipient."""
    (data,) = seal(pki.keyrings["city-a"], recipients=("cs-c",))
    assert refusal(data, pki.keyrings["dc-b"]).reason == "not-recipient"
    assert opener().open(data, pki.keyrings["cs-c"], time.time()).contents.headers == {"k": 0}


def test_retired_decryption_key(pki: Pki) -> None:
    """Once dc-b drops the key a message was sealed to (rotation overlap over), it is not-recipient."""
    (data,) = seal(pki.keyrings["city-a"])
    dc = pki.keyrings["dc-b"]
    fresh = NodeKeys.create(pki.ca, "dc-b")
    retired = Keyring.build("dc-b", dc.signing, dc.trust, fresh.decryption_keys(), dc.peers.values())
    err = refusal(data, retired)
    assert err.reason == "not-recipient"
    assert "retired" in err.detail


def test_rotation_overlap_opens_with_previous_key(pki: Pki) -> None:
    """dc-b holding its previous and its new key opens messages sealed to either."""
    dcn = pki.nodes["dc-b"]
    fresh = NodeKeys.create(pki.ca, "dc-b")
    both = dataclasses.replace(dcn, enc_p256=(*dcn.enc_p256, *fresh.enc_p256))
    dc = both.keyring(pki.nodes.values(), pki.trust)
    others = [n for n in pki.nodes.values() if n.node_id != "dc-b"]
    city_new_view = pki.nodes["city-a"].keyring([*others, both], pki.trust)
    (old,) = seal(pki.keyrings["city-a"])
    (new,) = seal(city_new_view)
    op = opener()
    old_id = dc.decryption_keys[op.open(old, dc, time.time()).recipient_key_id].public.key_id
    new_id = op.open(new, dc, time.time()).recipient_key_id
    assert old_id == pki.keyrings["dc-b"].encryption_key_ids["default"]
    assert new_id == dc.encryption_key_ids["default"] != old_id


def test_route_not_accepted(pki: Pki) -> None:
    """A signed route name the receiving route does not accept is route-mismatch."""
    (data,) = seal(pki.keyrings["city-a"], route="elsewhere")
    assert refusal(data, pki.keyrings["dc-b"]).reason == "route-mismatch"


def test_amqp_message_id_must_match_signed_id(pki: Pki) -> None:
    """An envelope arriving under another AMQP message id is id-mismatch."""
    (data,) = seal(pki.keyrings["city-a"])
    assert refusal(data, pki.keyrings["dc-b"], expected_id="msg-9").reason == "id-mismatch"
    assert opener().open(data, pki.keyrings["dc-b"], time.time(), expected_message_id="msg-0")


@pytest.mark.parametrize(("age", "opens"), [
    (0.0, True),
    (WINDOW + SKEW - 5, True),          # old, but inside window + skew
    (WINDOW + SKEW + 5, False),         # just outside
    (-(SKEW - 5), True),                # a little in the future: within the skew
    (-(SKEW + 5), False),               # too far in the future
    (20 * 3600.0, False),  # certificates are valid from a day ago, so this fails only the window
], ids=["fresh", "inside", "outside", "future-within-skew", "future-beyond-skew", "hours-old"])
def test_replay_window(pki: Pki, age: float, opens: bool) -> None:
    """created-at must lie in [now - window - skew, now + skew]; else outside-window."""
    now = time.time()
    (data,) = seal(pki.keyrings["city-a"], now=now - age)
    if opens:
        assert opener().open(data, pki.keyrings["dc-b"], now).contents.headers == {"k": 0}
    else:
        assert refusal(data, pki.keyrings["dc-b"], now=now).reason == "outside-window"


def test_forged_created_at_cannot_escape_window(pki: Pki) -> None:
    """An old message re-signed with a fresh created-at by its authorised sender opens (it is a new
    message), but re-dated by anyone else fails at the signature: the window uses the signed time."""
    now = time.time()
    (data,) = seal(pki.keyrings["city-a"], now=now - 2 * WINDOW)
    tampered = bytearray(data)
    s = sections(data)
    header = bytes(data[s["header"][0]:s["header"][1]])
    pos = header.index(b"\x04\x00\x08")  # created-at field: tag 4, length 8
    tampered[s["header"][0] + pos + 3:s["header"][0] + pos + 11] = int(now * 1000).to_bytes(8, "big")
    assert refusal(bytes(tampered), pki.keyrings["dc-b"], now=now).reason == "signature-invalid"


# -- suites -----------------------------------------------------------------------------------


def test_suite_not_allowed_on_route(pki: Pki) -> None:
    """A pq-hybrid envelope on a default-only route, and the reverse (downgrade), are suite-refused."""
    (pq,) = seal(pki.keyrings["city-a"], suite="pq-hybrid")
    (classic,) = seal(pki.keyrings["city-a"], suite="default")
    assert refusal(pq, pki.keyrings["dc-b"], op=opener(suites=("default",))).reason == "suite-refused"
    assert refusal(classic, pki.keyrings["dc-b"], op=opener(suites=("pq-hybrid",))).reason == "suite-refused"


def test_hybrid_needs_both_signatures(pki: Pki) -> None:
    """Stripping the ML-DSA co-signature (claiming the default suite) breaks the ECDSA signature."""
    (pq,) = seal(pki.keyrings["city-a"], suite="pq-hybrid")
    as_default = pq[:5] + b"\x01" + pq[6:]
    err = refusal(as_default, pki.keyrings["dc-b"])
    assert err.reason == "envelope-malformed"  # two signing key ids and a hybrid key block do not fit


# -- batches ----------------------------------------------------------------------------------


def test_proof_from_another_leaf(pki: Pki) -> None:
    """Message 0 carrying message 1's proof path does not lead to the signed root."""
    a, b = seal(pki.keyrings["city-a"], n=2)
    sa, sb = sections(a), sections(b)
    spliced = a[:sa["signature_block"][0] - 4] + b[sb["signature_block"][0] - 4:]
    assert refusal(spliced, pki.keyrings["dc-b"]).reason == "batch-proof-invalid"


def test_signature_block_from_another_batch(pki: Pki) -> None:
    """A genuine signature over another batch's root is batch-proof-invalid (signature-invalid alone)."""
    first = seal(pki.keyrings["city-a"], n=3)
    other = seal(pki.keyrings["city-a"], n=3)
    s, o = sections(first[1]), sections(other[1])
    spliced = first[1][:s["signature_block"][0] - 4] + other[1][o["signature_block"][0] - 4:]
    assert refusal(spliced, pki.keyrings["dc-b"]).reason == "batch-proof-invalid"
    (one,) = seal(pki.keyrings["city-a"])
    (two,) = seal(pki.keyrings["city-a"])
    s1, s2 = sections(one), sections(two)
    alone = one[:s1["signature_block"][0] - 4] + two[s2["signature_block"][0] - 4:]
    assert refusal(alone, pki.keyrings["dc-b"]).reason == "signature-invalid"


# -- behind the signature: a key-holding sender that lies -----------------------------------


def test_digest_mismatch(pki: Pki) -> None:
    """Contents that decrypt but do not match the signed payload digest are digest-mismatch."""
    (data,) = seal(pki.keyrings["city-a"])
    forged = reforge(data, pki.keyrings["dc-b"], pki.keyrings["city-a"],
                     digest=hashlib.sha256(b"something else").digest())
    assert refusal(forged, pki.keyrings["dc-b"]).reason == "digest-mismatch"


def test_key_block_for_a_different_key(pki: Pki) -> None:
    """A key block entry sealed to a key other than the one its id names is decrypt-failed."""
    city = pki.keyrings["city-a"]
    imposter_pub = NodeKeys.create(pki.ca, "dc-b").enc_p256[0].public_key()
    real = city.peers["dc-b"].encryption_key_for("default")
    wrong = EncryptionKey("default", real.key_id, imposter_pub)  # same id, other key: a broken keyring
    certs = city.peers["dc-b"].signing_certificates
    peer = PeerKeys("dc-b", certs, {real.key_id: wrong}, {"default": real.key_id})
    bad_view = dataclasses.replace(city, peers={**city.peers, "dc-b": peer})
    (data,) = seal(bad_view)
    assert refusal(data, pki.keyrings["dc-b"]).reason == "decrypt-failed"


def test_key_entry_lifted_into_another_senders_envelope(pki: Pki) -> None:
    """rogue-x (an authorised sender here) copies city-a's key block into its own envelope: the
    HPKE info binds the sender, so the entry does not decrypt for rogue-x's envelope."""
    (data,) = seal(pki.keyrings["city-a"])
    env = codec.parse(data)
    forged = reforge(data, pki.keyrings["dc-b"], pki.keyrings["rogue-x"], key_block=env.key_block)
    err = refusal(forged, pki.keyrings["dc-b"], op=opener(senders=("city-a", "rogue-x")))
    assert err.reason == "decrypt-failed"
