"""The published test vectors (tests/vectors/envelope-v1.json) agree with docs/envelope.md and the code.

Two readers check every vector: a small verifier written here from docs/envelope.md alone (struct,
hashlib and cryptography primitives, no jgw codec and no HPKE library: the HPKE key schedule of
RFC 9180, DHKEM(P-256) and the X-Wing combiner are written out, so the vectors pin the X-Wing
revision), and jgw's own Opener. Both must reach the same contents; the invalid vectors must be
refused with their stated reason, the revocation vectors judged as section 9 says, and the test
keys' PKCS#8 files must be the seed formats of section 1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.envelope import EnvelopeError, Opener, OpenPolicy, codec, inner, suites
from gateway.keyring import CaTrust, CertificateTrust, DecryptionKey, Keyring, PeerKeys, hybrid_key_id, key_id
from gateway.pki.keyring_trust import StoreTrust
from gateway.pki.trust import TrustStore

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "envelope-v1.json").read_text("utf-8"))
KEYS = VECTORS["keys"]
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def ec_private(hex_scalar: str) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int(hex_scalar, 16), ec.SECP256R1())


def cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def p256_key(node: str) -> ec.EllipticCurvePrivateKey:
    return ec_private(KEYS[node]["encryption_ec_p256_private_scalar"])


def mlkem_key(node: str) -> mlkem.MLKEM768PrivateKey:
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(KEYS[node]["mlkem768_seed"]))


def x25519_key(node: str) -> x25519.X25519PrivateKey:
    return x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(KEYS[node]["x25519_private"]))


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


# -- HPKE base mode (RFC 9180) from primitives: docs/envelope.md sections 1 and 5 ---------------------

XWING_LABEL = b"\\.//^\\"  # 5C 2E 2F 2F 5E 5C


def _expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([i]), "sha256")
        out, i = out + block, i + 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt or bytes(32), b"HPKE-v1" + suite_id + label + ikm, "sha256")


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _expand(prk, struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info, length)


def hpke_open(suite_id: int, entry: bytes, info: bytes, reader: str) -> dict[str, bytes]:
    """Decrypt one key-block entry: the KEM (DHKEM(P-256) or X-Wing), then the key schedule."""
    out: dict[str, bytes] = {}
    if suite_id == 1:
        kem_id, enc = 0x0010, entry[:65]
        sk = p256_key(reader)
        dh = sk.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc))
        pk_rm = sk.public_key().public_bytes(serialization.Encoding.X962,
                                             serialization.PublicFormat.UncompressedPoint)
        kem_sid = b"KEM" + struct.pack(">H", kem_id)
        eae_prk = _labeled_extract(kem_sid, b"", b"eae_prk", dh)
        shared = _labeled_expand(kem_sid, eae_prk, b"shared_secret", enc + pk_rm, 32)
    else:
        kem_id, enc = 0x647A, entry[:1120]
        ct_m, ct_x = enc[:1088], enc[1088:]
        xk = x25519_key(reader)
        out["xwing_ss_mlkem"] = mlkem_key(reader).decapsulate(ct_m)
        out["xwing_ss_x25519"] = xk.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        shared = hashlib.sha3_256(out["xwing_ss_mlkem"] + out["xwing_ss_x25519"] + ct_x
                                  + xk.public_key().public_bytes_raw() + XWING_LABEL).digest()
    sid = b"HPKE" + struct.pack(">HHH", kem_id, 0x0001, 0x0002)
    context = (b"\x00" + _labeled_extract(sid, b"", b"psk_id_hash", b"")
               + _labeled_extract(sid, b"", b"info_hash", info))
    secret = _labeled_extract(sid, shared, b"secret", b"")
    out["kem_shared_secret"] = shared
    out["hpke_key"] = _labeled_expand(sid, secret, b"key", context, 32)
    out["hpke_base_nonce"] = _labeled_expand(sid, secret, b"base_nonce", context, 12)
    out["epoch_key"] = AESGCM(out["hpke_key"]).decrypt(out["hpke_base_nonce"], entry[len(enc):], b"")
    return out


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
    assert leaf_index < tree_size
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in path:
        assert sn != 0
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
    assert len(entries[idx]) == (65 if suite_id == 1 else 1120) + 48
    kem = hpke_open(suite_id, entries[idx], info, reader)
    epoch_key = kem["epoch_key"]
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
        **{f"{k}_hex": v.hex() for k, v in kem.items() if k != "epoch_key"},
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
        kem_values = ["hpke_info_hex", "epoch_key_hex", "kem_shared_secret_hex", "hpke_key_hex",
                      "hpke_base_nonce_hex"]
        if vector["suite"] == "pq-hybrid":
            kem_values += ["xwing_ss_mlkem_hex", "xwing_ss_x25519_hex"]
        for name in kem_values:
            assert got[name] == expected[name], name
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


def _receiver(node: str, trust: CertificateTrust | None = None) -> Keyring:
    ca = cert(KEYS["ca"]["certificate_pem"])
    city = KEYS["city-a"]
    peer = PeerKeys.build(
        "city-a", [cert(city["signing_certificate_pem"]), cert(city["mldsa65_certificate_pem"])]
    )
    return Keyring.build(
        node,
        None,
        trust or CaTrust([ca]),
        [DecryptionKey.p256(p256_key(node)), DecryptionKey.hybrid(mlkem_key(node), x25519_key(node))],
        [peer],
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


def test_vectors_cover_batches_of_both_suites() -> None:
    """The file holds, for each suite, a lone message and a batch of at least 5 leaves (every leaf of
    it), with two recipients."""
    for suite in ("default", "pq-hybrid"):
        mine = [v for v in VECTORS["vectors"] if v["suite"] == suite]
        sizes = {v["intermediate"]["tree_size"] for v in mine}
        assert 1 in sizes and max(sizes) >= 5, suite
        big = max(sizes)
        assert sorted(v["intermediate"]["leaf_index"] for v in mine if v["intermediate"]["tree_size"] == big) == list(
            range(big)
        )
        assert any(len(v["intermediate"]["recipients"]) == 2 for v in mine), suite


def test_vectors_reach_the_nesting_limit() -> None:
    """One vector's headers nest exactly 8 levels below the headers table (docs/envelope.md section 7);
    the invalid list has a ninth level, refused at check 13."""

    def depth(value: Any) -> int:
        if isinstance(value, dict) and set(value) != {"bytes_hex"}:
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        return 0

    deepest = max(max((depth(v) for v in vec["contents"]["headers"].values()), default=0)
                  for vec in VECTORS["vectors"])
    assert deepest == 8
    assert any(v["reason"] == "envelope-malformed" and "9 levels" in v["name"] for v in VECTORS["invalid"])


PKCS8_SEED_PREFIXES = {
    # RFC 9935 (ML-KEM-768, seed form: [0] IMPLICIT OCTET STRING of d || z), RFC 9881 (ML-DSA-65, seed
    # form: [0] IMPLICIT OCTET STRING of xi), RFC 8410 (X25519: CurvePrivateKey)
    "mlkem768": bytes.fromhex("3054020100300b0609608648016503040402044280 40".replace(" ", "")),
    "mldsa65": bytes.fromhex("3034020100300b0609608648016503040312042280 20".replace(" ", "")),
    "x25519": bytes.fromhex("302e020100300506032b656e04220420"),
}


def test_test_keys_are_given_in_the_documented_seed_formats() -> None:
    """Each test key's raw form (P-256 scalar, ML-DSA-65 seed xi, ML-KEM-768 seed d || z, X25519 private
    key) and its PKCS#8 file agree, and the PKCS#8 files of the post-quantum and X25519 keys are exactly
    the seed forms of docs/envelope.md section 1: a fixed prefix, then the raw bytes."""

    def der(pem: str) -> bytes:
        key = serialization.load_pem_private_key(pem.encode("ascii"), None)
        return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    city = KEYS["city-a"]
    seed = bytes.fromhex(city["mldsa65_seed"])
    assert len(seed) == 32
    ml = serialization.load_pem_private_key(city["mldsa65_pkcs8_pem"].encode("ascii"), None)
    assert isinstance(ml, mldsa.MLDSA65PrivateKey) and ml.private_bytes_raw() == seed
    assert der(city["mldsa65_pkcs8_pem"]) == PKCS8_SEED_PREFIXES["mldsa65"] + seed
    signing = serialization.load_pem_private_key(city["signing_pkcs8_pem"].encode("ascii"), None)
    assert isinstance(signing, ec.EllipticCurvePrivateKey)
    assert signing.private_numbers().private_value == int(city["signing_ec_p256_private_scalar"], 16)
    for node in ("dc-b", "cs-c"):
        k = KEYS[node]
        d_z, xs = bytes.fromhex(k["mlkem768_seed"]), bytes.fromhex(k["x25519_private"])
        assert (len(d_z), len(xs)) == (64, 32)
        assert der(k["mlkem768_pkcs8_pem"]) == PKCS8_SEED_PREFIXES["mlkem768"] + d_z
        assert der(k["x25519_pkcs8_pem"]) == PKCS8_SEED_PREFIXES["x25519"] + xs
        enc = serialization.load_pem_private_key(k["encryption_pkcs8_pem"].encode("ascii"), None)
        assert isinstance(enc, ec.EllipticCurvePrivateKey)
        assert enc.private_numbers().private_value == int(k["encryption_ec_p256_private_scalar"], 16)
        # the X-Wing public key is the ML-KEM-768 encapsulation key, then the X25519 public key
        pk = bytes.fromhex(k["xwing_public_key_hex"])
        assert pk == mlkem_key(node).public_key().public_bytes_raw() + x25519_key(node).public_key().public_bytes_raw()
        assert len(pk) == 1216


def _store_trust(tmp_path: Path, crl_pem: str) -> StoreTrust:
    (tmp_path / "anchors").mkdir(parents=True)
    (tmp_path / "crls").mkdir()
    (tmp_path / "anchors" / "ca.pem").write_text(KEYS["ca"]["certificate_pem"])
    (tmp_path / "crls" / "ca.pem").write_text(crl_pem)
    return StoreTrust(TrustStore.load(tmp_path, dt.datetime.now(dt.UTC)))


@pytest.mark.parametrize("case", VECTORS["revocation"], ids=[c["name"] for c in VECTORS["revocation"]])
def test_revocation_vectors(case: dict[str, Any], tmp_path: Path) -> None:
    """Each revocation vector is judged as docs/envelope.md section 9 (check 6) says, by both trust
    hooks: the CLI's (CaTrust) and the daemon's (the CRL-checked TrustStore)."""
    vector = next(v for v in VECTORS["vectors"] if v["name"] == case["envelope"])
    raw = bytes.fromhex(vector["envelope_hex"])
    now = dt.datetime.fromisoformat(vector["open_at"]).timestamp()
    crl = x509.load_pem_x509_crl(case["crl_pem"].encode("ascii"))
    hooks: list[CertificateTrust] = [CaTrust([cert(KEYS["ca"]["certificate_pem"])], crls=[crl]),
                                     _store_trust(tmp_path, case["crl_pem"])]
    for hook in hooks:
        receiver = _receiver("dc-b", hook)
        if case["reason"] is None:
            assert _opener().open(raw, receiver, now).contents.body == bytes.fromhex(vector["contents"]["body_hex"])
        else:
            with pytest.raises(EnvelopeError) as info:
                _opener().open(raw, receiver, now)
            assert info.value.reason == case["reason"], type(hook).__name__
            assert "revoked" in info.value.detail


def test_the_code_names_the_specified_kems() -> None:
    """jgw's suite table says what section 1 says: KEM ids 0x0010 and 0x647A, the X-Wing label."""
    assert (suites.DEFAULT.kem_id, suites.PQ_HYBRID.kem_id) == (0x0010, 0x647A)
    assert suites.XWING_LABEL == XWING_LABEL == bytes.fromhex("5c2e2f2f5e5c")
    assert suites.PQ_HYBRID.key_entry_bytes == 1120 + 48 and suites.DEFAULT.key_entry_bytes == 65 + 48
