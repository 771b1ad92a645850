"""Sealing: sign and encrypt a batch of messages, amortising the public-key work.

Two amortisations, each invisible to the receiver's ability to open any one message alone:

* **Epoch data keys.** A random 256-bit epoch key is encapsulated (HPKE) once per recipient when the
  epoch starts; every message of the epoch carries that same key block. An epoch ends after
  ``epoch_messages`` messages, after ``epoch_seconds``, when the clock steps back, or when the
  recipients or their key ids change (a keyring reload). Each message gets its own AES-256-GCM key,
  HKDF-SHA256(epoch key, salt = 32 random bytes carried in clear, info "jgw-envelope/1 payload"),
  used once with an all-zero nonce: no nonce can repeat under a key, however long an epoch lasts.
* **Batch signatures.** The signed parts of a batch are the leaves of one RFC 9162 hash tree; one
  signature per algorithm covers its root, and each envelope carries its proof path. A batch of one
  is a tree of one (empty path), so a lone message is signed at once: no latency is traded.

Security: holds private keys (through the Keyring it is handed) and the current epoch key in
memory; talks to nothing. Trusts the Keyring for recipients' encryption keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.envelope import inner, merkle, suites
from gateway.envelope.codec import (
    DEFAULT_LIMITS,
    EPOCH_ID_BYTES,
    SALT_BYTES,
    HeaderTemplate,
    Limits,
    Recipient,
    SignatureBlock,
    encode_prefix,
    encode_signed_part,
    finish,
    max_signature_block_bytes,
    root_signing_input,
)
from gateway.envelope.errors import EnvelopeError
from gateway.keyring import Keyring, KeyringError

PAYLOAD_KEY_INFO = b"jgw-envelope/1 payload"
KEY_ENTRY_INFO = b"jgw-envelope/1 key\x00"
ZERO_NONCE = bytes(12)
ORDER_KEY_INFO = b"jgw-envelope/1 order-key\x00"
MAX_EPOCH_MESSAGES = 1 << 24


def key_entry_info(suite: suites.Suite, epoch_id: bytes, sender: str, recipient: str,
                   recipient_key_id: bytes) -> bytes:
    """HPKE ``info`` of one key-block entry: binds the epoch key to suite, epoch, sender and recipient
    key, so an entry lifted into another sender's envelope does not decrypt."""
    s, r = sender.encode("ascii"), recipient.encode("ascii")
    return (KEY_ENTRY_INFO + bytes([suite.wire_id]) + epoch_id + bytes([len(s)]) + s + bytes([len(r)]) + r
            + recipient_key_id)


def payload_key(epoch_key: bytes, salt: bytes) -> bytes:
    """The per-message AES-256-GCM key (used once, with the all-zero nonce): HKDF-SHA256 (RFC 5869)
    with IKM = epoch key, salt = the message's salt, info = PAYLOAD_KEY_INFO, L = 32. Written as its
    two HMACs (extract, then the single expand block), which is the same function at half the cost of
    the HKDF object; ``test_vectors`` checks it against cryptography's HKDF."""
    prk = hmac.digest(salt, epoch_key, "sha256")
    return hmac.digest(prk, PAYLOAD_KEY_INFO + b"\x01", "sha256")


