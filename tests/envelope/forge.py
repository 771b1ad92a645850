"""A key-holding forger: rebuilds a valid-looking envelope with chosen changes, re-signed.

It stands in for a malicious or broken *authorised* peer (it holds real keys), so tests can reach
the checks behind the signature: digest, window, route, recipient, key block. It shares no code
path with the sealer beyond the codec's encoders and the documented derivations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.envelope import codec, merkle, suites
from gateway.envelope.codec import Envelope, SignatureBlock
from gateway.envelope.sealer import ZERO_NONCE, key_entry_info, payload_key
from gateway.keyring import Keyring


def recover(data: bytes, reader: Keyring) -> tuple[Envelope, bytes, bytes]:
    """(envelope, epoch key, inner record) as recipient ``reader`` sees them."""
    env = codec.parse(data)
    i = env.header.recipient_ids().index(reader.node_id)
    kid = env.header.recipients[i].key_id
    info = key_entry_info(env.suite, env.header.epoch_id, env.header.sender, reader.node_id, kid)
    private = reader.decryption_keys[kid.hex()].private_key
    epoch_key = env.suite.hpke.decrypt(env.key_block[i], private, info=info)
    salt, ct = env.payload[:codec.SALT_BYTES], env.payload[codec.SALT_BYTES:]
    inner_bytes = AESGCM(payload_key(epoch_key, salt)).decrypt(ZERO_NONCE, ct, env.aad)
    return env, epoch_key, inner_bytes


def reforge(data: bytes, reader: Keyring, signer: Keyring, *, inner_bytes: bytes | None = None,
            digest: bytes | None = None, key_block: tuple[bytes, ...] | None = None,
            **header_changes: Any) -> bytes:
    """Re-seal ``data`` as ``signer`` with header fields changed; keys re-encapsulated for the (new)
    recipients with ``signer``'s view of their keys; signed as a batch of one."""
    env, epoch_key, old_inner = recover(data, reader)
    inner_bytes = old_inner if inner_bytes is None else inner_bytes
    ident = signer.signing
    key_ids = (bytes.fromhex(ident.key_id),)
    if env.suite is suites.PQ_HYBRID:
        assert ident.mldsa_key_id is not None
        key_ids += (bytes.fromhex(ident.mldsa_key_id),)
    changes = {"sender": signer.node_id, "signing_key_ids": key_ids,
               "payload_digest": digest if digest is not None else hashlib.sha256(inner_bytes).digest()}
    changes.update(header_changes)
    header = dataclasses.replace(env.header, **changes)
    if key_block is None:
        entries = []
        for r in header.recipients:
            public = signer.encryption_key_for(r.node_id, env.suite.name).public_key
            info = key_entry_info(env.suite, header.epoch_id, header.sender, r.node_id, r.key_id)
            entries.append(env.suite.hpke.encrypt(epoch_key, public, info=info))
        key_block = tuple(entries)
    prefix = codec.encode_prefix(env.suite, header.encode(), key_block)
    salt = os.urandom(codec.SALT_BYTES)
    signed = codec.encode_signed_part(prefix, salt + AESGCM(payload_key(epoch_key, salt)).encrypt(
        ZERO_NONCE, inner_bytes, prefix))
    return sign_alone(signed, env.suite, signer)


def sign_alone(signed: bytes, suite: suites.Suite, signer: Keyring) -> bytes:
    root = merkle.leaf_hash(signed)
    to_sign = codec.root_signing_input(suite, 1, root)
    sigs = [suites.ecdsa_sign(signer.signing.private_key, to_sign)]
    if suite is suites.PQ_HYBRID:
        assert signer.signing.mldsa_private_key is not None
        sigs.append(suites.mldsa_sign(signer.signing.mldsa_private_key, to_sign))
    return codec.finish(signed, SignatureBlock(1, 0, root, (), tuple(sigs)))


def sections(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges [start, end) of each section of a well-formed envelope."""
    out = {"preamble": (0, 6)}
    pos = 6
    for name in ("header", "key_block", "payload", "signature_block"):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out[name] = (pos + 4, pos + 4 + n)
        pos += 4 + n
    return out


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)
