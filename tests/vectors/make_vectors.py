"""Regenerate tests/vectors/envelope-v1.json: envelopes sealed with fixed TEST-ONLY keys.

    .venv/bin/python tests/vectors/make_vectors.py            # writes envelope-v1.json next to this file

Run it only when the format changes (and bump the version with it): HPKE and ECDSA are randomised,
so every run gives different envelope bytes, and the committed file is the reference the tests and
independent implementations check against.

The keys are derived from fixed labels (SHA-256/SHA-512 of "jgw test vector: ..."), are published
here, and are therefore worthless as secrets: never use them outside tests. They are written as raw
scalars and seeds, not PEM private keys.

Security: test-only material; no real keys, no personal data (the payload is a synthetic record).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

from gateway.envelope import Contents, Sealer, SealItem, codec, merkle
from gateway.envelope.sealer import ZERO_NONCE, key_entry_info, payload_key
from gateway.envelope.suites import P256_N
from gateway.envelope.testing import _key_usage
from gateway.keyring import (
    CaTrust,
    DecryptionKey,
    Keyring,
    PeerKeys,
    SigningIdentity,
    hybrid_key_id,
    key_id,
)

OUT = Path(__file__).with_name("envelope-v1.json")
NOT_BEFORE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
NOT_AFTER = dt.datetime(2125, 1, 1, tzinfo=dt.UTC)
CREATED_AT = dt.datetime(2026, 4, 1, 0, 0, 0, tzinfo=dt.UTC)
WARNING = (
    "TEST-ONLY KEYS. Published with the source, so worthless as secrets. Never use them for "
    "anything but checking an implementation against these vectors."
)


def seed(label: str, size: int = 32) -> bytes:
    digest = hashlib.sha512 if size > 32 else hashlib.sha256
    return digest(f"jgw test vector: {label}".encode()).digest()[:size]


def ec_key(label: str) -> ec.EllipticCurvePrivateKey:
    scalar = int.from_bytes(seed(label), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def scalar_hex(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_numbers().private_value.to_bytes(32, "big").hex()


def cert(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    public: Any,
    cn: str,
    serial: int,
    *,
    ca: bool = False,
) -> x509.Certificate:
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
            x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def pem(c: x509.Certificate) -> str:
    return c.public_bytes(serialization.Encoding.PEM).decode("ascii")


def main() -> int:
    ca_key = ec_key("ca")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jgw TEST-ONLY vector CA")])
    ca_cert = cert(ca_key, ca_name, ca_key.public_key(), "jgw TEST-ONLY vector CA", 1, ca=True)
    sign_key = ec_key("city-a signing")
    mldsa_key = mldsa.MLDSA65PrivateKey.from_seed_bytes(seed("city-a ml-dsa-65"))
    sign_cert = cert(ca_key, ca_name, sign_key.public_key(), "city-a", 2)
    mldsa_cert = cert(ca_key, ca_name, mldsa_key.public_key(), "city-a", 3)
    keys: dict[str, Any] = {
        "ca": {"ec_p256_private_scalar": scalar_hex(ca_key), "certificate_pem": pem(ca_cert)},
        "city-a": {
            "signing_ec_p256_private_scalar": scalar_hex(sign_key),
            "signing_certificate_pem": pem(sign_cert),
            "signing_key_id": key_id(sign_key.public_key()),
            "mldsa65_seed": seed("city-a ml-dsa-65").hex(),
            "mldsa65_certificate_pem": pem(mldsa_cert),
            "mldsa65_key_id": key_id(mldsa_key.public_key()),
        },
    }
    recipients: dict[str, DecryptionKey] = {}
    hybrid: dict[str, DecryptionKey] = {}
    for node in ("dc-b", "cs-c"):
        enc = ec_key(f"{node} encryption p-256")
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed(f"{node} ml-kem-768", 64))
        xk = x25519.X25519PrivateKey.from_private_bytes(seed(f"{node} x25519"))
        recipients[node] = DecryptionKey.p256(enc)
        hybrid[node] = DecryptionKey.hybrid(kem, xk)
        keys[node] = {
            "encryption_ec_p256_private_scalar": scalar_hex(enc),
            "encryption_key_id": key_id(enc.public_key()),
            "mlkem768_seed": seed(f"{node} ml-kem-768", 64).hex(),
            "x25519_private": seed(f"{node} x25519").hex(),
            "hybrid_key_id": hybrid_key_id(kem.public_key(), xk.public_key()),
        }

    trust = CaTrust([ca_cert])
    peers = [PeerKeys.build(n, [], [recipients[n].public, hybrid[n].public]) for n in recipients]
    sender = Keyring.build(
        "city-a", SigningIdentity.create(sign_key, sign_cert, mldsa_key, mldsa_cert), trust, (), peers
    )
    body = ('<?xml version="1.0" encoding="Shift_JIS"?><idou seq="1">テスト異動</idou>').encode("shift_jis")
    headers = {
        "x-biz": "異動届",
        "x-count": 3,
        "x-flag": True,
        "x-raw": b"\xff\x00",
        "x-list": [1, "a", None],
    }
    now = CREATED_AT.timestamp()
    vectors = []
    batches = {
        "default-single": ("default", ["dc-b"], 1),
        "default-batch-of-3-two-recipients": ("default", ["dc-b", "cs-c"], 3),
        "pq-hybrid-single": ("pq-hybrid", ["dc-b"], 1),
    }
    for name, (suite, to, n) in batches.items():
        items = [
            SealItem(
                f"vec-{name}-{i}",
                Contents(
                    body + str(i).encode(),
                    headers,
                    content_type="application/xml; charset=Shift_JIS",
                    correlation_id=f"TEST-{i:04d}",
                    timestamp=int(now),
                ),
                order_key=hashlib.sha256(b"test order key").digest() if i == 0 else None,
            )
            for i in range(n)
        ]
        envs = Sealer(suite=suite, route="juki-to-dc", recipients=to).seal(items, sender, now)
        for i, raw in enumerate(envs):
            assert isinstance(raw, bytes)
            vectors.append(describe(f"{name}[{i}]", raw, items[i], recipients, hybrid))
    invalid = negatives([bytes.fromhex(v["envelope_hex"]) for v in vectors])
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
    }
    OUT.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"wrote {OUT} ({len(vectors)} vectors, {len(invalid)} invalid)")
    return 0


def plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"bytes_hex": value.hex()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def describe(
    name: str,
    raw: bytes,
    item: SealItem,
    recipients: dict[str, DecryptionKey],
    hybrid: dict[str, DecryptionKey],
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
            "signing_input_hex": codec.root_signing_input(env.suite, block.tree_size, block.root).hex(),
        },
    }


def negatives(raws: list[bytes]) -> list[dict[str, str]]:
    single, batched, sibling = raws[0], raws[1], raws[2]
    flipped = bytearray(single)
    flipped[len(single) - 200] ^= 0x01  # inside the payload ciphertext of the default single envelope

    def sig_start(raw: bytes) -> int:
        pos = 6
        for _ in range(3):
            pos += 4 + int.from_bytes(raw[pos : pos + 4], "big")
        return pos

    spliced = batched[: sig_start(batched)] + sibling[sig_start(sibling) :]
    return [
        {"name": "truncated", "envelope_hex": single[:100].hex(), "reason": "envelope-malformed"},
        {
            "name": "version 2",
            "envelope_hex": (single[:4] + b"\x02" + single[5:]).hex(),
            "reason": "envelope-version",
        },
        {
            "name": "unknown suite id 9",
            "envelope_hex": (single[:5] + b"\x09" + single[6:]).hex(),
            "reason": "suite-refused",
        },
        {
            "name": "flipped ciphertext bit",
            "envelope_hex": bytes(flipped).hex(),
            "reason": "signature-invalid",
        },
        {
            "name": "proof path of the next leaf",
            "envelope_hex": spliced.hex(),
            "reason": "batch-proof-invalid",
        },
    ]


if __name__ == "__main__":
    sys.exit(main())
