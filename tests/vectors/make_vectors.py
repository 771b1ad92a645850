"""Regenerate tests/vectors/envelope-v1.json: envelopes sealed with fixed TEST-ONLY keys.

    .venv/bin/python tests/vectors/make_vectors.py            # writes envelope-v1.json next to this file

HPKE and ECDSA are randomised, so every run gives different envelope bytes for the same keys, and
each run's file is as valid as the last: the committed file is the reference the tests and
independent implementations check against. Regenerate it when vectors are added; a change of the
format needs a new format version (and a new file) instead.

The keys are derived from fixed labels (SHA-256/SHA-512 of "jgw test vector: ..."), are published
here, and are therefore worthless as secrets: never use them outside tests. They are written in
their raw forms (docs/envelope.md section 1: P-256 scalar, ML-DSA-65 seed, ML-KEM-768 seed d || z,
X25519 private key) and, marked TEST-ONLY, as the PKCS#8 files jgw writes.

Security: test-only material; no real keys, no personal data (the payload is a synthetic record).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from gateway.envelope import Contents, Sealer, SealItem, codec, merkle, suites
from gateway.envelope.codec import Limits, SignatureBlock
from gateway.envelope.sealer import ZERO_NONCE, key_entry_info, payload_key
from gateway.envelope.suites import P256_N
from gateway.keyring import (
    NODE_URI_PREFIX,
    CaTrust,
    DecryptionKey,
    Keyring,
    PeerKeys,
    SigningIdentity,
    hybrid_key_id,
    key_id,
)
from tests.lab.testca import _key_usage

OUT = Path(__file__).with_name("envelope-v1.json")
NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2125, 1, 1, tzinfo=dt.UTC)
CREATED_AT = dt.datetime(2026, 4, 1, 0, 0, 0, tzinfo=dt.UTC)
#: When the revocation vectors' CRLs were issued (after every revocation date they list).
CRL_ISSUED = CREATED_AT + dt.timedelta(days=2)
DAY = dt.timedelta(days=1)
WARNING = (
    "TEST-ONLY KEYS. Published with the source, so worthless as secrets. Never use them for "
    "anything but checking an implementation against these vectors."
)
KEY_FORMATS = {
    "*_ec_p256_private_scalar": "32 bytes, the P-256 private scalar, big-endian",
    "mldsa65_seed": "32 bytes, the ML-DSA-65 seed xi of FIPS 204 ML-DSA.KeyGen_internal",
    "mlkem768_seed": "64 bytes, the ML-KEM-768 seed d || z of FIPS 203 ML-KEM.KeyGen_internal",
    "x25519_private": "32 bytes, the X25519 private key of RFC 7748",
    "*_pkcs8_pem": "the same key as jgw writes it: PKCS#8; ML-KEM-768 (RFC 9935) and ML-DSA-65 (RFC 9881) "
                   "in the seed-only form, X25519 as RFC 8410, P-256 as RFC 5915",
    "xwing_public_key_hex": "the X-Wing encapsulation key: ML-KEM-768 encapsulation key (1184 bytes) || "
                            "X25519 public key (32 bytes)",
}


def seed(label: str, size: int = 32) -> bytes:
    digest = hashlib.sha512 if size > 32 else hashlib.sha256
    return digest(f"jgw test vector: {label}".encode()).digest()[:size]


def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(seed(label), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def scalar_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_numbers().private_value.to_bytes(32, "big").hex()


def pkcs8(key: Any) -> str:
    """A private key as jgw writes its key files, marked TEST-ONLY."""
    body = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")
    return body


def cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    public: Any,
    cn: str,
    serial: int,
    *,
    ca: bool = False,
) -> x509.Certificate:
    """A certificate as jgw binds it: CN = node id, the one subjectAltName URI urn:jgw:node:<id>."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(ca_name if not ca else name)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
    else:
        builder = builder.add_extension(_key_usage(digital_signature=True), critical=True).add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(NODE_URI_PREFIX + cn)]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def pem(c: x509.Certificate) -> str:
    return c.public_bytes(serialization.Encoding.PEM).decode("ascii")


def crl(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name,
        entries: list[tuple[int, dt.datetime, x509.ReasonFlags | None]]) -> str:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_name).last_update(CRL_ISSUED)
               .next_update(NOT_AFTER).add_extension(x509.CRLNumber(1), critical=False))
    for serial, when, reason in entries:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
        if reason is not None:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode("ascii")


