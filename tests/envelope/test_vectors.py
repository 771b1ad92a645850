"""The published test vectors (tests/vectors/envelope-v1.json) agree with docs/envelope.md and the code.

Two readers check every vector: a small verifier written here from docs/envelope.md alone (struct,
hashlib and cryptography primitives, no jgw codec), and jgw's own Opener. Both must reach the same
contents; the invalid vectors must be refused with their stated reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, MLKEM768X25519PrivateKey, Suite
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.envelope import EnvelopeError, Opener, OpenPolicy, codec, inner
from gateway.keyring import CaTrust, DecryptionKey, Keyring, PeerKeys, hybrid_key_id, key_id

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "envelope-v1.json").read_text("utf-8"))
KEYS = VECTORS["keys"]
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def ec_private(hex_scalar: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(hex_scalar, 16), ec.SECP256R1())


def cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def p256_key(node: str) -> ec.EllipticCurvePrivateKey:
    return ec_private(KEYS[node]["encryption_ec_p256_private_scalar"])


def hybrid_key(node: str) -> MLKEM768X25519PrivateKey:
    return MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(KEYS[node]["mlkem768_seed"])),
        x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS[node]["x25519_private"])),
    )


def unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"bytes_hex"}:
        return bytes.fromhex(value["bytes_hex"])
    if isinstance(value, dict):
        return {k: unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unplain(v) for v in value]
    return value


def test_key_ids_and_certificates() -> None:
    """The stated key ids follow the key-id rule, and each certificate holds its private key's public key."""
    city = KEYS["city-a"]
    sign = ec_private(city["signing_ec_p256_private_scalar"])
    assert (
        key_id(sign.public_key())
        == city["signing_key_id"]
        == key_id(cert(city["signing_certificate_pem"]).public_key())
    )  # type: ignore[arg-type]
    ml = mldsa.MLDSA65PrivateKey.from_seed_bytes(bytes.fromhex(city["mldsa65_seed"]))
    assert key_id(ml.public_key()) == city["mldsa65_key_id"]
    for node in ("dc-b", "cs-c"):
        k = KEYS[node]
        assert key_id(p256_key(node).public_key()) == k["encryption_key_id"]
        m = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(k["mlkem768_seed"]))
        xk = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(k["x25519_private"]))
        assert hybrid_key_id(m.public_key(), xk.public_key()) == k["hybrid_key_id"]


# -- a verifier written from docs/envelope.md ------------------------------------------------------


