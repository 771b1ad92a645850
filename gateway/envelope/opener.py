"""Opening: every check an envelope must pass before its contents leave this module.

The order is fixed, and every check on the signed header comes before any decryption:

  1. parse (framing, header, limits)                      envelope-malformed, envelope-version
  2. suite allowed on this route (no downgrade)           suite-refused
  3. signing certificates known for the signed sender,    certificate-untrusted
     of the right key type, each naming that sender
  4. root signature(s) verify (cached per batch root)     signature-invalid
  5. RFC 9162 proof: leaf index < tree size, a path of    batch-proof-invalid; signature-invalid
     exactly the right length, leading to the root        when the tree size is 1
  6. certificates trusted at created-at (keyring hook)    certificate-untrusted
  7. sender and route authorised                          sender-unauthorised, route-mismatch
  8. AMQP message id equals the signed one                id-mismatch
  9. created-at inside the replay window ± clock skew     outside-window
 10. this node is a recipient and holds the listed key    not-recipient
 11. epoch key (HPKE, cached per epoch) and payload       decrypt-failed
 12. SHA-256 of the inner record equals the signed one    digest-mismatch
 13. inner record parses                                  envelope-malformed

Certificates are checked at the signed created-at, not at the time of opening: a message signed
just before its sender's certificate expired, then held in a queue, still opens; a forged
created-at cannot help a stolen expired key because step 9 bounds it by the local clock.

Security: reads hostile bytes and holds our private keys (through the Keyring it is handed). The
two caches only skip work whose inputs are byte-identical to work already done: a verified root
is keyed by suite, key ids, tree size, root and signature bytes; an epoch key by our key id, the
HPKE ``info`` and the exact entry bytes, and is used only while that key id is still in the keyring.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.envelope import codec, inner, merkle, suites
from gateway.envelope.codec import DEFAULT_LIMITS, Envelope, Limits
from gateway.envelope.errors import EnvelopeError
from gateway.envelope.sealer import ZERO_NONCE, key_entry_info, payload_key
from gateway.errors import JgwError
from gateway.keyring import PURPOSE_SIGNING, CertificateUntrusted, Keyring, check_node_binding

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True)
class OpenPolicy:
    """What a route accepts. ``None`` means "any" and is for auditors' tools only (``jgw envelope
    verify``); a route's ``open`` stage always sets senders, suites and routes."""

    senders: frozenset[str] | None
    suites: frozenset[str] | None
    routes: frozenset[str] | None
    replay_window: float | None  # seconds before now a created-at may be; None: not checked
    clock_skew: float = 300.0  # seconds of allowance either way


@dataclass(frozen=True, slots=True)
class Opened:
    envelope: Envelope
    contents: inner.Contents
    recipient_key_id: str


@dataclass(frozen=True, slots=True)
class Verified:
    """The result of steps 1–6: a parsed envelope whose signatures and certificates check out."""

    envelope: Envelope
    certificates: tuple[x509.Certificate, ...]