def nested(levels: int) -> Any:
    """A header value nested ``levels`` deep below the headers table: arrays and tables by turns."""
    value: Any = "leaf"
    for i in range(levels):
        value = [value] if i % 2 else {"t": value}
    return value


def main() -> int:
    ca_key = ec_key("ca")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jgw TEST-ONLY vector CA")])
    ca_cert = cert(ca_key, ca_name, ca_key.public_key(), "jgw TEST-ONLY vector CA", 1, ca=True)
    sign_key = ec_key("city-a signing")
    mldsa_key = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed("city-a ml-dsa-65"))
    sign_cert = cert(ca_key, ca_name, sign_key.public_key(), "city-a", 2)
    mldsa_cert = cert(ca_key, ca_name, mldsa_key.public_key(), "city-a", 3)
    keys: dict[str, Any] = {
        "formats": KEY_FORMATS,
        "ca": {"ec_p256_private_scalar": scalar_hex(ca_key), "certificate_pem": pem(ca_cert)},
        "city-a": {
            "signing_ec_p256_private_scalar": scalar_hex(sign_key),
            "signing_pkcs8_pem": pkcs8(sign_key),
            "signing_certificate_pem": pem(sign_cert),
            "signing_key_id": key_id(sign_key.public_key()),
            "mldsa65_seed": seed("city-a ml-dsa-65").hex(),
            "mldsa65_pkcs8_pem": pkcs8(mldsa_key),
            "mldsa65_certificate_pem": pem(mldsa_cert),
            "mldsa65_key_id": key_id(mldsa_key.public_key()),
        },
    }
    recipients: dict[str, DecryptionKey] = {}
    hybrid: dict[str, DecryptionKey] = {}
    parts: dict[str, Parts] = {}
    for node in ("dc-b", "cs-c"):
        enc = ec_key(f"{node} encryption p-256")
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed(f"{node} ml-kem-768", 64))
        xk = x25519.X25519PrivateKey.from_private_bytes(seed(f"{node} x25519"))
        recipients[node] = DecryptionKey.p256(enc)
        hybrid[node] = DecryptionKey.hybrid(kem, xk)
        parts[node] = (enc, kem, xk)
        keys[node] = {
            "encryption_ec_p256_private_scalar": scalar_hex(enc),
            "encryption_pkcs8_pem": pkcs8(enc),
            "encryption_key_id": key_id(enc.public_key()),
            "mlkem768_seed": seed(f"{node} ml-kem-768", 64).hex(),
            "mlkem768_pkcs8_pem": pkcs8(kem),
            "x25519_private": seed(f"{node} x25519").hex(),
            "x25519_pkcs8_pem": pkcs8(xk),
            "xwing_public_key_hex": (kem.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()).hex(),
            "hybrid_key_id": hybrid_key_id(kem.public_key(), xk.public_key()),
        }

    trust = CaTrust([ca_cert])
    peers = [PeerKeys.build(n, [], [recipients[n].public, hybrid[n].public]) for n in recipients]
    sender = Keyring.build(
        "city-a", SigningIdentity.create(sign_key, sign_cert, mldsa_key, mldsa_cert), trust, (), peers
    )
    body = ('<?xml version="1.0" encoding="Shift_JIS"?><idou seq="1">テスト異動</idou>').encode("shift_jis")
    headers: dict[str, Any] = {
        "x-biz": "異動届",
        "x-count": 3,
        "x-flag": True,
        "x-raw": b"\xff\x00",
        "x-list": [1, "a", None],
    }
    now = CREATED_AT.timestamp()
    vectors: list[dict[str, Any]] = []
    by_name: dict[str, bytes] = {}
    # name: (suite, recipients, batch size, headers, sealer limits)
    batches: dict[str, tuple[str, list[str], int, dict[str, Any], Limits]] = {
        "default-single": ("default", ["dc-b"], 1, headers, Limits()),
        "default-batch-of-3-two-recipients": ("default", ["dc-b", "cs-c"], 3, headers, Limits()),
        "default-batch-of-7-two-recipients": ("default", ["dc-b", "cs-c"], 7, headers, Limits()),
        "default-headers-nested-8-levels": ("default", ["dc-b"], 1, {"x-deep": nested(8)}, Limits()),
        "pq-hybrid-single": ("pq-hybrid", ["dc-b"], 1, headers, Limits()),
        "pq-hybrid-batch-of-5-two-recipients": ("pq-hybrid", ["dc-b", "cs-c"], 5, headers, Limits()),
        # sealed past the receiver's limits on purpose (invalid vectors only)
        "nested-9": ("default", ["dc-b"], 1, {"x-deep": nested(9)}, Limits(max_inner_depth=9)),
        "items-1025": ("default", ["dc-b"], 1, {f"x-{i}": i for i in range(1025)}, Limits(max_inner_headers=1025)),
    }
    for name, (suite, to, n, hdrs, limits) in batches.items():
        items = [
            SealItem(
                f"vec-{name}-{i}",
                Contents(
                    body + str(i).encode(),
                    hdrs,
                    content_type="application/xml; charset=Shift_JIS",
                    correlation_id=f"TEST-{i:04d}",
                    timestamp=int(now),
                ),
                order_key=hashlib.sha256(b"test order key").digest() if i == 0 else None,
            )
            for i in range(n)
        ]
        envs = Sealer(suite=suite, route="juki-to-dc", recipients=to, limits=limits).seal(items, sender, now)
        for i, raw in enumerate(envs):
            assert isinstance(raw, bytes)
            by_name[f"{name}[{i}]"] = raw
            if not name.startswith(("nested-9", "items-1025")):
                vectors.append(describe(f"{name}[{i}]", raw, items[i], recipients, hybrid, parts))
    invalid = negatives(by_name, sign_key)
    revocation = revocations(ca_key, ca_name, sign_cert, mldsa_cert)
    data = {
        "format": "jgw-envelope test vectors, version 1",
        "warning": WARNING,
        "spec": "docs/envelope.md",
        "trusted_ca": "ca",
        "sender": "city-a",
        "accepted_routes": ["juki-to-dc"],
        "keys": keys,
        "vectors": vectors,
        "invalid": invalid,
        "revocation": revocation,
    }
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"wrote {OUT} ({len(vectors)} vectors, {len(invalid)} invalid, {len(revocation)} revocation)")
    return 0


def plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes_hex": value.hex()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# -- HPKE intermediates (RFC 9180 base mode; DHKEM(P-256) and X-Wing), from primitives ------------------

XWING_LABEL = suites.XWING_LABEL


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt or bytes(32), b"HPKE-v1" + suite_id + label + ikm, "sha256")


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = struct.pack(">H", length) + b"HPKE-v1" + suite_id + label + info
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + labeled + bytes([i]), "sha256")
        out, i = out + block, i + 1
    return out[:length]


Parts = tuple[ec.EllipticCurvePrivateKey, mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]


def kem_intermediates(suite: suites.Suite, entry: bytes, info: bytes, parts: Parts) -> dict[str, str]:
    """What a verifier computes on the way from a key-block entry to the epoch key, written out from
    RFC 9180 (base mode), DHKEM(P-256) and the X-Wing combiner; checked against the AEAD tag."""
    out: dict[str, bytes] = {}
    p256, ml, xk = parts
    if suite is suites.DEFAULT:
        kem_id, enc = suites.KEM_ID_P256, entry[:65]
        dh = p256.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), enc))
        pk_rm = p256.public_key().public_bytes(serialization.Encoding.X962,
                                               serialization.PublicFormat.UncompressedPoint)
        kem_sid = b"KEM" + struct.pack(">H", kem_id)
        shared = _labeled_expand(kem_sid, _labeled_extract(kem_sid, b"", b"eae_prk", dh), b"shared_secret",
                                 enc + pk_rm, 32)
    else:
        kem_id, enc = suites.KEM_ID_XWING, entry[:1120]
        ct_m, ct_x = enc[:1088], enc[1088:]
        out["xwing_ss_mlkem"] = ml.decapsulate(ct_m)
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
    AESGCM(out["hpke_key"]).decrypt(out["hpke_base_nonce"], entry[len(enc):], b"")  # InvalidTag if wrong
    return {f"{k}_hex": v.hex() for k, v in out.items()}