def order_key_hmac(secret: bytes, route: str, value: bytes) -> bytes:
    """The order key the envelope shows instead of the ordering header's value (a person's key):
    HMAC-SHA256(secret, context || route || 0x00 || value). Stable per person and route, so per-key
    FIFO still works; useless without the secret, so a 住民票コード cannot be guessed from it."""
    return hmac.new(secret, ORDER_KEY_INFO + route.encode("ascii") + b"\x00" + value, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class SealItem:
    """One message to seal. ``order_key`` is the 32-byte HMAC (``order_key_hmac``), never the value."""

    message_id: str
    contents: inner.Contents
    order_key: bytes | None = None


@dataclass(slots=True)
class _Epoch:
    epoch_id: bytes
    key: bytes
    started: float
    used: int
    sender: str
    recipients: tuple[Recipient, ...]
    key_block: tuple[bytes, ...]


class Sealer:
    """Seals batches for one route. Thread-safe; one instance per route (it owns the epoch)."""

    def __init__(self, *, suite: str, route: str, recipients: Sequence[str], epoch_messages: int = 100_000,
                 epoch_seconds: float = 3600.0, header_correlation_id: bool = True,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        if suite not in suites.BY_NAME:
            raise ValueError(f"unknown suite {suite!r}")
        if not 1 <= len(set(recipients)) == len(recipients) <= limits.max_recipients:
            raise ValueError("recipients must be 1 to max_recipients distinct node ids")
        if not 1 <= epoch_messages <= MAX_EPOCH_MESSAGES:
            raise ValueError(f"epoch_messages must be 1 to {MAX_EPOCH_MESSAGES}")
        self.suite = suites.BY_NAME[suite]
        self.route = route
        self.recipients = tuple(recipients)
        self.epoch_messages = epoch_messages
        self.epoch_seconds = epoch_seconds
        self.header_correlation_id = header_correlation_id
        self.limits = limits
        self._epoch: _Epoch | None = None
        self._lock = threading.Lock()
        #: Epochs started so far (for tests and the benchmark: one HPKE encapsulation per recipient each).
        self.epochs_started = 0

    def seal(self, items: Sequence[SealItem], keyring: Keyring, now: float) -> list[bytes | EnvelopeError]:
        """Seal ``items`` as one batch; per item, envelope bytes or the reason it cannot be sealed.

        Raises ``KeyringError`` when the keyring cannot seal at all (no ML-DSA key for the hybrid
        suite, a recipient's key missing): no message is at fault then."""
        signing = keyring.signing_identity()
        signing_key_ids: tuple[bytes, ...] = (bytes.fromhex(signing.key_id),)
        if self.suite is suites.PQ_HYBRID:
            if signing.mldsa_private_key is None or signing.mldsa_key_id is None:
                raise KeyringError(f"suite {self.suite.name} needs an ML-DSA-65 signing key; "
                                   "the keyring has none")
            signing_key_ids += (bytes.fromhex(signing.mldsa_key_id),)
        created_at_ms = int(now * 1000)
        room = self.limits.max_envelope_bytes - max_signature_block_bytes(self.suite, self.limits)
        wanted = tuple(Recipient(n, bytes.fromhex(keyring.encryption_key_for(n, self.suite.name).key_id))
                       for n in self.recipients)
        templates: dict[bytes, HeaderTemplate] = {}

        results: list[bytes | EnvelopeError] = []
        prepared: list[tuple[int, bytes]] = []  # (slot in results, signed part)
        for item in items:
            c = item.contents
            try:
                inner_bytes = inner.encode(c, os.urandom(inner.SALT_BYTES), self.limits)
            except EnvelopeError as exc:
                results.append(exc)
                continue
            epoch = self._take_epoch(keyring, wanted, now)
            template = templates.get(epoch.epoch_id)
            if template is None:
                template = templates[epoch.epoch_id] = HeaderTemplate(
                    self.route, keyring.node_id, epoch.recipients, signing_key_ids, epoch.epoch_id)
            try:
                correlation_id = c.correlation_id if self.header_correlation_id else None
                digest = hashlib.sha256(inner_bytes).digest()
                header = template.encode(item.message_id, created_at_ms, digest, c.content_type,
                                         correlation_id, item.order_key)
            except ValueError as exc:
                results.append(EnvelopeError("unsealable", f"header: {exc}"))
                continue
            prefix = encode_prefix(self.suite, header, epoch.key_block)
            salt = os.urandom(SALT_BYTES)
            ciphertext = AESGCM(payload_key(epoch.key, salt)).encrypt(ZERO_NONCE, inner_bytes, prefix)
            signed = encode_signed_part(prefix, salt + ciphertext)
            if len(signed) > room:
                results.append(EnvelopeError("unsealable", f"envelope of {len(signed)} bytes would exceed "
                                                           f"{self.limits.max_envelope_bytes}"))
                continue
            prepared.append((len(results), signed))
            results.append(b"")  # placeholder, filled once the batch is signed
        if not prepared:
            return results

        root, paths = merkle.build([merkle.leaf_hash(signed) for _, signed in prepared])
        to_sign = root_signing_input(self.suite, len(prepared), root)
        signatures = [suites.ecdsa_sign(signing.private_key, to_sign)]
        if signing.mldsa_private_key is not None and self.suite is suites.PQ_HYBRID:
            signatures.append(suites.mldsa_sign(signing.mldsa_private_key, to_sign))
        for index, ((slot, signed), path) in enumerate(zip(prepared, paths, strict=True)):
            block = SignatureBlock(len(prepared), index, root, tuple(path), tuple(signatures))
            results[slot] = finish(signed, block)
        return results

    def _take_epoch(self, keyring: Keyring, wanted: tuple[Recipient, ...], now: float) -> _Epoch:
        """The epoch for the next message, starting a new one when due. Counts the message."""
        with self._lock:
            e = self._epoch
            if (e is None or e.used >= self.epoch_messages or now - e.started >= self.epoch_seconds
                    or now < e.started or e.recipients != wanted or e.sender != keyring.node_id):
                e = self._epoch = self._new_epoch(keyring, wanted, now)
            e.used += 1
            return e

    def _new_epoch(self, keyring: Keyring, recipients: tuple[Recipient, ...], now: float) -> _Epoch:
        epoch_id = os.urandom(EPOCH_ID_BYTES)
        key = os.urandom(suites.EPOCH_KEY_BYTES)
        hpke_suite = self.suite.hpke
        entries = []
        for r in recipients:
            public = keyring.encryption_key_for(r.node_id, self.suite.name).public_key
            info = key_entry_info(self.suite, epoch_id, keyring.node_id, r.node_id, r.key_id)
            entries.append(hpke_suite.encrypt(key, public, info=info))
        self.epochs_started += 1
        return _Epoch(epoch_id, key, now, 0, keyring.node_id, recipients, tuple(entries))