class Opener:
    """Opens envelopes for one route. Thread-safe; keep one per route so its caches pay off."""

    def __init__(self, policy: OpenPolicy, *, limits: Limits = DEFAULT_LIMITS, root_cache_size: int = 4096,
                 epoch_cache_size: int = 1024) -> None:
        self.policy = policy
        self.limits = limits
        self._roots: _Lru[bytes, bool] = _Lru(root_cache_size)
        self._epochs: _Lru[bytes, bytes] = _Lru(epoch_cache_size)
        #: (keyring id, signing key ids, created-at) -> the Keyring that trusted them (identity-checked)
        self._trusted: _Lru[tuple[int, bytes, int], Keyring] = _Lru(root_cache_size)
        #: (keyring id, sender, signing key ids) -> (that Keyring, its certificates for them)
        self._certs: _Lru[tuple[int, str, bytes], tuple[Keyring, tuple[x509.Certificate, ...]]] = _Lru(256)
        #: Work counters (tests and the benchmark read them): signatures verified, HPKE decryptions.
        self.root_verifications = 0
        self.hpke_decryptions = 0

    # -- the whole sequence -------------------------------------------------------------------

    def open(self, data: bytes, keyring: Keyring, now: float, *,
             expected_message_id: str | None = None) -> Opened:
        """Run steps 1–13; return the contents or raise EnvelopeError with the reason."""
        verified = self.verify(data, keyring)
        env = verified.envelope
        self.authorise(env)
        if expected_message_id is not None and expected_message_id != env.header.message_id:
            raise EnvelopeError("id-mismatch", f"AMQP message id differs from the signed id "
                                               f"{env.header.message_id!r}")
        self.check_window(env, now)
        return self.decrypt(env, keyring)

    # -- the steps, public so the CLI can run a subset ------------------------------------------

    def verify(self, data: bytes, keyring: Keyring) -> Verified:
        """Steps 1–6: parse, suite, signatures, proof, certificate trust. No private key needed."""
        env = codec.parse(data, self.limits)
        if self.policy.suites is not None and env.suite.name not in self.policy.suites:
            raise EnvelopeError("suite-refused", f"suite {env.suite.name} is not allowed on this route")
        certs = self._signing_certificates(env, keyring)
        self._verify_root(env, certs)
        self._verify_proof(env)
        self._check_trust(env, certs, keyring)
        return Verified(env, certs)

    def _check_trust(self, env: Envelope, certs: tuple[x509.Certificate, ...], keyring: Keyring) -> None:
        """Step 6, once per (keyring, signing keys, created-at): the messages of a batch share all three,
        and the hook's answer is a function of them (a reload brings a new Keyring)."""
        h = env.header
        cache_key = (id(keyring), b"".join(h.signing_key_ids), h.created_at_ms)
        if self._trusted.get(cache_key) is keyring:
            return
        at = h.created_at
        for cert in certs:
            try:
                keyring.check_certificate(cert, PURPOSE_SIGNING, at)
            except JgwError as exc:  # CertificateUntrusted, or a PKI trust store's own refusal: fail closed
                code = getattr(exc, "code", "untrusted")
                raise EnvelopeError("certificate-untrusted", f"sender {h.sender}: {code}: {exc}") from exc
        self._trusted.put(cache_key, keyring)

    def authorise(self, env: Envelope) -> None:
        """Step 7: the signed sender and route are ones this route accepts."""
        h = env.header
        if self.policy.senders is not None and h.sender not in self.policy.senders:
            raise EnvelopeError("sender-unauthorised", f"sender {h.sender} may not send on this route")
        if self.policy.routes is not None and h.route not in self.policy.routes:
            raise EnvelopeError("route-mismatch", f"signed route {h.route} is not accepted here")

    def check_window(self, env: Envelope, now: float) -> None:
        """Step 9: now - window - skew <= created-at <= now + skew."""
        if self.policy.replay_window is None:
            return
        created = env.header.created_at_ms / 1000.0
        skew = self.policy.clock_skew
        if created > now + skew:
            raise EnvelopeError("outside-window", f"created {created - now:.0f}s in the future "
                                                  f"(clock skew allowance {skew:.0f}s)")
        if created < now - self.policy.replay_window - skew:
            raise EnvelopeError("outside-window", f"created {now - created:.0f}s ago; the replay window is "
                                                  f"{self.policy.replay_window:.0f}s (+{skew:.0f}s skew)")

    def decrypt(self, env: Envelope, keyring: Keyring) -> Opened:
        """Steps 10–13: find our entry, recover the epoch key, decrypt, check the digest, decode."""
        h = env.header
        index = next((i for i, r in enumerate(h.recipients) if r.node_id == keyring.node_id), None)
        if index is None:
            raise EnvelopeError("not-recipient", f"node {keyring.node_id} is not among the "
                                                 f"{len(h.recipients)} recipients")
        kid = h.recipients[index].key_id.hex()
        dkey = keyring.decryption_keys.get(kid)
        if dkey is None or dkey.suite != env.suite.name:
            raise EnvelopeError("not-recipient", f"no {env.suite.name} decryption key with id {kid} "
                                                 "(retired after a rotation, or never ours)")
        entry = env.key_block[index]
        info = key_entry_info(env.suite, h.epoch_id, h.sender, keyring.node_id, h.recipients[index].key_id)
        cache_key = hashlib.sha256(kid.encode() + b"\x00" + info + entry).digest()
        epoch_key = self._epochs.get(cache_key)
        if epoch_key is None:
            try:
                epoch_key = env.suite.hpke.decrypt(entry, dkey.private_key, info=info)
            except (InvalidTag, ValueError) as exc:
                raise EnvelopeError("decrypt-failed", f"key block entry {index} does not decrypt with key "
                                                      f"{kid}") from exc
            self.hpke_decryptions += 1
            if len(epoch_key) != suites.EPOCH_KEY_BYTES:
                raise EnvelopeError("decrypt-failed",
                                    f"key block entry {index} holds {len(epoch_key)} bytes, not an epoch key")
            self._epochs.put(cache_key, epoch_key)
        salt, ciphertext = env.payload[:codec.SALT_BYTES], env.payload[codec.SALT_BYTES:]
        try:
            inner_bytes = AESGCM(payload_key(epoch_key, salt)).decrypt(ZERO_NONCE, ciphertext, env.aad)
        except InvalidTag as exc:
            raise EnvelopeError("decrypt-failed",
                                f"payload ({len(ciphertext)} bytes) does not decrypt") from exc
        if not hmac.compare_digest(hashlib.sha256(inner_bytes).digest(), h.payload_digest):
            raise EnvelopeError("digest-mismatch",
                                "decrypted contents do not match the signed payload digest")
        return Opened(env, inner.decode(inner_bytes, self.limits), kid)

    # -- internals ----------------------------------------------------------------------------

    def _signing_certificates(self, env: Envelope, keyring: Keyring) -> tuple[x509.Certificate, ...]:
        h = env.header
        cache_key = (id(keyring), h.sender, b"".join(h.signing_key_ids))
        hit = self._certs.get(cache_key)
        if hit is not None and hit[0] is keyring:
            return hit[1]
        certs = self._find_certificates(env, keyring)
        self._certs.put(cache_key, (keyring, certs))
        return certs

    def _find_certificates(self, env: Envelope, keyring: Keyring) -> tuple[x509.Certificate, ...]:
        h = env.header
        if h.sender == keyring.node_id and keyring.signing is not None:
            own = keyring.signing
            mine = {own.key_id: own.certificate}
            if own.mldsa_key_id is not None and own.mldsa_certificate is not None:
                mine[own.mldsa_key_id] = own.mldsa_certificate
            known: Mapping[str, x509.Certificate] = mine
        else:
            peer = keyring.peer(h.sender)
            if peer is None:
                raise EnvelopeError("certificate-untrusted", f"sender {h.sender} is not a known peer")
            known = peer.signing_certificates
        certs = []
        for i, (alg, raw_id) in enumerate(zip(env.suite.signatures, h.signing_key_ids, strict=True)):
            cert = known.get(raw_id.hex())
            if cert is None:
                owner = keyring.signing_key_owner(raw_id.hex())
                whose = f"; it is the signing key of {owner}" if owner is not None else ""
                raise EnvelopeError("certificate-untrusted", f"sender {h.sender}: no signing certificate "
                                                             f"with key id {raw_id.hex()}{whose}")
            public = cert.public_key()
            ok = (isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
                  if alg == suites.SIG_ECDSA_P256 else isinstance(public, mldsa.MLDSA65PublicKey))
            if not ok:
                raise EnvelopeError("certificate-untrusted",
                                    f"sender {h.sender}: key id {raw_id.hex()} is not a {alg} key "
                                    f"(signature {i})")
            try:  # the binding rule: the certificate names the signed sender (docs/envelope.md section 9)
                check_node_binding(cert, h.sender)
            except CertificateUntrusted as exc:
                raise EnvelopeError("certificate-untrusted", f"sender {h.sender}: {exc.code}: signing "
                                                             f"certificate {raw_id.hex()}: {exc.detail}") from exc
            certs.append(cert)
        return tuple(certs)

    def _verify_root(self, env: Envelope, certs: tuple[x509.Certificate, ...]) -> None:
        block = env.signature_block
        cache_key = hashlib.sha256(
            bytes([env.suite.wire_id]) + b"".join(env.header.signing_key_ids)
            + block.tree_size.to_bytes(4, "big") + block.root + b"".join(block.signatures)).digest()
        if self._roots.get(cache_key):
            return
        to_sign = codec.root_signing_input(env.suite, block.tree_size, block.root)
        for i, (alg, cert, sig) in enumerate(zip(env.suite.signatures, certs, block.signatures, strict=True)):
            public = cert.public_key()
            if alg == suites.SIG_ECDSA_P256:
                assert isinstance(public, ec.EllipticCurvePublicKey)
                ok = suites.ecdsa_verify(public, sig, to_sign)
            else:
                assert isinstance(public, mldsa.MLDSA65PublicKey)
                ok = suites.mldsa_verify(public, sig, to_sign)
            if not ok:
                raise EnvelopeError("signature-invalid", f"{alg} signature {i} does not verify "
                                                         f"(key id {env.header.signing_key_ids[i].hex()})")
        self.root_verifications += 1
        self._roots.put(cache_key, True)

    def _verify_proof(self, env: Envelope) -> None:
        """Step 5, the whole of RFC 9162 section 2.1.3.2 (``merkle.root_from_path``: an index at or past
        the tree size, a tree size of 0, a path too short or too long all fail). In a tree of one the
        root is the leaf hash and the path is empty, so a failure there means the signature does not
        cover this envelope: signature-invalid, as for any lone signed message."""
        block = env.signature_block
        leaf = merkle.leaf_hash(env.signed_part)
        computed = merkle.root_from_path(leaf, block.leaf_index, block.tree_size, block.path)
        if computed is not None and hmac.compare_digest(computed, block.root):
            return
        if block.tree_size == 1:
            raise EnvelopeError("signature-invalid", "the signature does not cover this envelope (a tree of "
                                                     f"one: leaf index {block.leaf_index}, {len(block.path)} "
                                                     "path hashes)")
        raise EnvelopeError("batch-proof-invalid",
                            f"leaf {block.leaf_index} of {block.tree_size}: contents or proof path do not "
                            "lead to the signed root")