def spec_open(raw: bytes, reader: str) -> dict[str, Any]:
    """Sections 3-7 of the spec, step by step; returns what it found (assertions fail on any mismatch)."""
    assert raw[:4] == b"JGWE" and raw[4] == 1
    suite_id = raw[5]
    pos, sections = 6, []
    for _ in range(4):
        (n,) = struct.unpack_from(">I", raw, pos)
        sections.append((pos + 4, pos + 4 + n))
        pos += 4 + n
    assert pos == len(raw)
    (h0, h1), (k0, k1), (p0, p1), (s0, _s1) = sections
    fields, i = {}, h0
    while i < h1:
        tag, n = struct.unpack_from(">BH", raw, i)
        fields[tag] = raw[i + 3 : i + 3 + n]
        i += 3 + n
    recipients, j = [], 1
    for _ in range(fields[5][0]):
        n = fields[5][j]
        recipients.append((fields[5][j + 1 : j + 1 + n].decode(), fields[5][j + 1 + n : j + 17 + n]))
        j += 17 + n
    sign_ids = [fields[6][1 + 16 * k : 17 + 16 * k] for k in range(fields[6][0])]
    sender, epoch_id = fields[3].decode(), fields[7]

    # signature block and the RFC 9162 proof (section 6)
    tree_size, leaf_index = struct.unpack_from(">II", raw, s0)
    root = raw[s0 + 8 : s0 + 40]
    n_path = raw[s0 + 40]
    path = [raw[s0 + 41 + 32 * k : s0 + 73 + 32 * k] for k in range(n_path)]
    q = s0 + 41 + 32 * n_path
    sigs = []
    q += 1
    for _ in range(raw[q - 1]):
        (n,) = struct.unpack_from(">H", raw, q)
        sigs.append(raw[q + 2 : q + 2 + n])
        q += 2 + n
    leaf = hashlib.sha256(b"\x00" + raw[:p1]).digest()
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0 and r == root
    signing_input = b"jgw-envelope/1 batch-root\0" + bytes([suite_id]) + struct.pack(">I", tree_size) + root
    city = KEYS["city-a"]
    ec_pub = cert(city["signing_certificate_pem"]).public_key()
    assert isinstance(ec_pub, ec.EllipticCurvePublicKey)
    rr, ss = int.from_bytes(sigs[0][:32], "big"), int.from_bytes(sigs[0][32:], "big")
    assert len(sigs[0]) == 64 and ss <= N // 2
    ec_pub.verify(encode_dss_signature(rr, ss), signing_input, ec.ECDSA(hashes.SHA256()))
    assert sign_ids[0].hex() == city["signing_key_id"]
    if suite_id == 2:
        ml_pub = cert(city["mldsa65_certificate_pem"]).public_key()
        assert isinstance(ml_pub, mldsa.MLDSA65PublicKey)
        ml_pub.verify(sigs[1], signing_input, b"jgw-envelope/1")
        assert sign_ids[1].hex() == city["mldsa65_key_id"]

    # key block (section 5) and payload (section 7)
    idx = [n for n, _ in recipients].index(reader)
    entries, e = [], k0 + 1
    for _ in range(raw[k0]):
        (n,) = struct.unpack_from(">H", raw, e)
        entries.append(raw[e + 2 : e + 2 + n])
        e += 2 + n
    info = (
        b"jgw-envelope/1 key\0"
        + bytes([suite_id])
        + epoch_id
        + bytes([len(sender)])
        + sender.encode()
        + bytes([len(reader)])
        + reader.encode()
        + recipients[idx][1]
    )
    if suite_id == 1:
        epoch_key = Suite(KEM.P256, KDF.HKDF_SHA256, AEAD.AES_256_GCM).decrypt(
            entries[idx], p256_key(reader), info=info
        )
    else:
        epoch_key = Suite(KEM.MLKEM768_X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM).decrypt(
            entries[idx], hybrid_key(reader), info=info
        )
    salt = raw[p0 : p0 + 32]
    pkey = HKDF(hashes.SHA256(), 32, salt=salt, info=b"jgw-envelope/1 payload").derive(epoch_key)
    inner_record = AESGCM(pkey).decrypt(bytes(12), raw[p0 + 32 : p1], raw[:k1])
    assert hashlib.sha256(inner_record).digest() == fields[8]
    return {
        "header_hex": raw[h0:h1].hex(),
        "leaf_hash_hex": leaf.hex(),
        "root_hex": root.hex(),
        "signing_input_hex": signing_input.hex(),
        "hpke_info_hex": info.hex(),
        "epoch_key_hex": epoch_key.hex(),
        "payload_key_hex": pkey.hex(),
        "inner_record_hex": inner_record.hex(),
        "aad_length": k1,
        "signed_part_length": p1,
        "created_at_ms": struct.unpack(">Q", fields[4])[0],
    }


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["name"] for v in VECTORS["vectors"]])
def test_spec_verifier_reproduces_intermediates(vector: dict[str, Any]) -> None:
    """The verifier written from the spec reaches every published intermediate value, for each recipient."""
    mid = vector["intermediate"]
    for reader, expected in mid["recipients"].items():
        got = spec_open(bytes.fromhex(vector["envelope_hex"]), reader)
        assert got["hpke_info_hex"] == expected["hpke_info_hex"]
        assert got["epoch_key_hex"] == expected["epoch_key_hex"]
        for name in (
            "header_hex",
            "leaf_hash_hex",
            "root_hex",
            "signing_input_hex",
            "payload_key_hex",
            "inner_record_hex",
            "aad_length",
            "signed_part_length",
        ):
            assert got[name] == mid[name], name
        assert got["created_at_ms"] == vector["header"]["created_at_ms"]