def describe(
    name: str,
    raw: bytes,
    item: SealItem,
    recipients: dict[str, DecryptionKey],
    hybrid: dict[str, DecryptionKey],
    parts: dict[str, Parts],
) -> dict[str, Any]:
    env = codec.parse(raw)
    h = env.header
    keys = hybrid if env.suite.name == "pq-hybrid" else recipients
    per_recipient = {}
    epoch_key = b""
    for i, r in enumerate(h.recipients):
        info = key_entry_info(env.suite, h.epoch_id, h.sender, r.node_id, r.key_id)
        epoch_key = env.suite.hpke.decrypt(env.key_block[i], keys[r.node_id].private_key, info=info)
        per_recipient[r.node_id] = {
            "key_id": r.key_id.hex(),
            "hpke_info_hex": info.hex(),
            **kem_intermediates(env.suite, env.key_block[i], info, parts[r.node_id]),
            "epoch_key_hex": epoch_key.hex(),
        }
    salt = env.payload[: codec.SALT_BYTES]
    pkey = payload_key(epoch_key, salt)
    inner_record = AESGCM(pkey).decrypt(ZERO_NONCE, env.payload[codec.SALT_BYTES :], env.aad)
    c = item.contents
    block = env.signature_block
    return {
        "name": name,
        "suite": env.suite.name,
        "envelope_hex": raw.hex(),
        "open_at": CREATED_AT.isoformat(),
        "header": {
            "message_id": h.message_id,
            "route": h.route,
            "sender": h.sender,
            "created_at_ms": h.created_at_ms,
            "recipients": [[r.node_id, r.key_id.hex()] for r in h.recipients],
            "signing_key_ids": [k.hex() for k in h.signing_key_ids],
            "epoch_id": h.epoch_id.hex(),
            "payload_digest": h.payload_digest.hex(),
            "content_type": h.content_type,
            "correlation_id": h.correlation_id,
            "order_key": h.order_key.hex() if h.order_key else None,
        },
        "contents": {
            "body_hex": c.body.hex(),
            "headers": plain(dict(c.headers)),
            "content_type": c.content_type,
            "content_encoding": c.content_encoding,
            "correlation_id": c.correlation_id,
            "type": c.type,
            "app_id": c.app_id,
            "timestamp": c.timestamp,
        },
        "intermediate": {
            "header_hex": raw[10 : 10 + int.from_bytes(raw[6:10], "big")].hex(),
            "aad_length": len(env.aad),
            "signed_part_length": len(env.signed_part),
            "recipients": per_recipient,
            "payload_salt_hex": salt.hex(),
            "payload_key_hex": pkey.hex(),
            "inner_record_hex": inner_record.hex(),
            "leaf_hash_hex": merkle.leaf_hash(env.signed_part).hex(),
            "tree_size": block.tree_size,
            "leaf_index": block.leaf_index,
            "root_hex": block.root.hex(),
            "path_hex": [p.hex() for p in block.path],
            "signing_input_hex": codec.root_signing_input(env.suite, block.tree_size, block.root).hex(),
        },
    }