def _receiver(node: str) -> Keyring:
    ca = cert(KEYS["ca"]["certificate_pem"])
    city = KEYS["city-a"]
    peer = PeerKeys.build(
        "city-a", [cert(city["signing_certificate_pem"]), cert(city["mldsa65_certificate_pem"])]
    )
    m = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(KEYS[node]["mlkem768_seed"]))
    xk = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS[node]["x25519_private"]))
    return Keyring.build(
        node, None, CaTrust([ca]), [DecryptionKey.p256(p256_key(node)), DecryptionKey.hybrid(m, xk)], [peer]
    )


def _opener() -> Opener:
    return Opener(
        OpenPolicy(
            frozenset({VECTORS["sender"]}),
            frozenset({"default", "pq-hybrid"}),
            frozenset(VECTORS["accepted_routes"]),
            3600.0,
            300.0,
        )
    )


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=[v["name"] for v in VECTORS["vectors"]])
def test_jgw_opens_each_vector(vector: dict[str, Any]) -> None:
    """jgw's Opener opens each vector at its created-at to the published header and contents; the
    codec re-encodes header and inner record to the published bytes."""
    raw = bytes.fromhex(vector["envelope_hex"])
    now = dt.datetime.fromisoformat(vector["open_at"]).timestamp()
    h = vector["header"]
    for reader in vector["intermediate"]["recipients"]:
        opened = _opener().open(raw, _receiver(reader), now, expected_message_id=h["message_id"])
        c, want = opened.contents, vector["contents"]
        assert c.body == bytes.fromhex(want["body_hex"])
        assert c.headers == unplain(want["headers"])
        for prop in ("content_type", "content_encoding", "correlation_id", "type", "app_id", "timestamp"):
            assert getattr(c, prop) == want[prop], prop
        got = opened.envelope.header
        assert (got.message_id, got.route, got.sender, got.created_at_ms) == (
            h["message_id"],
            h["route"],
            h["sender"],
            h["created_at_ms"],
        )
        assert [[r.node_id, r.key_id.hex()] for r in got.recipients] == h["recipients"]
        assert got.payload_digest.hex() == h["payload_digest"]
        assert (got.order_key.hex() if got.order_key else None) == h["order_key"]
        assert got.encode().hex() == vector["intermediate"]["header_hex"]
    record = bytes.fromhex(vector["intermediate"]["inner_record_hex"])
    assert inner.encode(inner.decode(record), record[:16]) == record
    assert codec.parse(raw).encode() == raw


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=[v["name"] for v in VECTORS["invalid"]])
def test_invalid_vectors(vector: dict[str, str]) -> None:
    """Each invalid vector is refused with the reason the file states."""
    now = dt.datetime.fromisoformat(VECTORS["vectors"][0]["open_at"]).timestamp()
    with pytest.raises(EnvelopeError) as info:
        _opener().open(bytes.fromhex(vector["envelope_hex"]), _receiver("dc-b"), now)
    assert info.value.reason == vector["reason"]


def test_vectors_fail_outside_their_window() -> None:
    """Opened a day after created-at with a one-hour window, a vector is outside-window: the vectors
    really are judged at their fixed created-at, not at test time."""
    vector = VECTORS["vectors"][0]
    later = dt.datetime.fromisoformat(vector["open_at"]).timestamp() + 86400
    with pytest.raises(EnvelopeError) as info:
        _opener().open(bytes.fromhex(vector["envelope_hex"]), _receiver("dc-b"), later)
    assert info.value.reason == "outside-window"