def negatives(raws: dict[str, bytes], sign_key: ec.EllipticCurvePrivateKey) -> list[dict[str, Any]]:
    single = raws["default-single[0]"]
    pq_single = raws["pq-hybrid-single[0]"]
    batched, sibling = raws["default-batch-of-3-two-recipients[0]"], raws["default-batch-of-3-two-recipients[1]"]
    seven = raws["default-batch-of-7-two-recipients[3]"]
    flipped = bytearray(single)
    flipped[len(single) - 200] ^= 0x01  # inside the payload ciphertext of the default single envelope

    def sig_start(raw: bytes) -> int:
        pos = 6
        for _ in range(3):
            pos += 4 + int.from_bytes(raw[pos : pos + 4], "big")
        return pos

    def block(raw: bytes, **changes: Any) -> bytes:
        env = codec.parse(raw)
        return codec.finish(env.signed_part, dataclasses.replace(env.signature_block, **changes))

    def bad_sig(raw: bytes, index: int) -> tuple[bytes, ...]:
        sigs = list(codec.parse(raw).signature_block.signatures)
        damaged = bytearray(sigs[index])
        damaged[40] ^= 0x01
        sigs[index] = bytes(damaged)
        return tuple(sigs)

    def signed_size_zero(raw: bytes) -> bytes:
        env = codec.parse(raw)
        root = merkle.leaf_hash(env.signed_part)
        sig = suites.ecdsa_sign(sign_key, codec.root_signing_input(env.suite, 0, root))
        return codec.finish(env.signed_part, SignatureBlock(0, 0, root, (), (sig,)))

    spliced = batched[: sig_start(batched)] + sibling[sig_start(sibling) :]
    path7 = codec.parse(seven).signature_block.path
    cases: list[tuple[str, bytes, str, int]] = [
        ("truncated", single[:100], "envelope-malformed", 1),
        ("version 2", single[:4] + b"\x02" + single[5:], "envelope-version", 1),
        ("unknown suite id 9", single[:5] + b"\x09" + single[6:], "suite-refused", 1),
        ("flipped ciphertext bit", bytes(flipped), "signature-invalid", 5),
        ("proof path of the next leaf", spliced, "batch-proof-invalid", 5),
        ("tree of one, leaf index 1", block(single, leaf_index=1), "signature-invalid", 5),
        ("tree of one, a path of one hash", block(single, path=(bytes(32),)), "signature-invalid", 5),
        ("tree of 7, leaf index 7", block(seven, leaf_index=7), "batch-proof-invalid", 5),
        ("tree of 7, leaf index 9 and a damaged signature", block(seven, leaf_index=9, signatures=bad_sig(seven, 0)),
         "signature-invalid", 4),
        ("tree of 7 stated as a tree of 8", block(seven, tree_size=8), "signature-invalid", 4),
        ("tree of 7, one path hash too many", block(seven, path=(*path7, path7[0])), "batch-proof-invalid", 5),
        ("tree of 7, one path hash too few", block(seven, path=path7[:-1]), "batch-proof-invalid", 5),
        ("tree size 0, not signed for it", block(single, tree_size=0), "signature-invalid", 4),
        ("tree size 0, signed for it", signed_size_zero(single), "batch-proof-invalid", 5),
        ("pq-hybrid, damaged ML-DSA-65 signature", block(pq_single, signatures=bad_sig(pq_single, 1)),
         "signature-invalid", 4),
        ("headers nested 9 levels", raws["nested-9[0]"], "envelope-malformed", 13),
        ("1025 header items", raws["items-1025[0]"], "envelope-malformed", 13),
    ]
    return [{"name": name, "envelope_hex": raw.hex(), "reason": reason, "check": check}
            for name, raw, reason, check in cases]


def revocations(ca_key: ec.EllipticCurvePrivateKey, ca_name: x509.Name, sign_cert: x509.Certificate,
                mldsa_cert: x509.Certificate) -> list[dict[str, Any]]:
    """CRLs of the vector CA revoking city-a's certificates, and what they mean for envelopes created
    at CREATED_AT (docs/envelope.md section 9, check 6)."""
    R = x509.ReasonFlags
    s, m = sign_cert.serial_number, mldsa_cert.serial_number
    cases: list[tuple[str, str, list[tuple[int, dt.datetime, x509.ReasonFlags | None]], str | None]] = [
        ("no revocation", "default-single[0]", [], None),
        ("superseded after created-at", "default-single[0]", [(s, CREATED_AT + DAY, R.superseded)], None),
        ("cessationOfOperation after created-at", "default-batch-of-7-two-recipients[6]",
         [(s, CREATED_AT + DAY, R.cessation_of_operation)], None),
        ("superseded before created-at", "default-single[0]", [(s, CREATED_AT - DAY, R.superseded)],
         "certificate-untrusted"),
        ("superseded at created-at", "default-single[0]", [(s, CREATED_AT, R.superseded)], "certificate-untrusted"),
        ("keyCompromise after created-at", "default-single[0]", [(s, CREATED_AT + DAY, R.key_compromise)],
         "certificate-untrusted"),
        ("no reason after created-at", "default-single[0]", [(s, CREATED_AT + DAY, None)], "certificate-untrusted"),
        ("unspecified after created-at", "default-single[0]", [(s, CREATED_AT + DAY, R.unspecified)],
         "certificate-untrusted"),
        ("ML-DSA-65 certificate superseded before created-at", "pq-hybrid-single[0]",
         [(m, CREATED_AT - DAY, R.superseded)], "certificate-untrusted"),
        ("ML-DSA-65 certificate superseded after created-at", "pq-hybrid-batch-of-5-two-recipients[4]",
         [(m, CREATED_AT + DAY, R.superseded)], None),
    ]
    return [{"name": name, "envelope": env, "crl_pem": crl(ca_key, ca_name, entries), "reason": reason}
            for name, env, entries, reason in cases]


if __name__ == "__main__":
    sys.exit(main())
