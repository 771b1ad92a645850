"""The key material a node holds right now: who it is, what it can open, whom it trusts.

A ``Keyring`` is a frozen snapshot. Routes never hold one for long: stages call a zero-argument
provider (``node.services["keyring"]``) for each batch, so a certificate reload swaps the whole
snapshot atomically and the next batch sees the new keys. Whoever builds a Keyring (the PKI loader
reading ``certs/``, a test, the ``jgw envelope`` CLI) has already decided that the public keys in
it belong to the named peers; the only trust decision made later, per message, is
``Keyring.check_certificate`` on the sender's signing certificates (unknown CA, expired, revoked,
wrong purpose).

Node binding: a certificate belongs to the node its subjectAltName names as the URI
``urn:jgw:node:<node-id>``, and names exactly one (``certificate_node_id``); the CN and dNSNames do
not count. ``PeerKeys`` refuses a certificate that names another node than the peer it is filed
under, ``Keyring`` a signing identity that does not name the keyring's node, and the opener checks
the signed sender against its certificates again on every verify.

Key ids: every public key is named by ``key_id()``, the first 16 bytes of SHA-256 over its DER
SubjectPublicKeyInfo, as 32 lower-case hex digits. The hybrid KEM key (ML-KEM-768 + X25519) is
named by SHA-256 over the two SPKIs concatenated, ML-KEM first (``hybrid_key_id()``). The id is a
function of the public key alone, so sender and receiver compute it independently.

Suites (what a route's ``suite`` setting names; the envelope package defines their wire format):
``default`` = ECDSA P-256/SHA-256 + HPKE DHKEM(P-256); ``pq-hybrid`` = ECDSA P-256 and ML-DSA-65
co-signatures + HPKE ML-KEM-768+X25519.

Security: pure data and local checks; no I/O, no clock (callers pass ``at``). Holds private keys:
never print, log or pickle a Keyring; its repr shows key ids only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519

from gateway.errors import DataError, JgwError

SUITE_DEFAULT = "default"
SUITE_PQ_HYBRID = "pq-hybrid"
SUITE_NAMES: tuple[str, ...] = (SUITE_DEFAULT, SUITE_PQ_HYBRID)

#: Purposes a certificate is checked for (``check_certificate(cert, purpose, at)``); the same strings
#: as ``gateway.pki.purpose.Purpose``, so a PKI trust store can take them as they are.
PURPOSE_SIGNING = "signing"
PURPOSE_ENCRYPTION = "encryption"
PURPOSES: tuple[str, ...] = (PURPOSE_SIGNING, PURPOSE_ENCRYPTION)

KEY_ID_BYTES = 16

#: The subjectAltName URI that binds a certificate to a node: this prefix, then the node id.
NODE_URI_PREFIX = "urn:jgw:node:"

EncryptionPublicKey: TypeAlias = ec.EllipticCurvePublicKey | hpke.MLKEM768X25519PublicKey
EncryptionPrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | hpke.MLKEM768X25519PrivateKey
SpkiKey: TypeAlias = (ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey | mlkem.MLKEM768PublicKey
                      | x25519.X25519PublicKey)


class KeyringError(JgwError):
    """The keyring lacks or contradicts what a route needs (a missing peer key, a key that does not
    match its certificate). Configuration or certificate material is at fault, not a message."""

    exit_code = 78  # EX_CONFIG


class CertificateUntrusted(DataError):
    """A certificate failed the trust check. ``code`` is short: ``unknown-ca``, ``expired``,
    ``not-yet-valid``, ``revoked``, ``wrong-purpose``, ``invalid-ca``, ``chain-too-long``,
    ``bad-time``, ``name-mismatch`` (the codes of ``gateway.pki.errors.REFUSAL_CODES`` where they overlap)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"certificate not trusted ({code}): {detail}")


def certificate_node_ids(cert: x509.Certificate) -> list[str]:
    """Every node id a certificate names: the subjectAltName URIs that start with ``urn:jgw:node:``
    (byte for byte), in order, with the prefix removed. Other names (CN, dNSName, other URIs) are not
    node ids."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u[len(NODE_URI_PREFIX):] for u in san.get_values_for_type(x509.UniformResourceIdentifier)
            if u.startswith(NODE_URI_PREFIX)]


def _describe_node_ids(ids: list[str]) -> str:
    if not ids:
        return "no node"
    return f"node {ids[0]}" if len(ids) == 1 else f"{len(ids)} nodes ({', '.join(ids)})"


def certificate_node_id(cert: x509.Certificate) -> str:
    """The one node a certificate belongs to; ``CertificateUntrusted('name-mismatch')`` when it names
    none or more than one."""
    ids = certificate_node_ids(cert)
    if len(ids) != 1:
        raise CertificateUntrusted("name-mismatch", f"{cert.subject.rfc4514_string()} names "
                                                    f"{_describe_node_ids(ids)}; a certificate names its node "
                                                    f"as its one subjectAltName URI {NODE_URI_PREFIX}<node-id>")
    return ids[0]


def check_node_binding(cert: x509.Certificate, node_id: str) -> None:
    """Raise ``CertificateUntrusted('name-mismatch')`` unless ``cert`` names exactly ``node_id``."""
    ids = certificate_node_ids(cert)
    if ids != [node_id]:
        raise CertificateUntrusted("name-mismatch", f"{cert.subject.rfc4514_string()} names "
                                                    f"{_describe_node_ids(ids)}, not {node_id} (a certificate "
                                                    f"names its node as its one subjectAltName URI "
                                                    f"{NODE_URI_PREFIX}{node_id})")


#: CRL entry reasons that say the key itself was not compromised: a certificate revoked for one of them
#: still counts for messages created before its revocation date. Any other reason (keyCompromise,
#: cACompromise, aACompromise, certificateHold, unspecified, removeFromCRL) or none revokes it for every
#: created-at: the signer writes created-at, so only a CA's word that the key is safe lets an earlier
#: date count (docs/envelope.md section 9, check 6).
DATED_REVOCATION_REASONS: frozenset[x509.ReasonFlags] = frozenset({
    x509.ReasonFlags.superseded, x509.ReasonFlags.cessation_of_operation, x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.privilege_withdrawn})
#: The start of time, for a revocation that counts for every created-at.
ALWAYS = dt.datetime.min.replace(tzinfo=dt.UTC)


def revoked_from(entry: x509.RevokedCertificate) -> dt.datetime:
    """From which created-at a CRL entry revokes: its revocationDate when its reason is one of
    ``DATED_REVOCATION_REASONS``, else ``ALWAYS``."""
    try:
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    except x509.ExtensionNotFound:
        return ALWAYS
    return entry.revocation_date_utc if reason in DATED_REVOCATION_REASONS else ALWAYS


def key_id(public_key: SpkiKey) -> str:
    """The id of a public key: hex of the first 16 bytes of SHA-256(DER SubjectPublicKeyInfo)."""
    spki = public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()[:KEY_ID_BYTES].hex()


def hybrid_key_id(mlkem_public: mlkem.MLKEM768PublicKey, x25519_public: x25519.X25519PublicKey) -> str:
    """The id of an ML-KEM-768+X25519 key pair: SHA-256 over both SPKIs, ML-KEM first."""
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    data = mlkem_public.public_bytes(der, spki) + x25519_public.public_bytes(der, spki)
    return hashlib.sha256(data).digest()[:KEY_ID_BYTES].hex()


def certificate_key_id(cert: x509.Certificate) -> str:
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey | mlkem.MLKEM768PublicKey
                      | x25519.X25519PublicKey):
        raise KeyringError(f"certificate {cert.subject.rfc4514_string()}: unsupported key type "
                           f"{type(public).__name__}")
    return key_id(public)


def _frozen_map(value: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(value))


def _same_public(a: SpkiKey, b: SpkiKey) -> bool:
    return key_id(a) == key_id(b)


# ----------------------------------------------------------------------------------------------
# Our own keys


@dataclass(frozen=True, slots=True)
class SigningIdentity:
    """This node's current signing key(s). ML-DSA-65 is present only for the ``pq-hybrid`` suite."""

    key_id: str
    private_key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    mldsa_key_id: str | None = None
    mldsa_private_key: mldsa.MLDSA65PrivateKey | None = None
    mldsa_certificate: x509.Certificate | None = None

    @classmethod
    def create(cls, private_key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate,
               mldsa_private_key: mldsa.MLDSA65PrivateKey | None = None,
               mldsa_certificate: x509.Certificate | None = None) -> SigningIdentity:
        """Build and check: each private key must match its certificate."""
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or private_key.curve.name != "secp256r1":
            raise KeyringError("the signing key must be an EC P-256 private key")
        cert_pub = certificate.public_key()
        if not isinstance(cert_pub, ec.EllipticCurvePublicKey) or not _same_public(cert_pub,
                                                                                    private_key.public_key()):
            raise KeyringError(f"signing certificate {certificate.subject.rfc4514_string()} does not match "
                               "the signing private key")
        mldsa_id = None
        if (mldsa_private_key is None) != (mldsa_certificate is None):
            raise KeyringError("an ML-DSA-65 signing key needs its certificate, and the other way round")
        if mldsa_private_key is not None and mldsa_certificate is not None:
            mpub = mldsa_certificate.public_key()
            if not isinstance(mpub, mldsa.MLDSA65PublicKey) or not _same_public(mpub,
                                                                                 mldsa_private_key.public_key()):
                subject = mldsa_certificate.subject.rfc4514_string()
                raise KeyringError(f"ML-DSA certificate {subject} does not match the ML-DSA-65 private key")
            mldsa_id = key_id(mpub)
        return cls(key_id=key_id(cert_pub), private_key=private_key, certificate=certificate,
                   mldsa_key_id=mldsa_id, mldsa_private_key=mldsa_private_key,
                   mldsa_certificate=mldsa_certificate)

    def __repr__(self) -> str:
        return f"SigningIdentity(key_id={self.key_id!r}, mldsa_key_id={self.mldsa_key_id!r})"


@dataclass(frozen=True, slots=True)
class EncryptionKey:
    """A public key that envelopes are encrypted to (HPKE), with its suite and id."""

    suite: str
    key_id: str
    public_key: EncryptionPublicKey

    @classmethod
    def p256(cls, public_key: ec.EllipticCurvePublicKey) -> EncryptionKey:
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp256r1":
            raise KeyringError("a default-suite encryption key must be an EC P-256 public key")
        return cls(SUITE_DEFAULT, key_id(public_key), public_key)

    @classmethod
    def hybrid(cls, mlkem_public: mlkem.MLKEM768PublicKey,
               x25519_public: x25519.X25519PublicKey) -> EncryptionKey:
        if not isinstance(mlkem_public, mlkem.MLKEM768PublicKey) or not isinstance(x25519_public,
                                                                                    x25519.X25519PublicKey):
            raise KeyringError("a pq-hybrid encryption key is an ML-KEM-768 public key plus an X25519 "
                               "public key")
        return cls(SUITE_PQ_HYBRID, hybrid_key_id(mlkem_public, x25519_public),
                   hpke.MLKEM768X25519PublicKey(mlkem_public, x25519_public))


@dataclass(frozen=True, slots=True)
class DecryptionKey:
    """A private key this node opens envelopes with (current or previous generation)."""

    suite: str
    key_id: str
    private_key: EncryptionPrivateKey
    public: EncryptionKey

    @classmethod
    def p256(cls, private_key: ec.EllipticCurvePrivateKey) -> DecryptionKey:
        public = EncryptionKey.p256(private_key.public_key())
        return cls(SUITE_DEFAULT, public.key_id, private_key, public)

    @classmethod
    def hybrid(cls, mlkem_private: mlkem.MLKEM768PrivateKey,
               x25519_private: x25519.X25519PrivateKey) -> DecryptionKey:
        public = EncryptionKey.hybrid(mlkem_private.public_key(), x25519_private.public_key())
        private = hpke.MLKEM768X25519PrivateKey(mlkem_private, x25519_private)
        return cls(SUITE_PQ_HYBRID, public.key_id, private, public)

    def __repr__(self) -> str:
        return f"DecryptionKey(suite={self.suite!r}, key_id={self.key_id!r})"


# ----------------------------------------------------------------------------------------------
# Peers


@dataclass(frozen=True, slots=True)
class PeerKeys:
    """What we know of one peer node.

    ``signing_certificates`` holds its EC P-256 and ML-DSA-65 signing certificates by key id, current
    and previous generation (receivers accept both during a rotation's overlap window).
    ``encryption_keys`` holds its HPKE public keys by key id; ``current_encryption`` says, per suite,
    which of them a sender encrypts to now.
    """

    node_id: str
    signing_certificates: Mapping[str, x509.Certificate] = field(default_factory=dict)
    encryption_keys: Mapping[str, EncryptionKey] = field(default_factory=dict)
    current_encryption: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kid, cert in self.signing_certificates.items():
            if certificate_key_id(cert) != kid:
                raise KeyringError(f"peer {self.node_id}: signing certificate filed under key id {kid} "
                                   f"has key id {certificate_key_id(cert)}")
            try:
                check_node_binding(cert, self.node_id)
            except CertificateUntrusted as exc:
                raise KeyringError(f"peer {self.node_id}: signing certificate (key id {kid}) is not "
                                   f"{self.node_id}'s: {exc.detail}") from exc
        for kid, key in self.encryption_keys.items():
            if key.key_id != kid:
                raise KeyringError(f"peer {self.node_id}: encryption key filed under {kid} "
                                   f"has key id {key.key_id}")
        for suite, kid in self.current_encryption.items():
            if kid not in self.encryption_keys or self.encryption_keys[kid].suite != suite:
                raise KeyringError(f"peer {self.node_id}: current {suite} encryption key {kid} is not "
                                   "among its encryption keys")
        object.__setattr__(self, "signing_certificates", _frozen_map(self.signing_certificates))
        object.__setattr__(self, "encryption_keys", _frozen_map(self.encryption_keys))
        object.__setattr__(self, "current_encryption", _frozen_map(self.current_encryption))

    @classmethod
    def build(cls, node_id: str, signing_certificates: Iterable[x509.Certificate] = (),
              encryption_keys: Iterable[EncryptionKey] = (),
              current_encryption: Mapping[str, str] | None = None) -> PeerKeys:
        """File certificates and keys under their ids. Without ``current_encryption``, the *last*
        key given per suite is current (list previous generations first)."""
        certs = {certificate_key_id(c): c for c in signing_certificates}
        keys: dict[str, EncryptionKey] = {}
        current: dict[str, str] = {}
        for k in encryption_keys:
            keys[k.key_id] = k
            current[k.suite] = k.key_id
        chosen = dict(current_encryption) if current_encryption is not None else current
        return cls(node_id, certs, keys, chosen)

    def encryption_key_for(self, suite: str) -> EncryptionKey:
        kid = self.current_encryption.get(suite)
        if kid is None:
            raise KeyringError(f"no {suite} encryption key for peer {self.node_id} in the keyring")
        return self.encryption_keys[kid]


# ----------------------------------------------------------------------------------------------
# Trust


class CertificateTrust(Protocol):
    """The trust hook: raise ``CertificateUntrusted`` when ``cert`` is not good for ``purpose`` at
    ``at`` (an aware datetime). Return None otherwise. Must be safe to call from several threads."""

    def check_certificate(self, cert: x509.Certificate, purpose: str, at: dt.datetime) -> None: ...


#: purpose -> (KeyUsage bits required, bits forbidden): one key per purpose, as gateway.pki.purpose.
_PURPOSE_USAGE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    PURPOSE_SIGNING: (("digital_signature",), ("key_agreement", "key_encipherment", "data_encipherment",
                                               "key_cert_sign", "crl_sign")),
    PURPOSE_ENCRYPTION: (("key_agreement",),
                         ("digital_signature", "content_commitment", "key_cert_sign", "crl_sign")),
}


def check_purpose(cert: x509.Certificate, purpose: str) -> None:
    """End-entity profile: not a CA; KeyUsage present, with the bit the purpose needs and none that
    would let the same key serve another purpose."""
    if purpose not in _PURPOSE_USAGE:
        raise ValueError(f"unknown certificate purpose {purpose!r}")
    name = cert.subject.rfc4514_string()
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise CertificateUntrusted("wrong-purpose", f"{name} is a CA certificate, not an end entity")
    except x509.ExtensionNotFound:
        pass
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise CertificateUntrusted("wrong-purpose", f"{name} has no KeyUsage extension") from exc
    required, forbidden = _PURPOSE_USAGE[purpose]
    asserted = {bit for bit in (*required, *forbidden) if getattr(ku, bit)}
    if not set(required) <= asserted:
        raise CertificateUntrusted("wrong-purpose", f"{name} KeyUsage does not allow {purpose}")
    extra = sorted(asserted & set(forbidden))
    if extra:
        raise CertificateUntrusted("wrong-purpose", f"{name} KeyUsage asserts {', '.join(extra)}, not "
                                                    f"allowed for {purpose} (one key per purpose)")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


class CaTrust:
    """A small private-PKI trust policy: chains up to one of ``anchors`` through ``intermediates``,
    every certificate valid at ``at``, none revoked as of ``at`` by a loaded CRL of its issuer
    (``revoked_from``: from the revocation date for a reason that says the key was not compromised,
    else for every ``at``), leaf profile per purpose (``check_purpose``). CRL freshness is the loader's
    concern: build a new CaTrust (and a new Keyring) when CRLs are refreshed. A verified chain's
    validity interval and revocation instant are cached, so the per-message cost after the first is a
    dictionary lookup."""

    __slots__ = ("_anchors", "_by_subject", "_cache", "_crls", "_lock", "max_depth")

    def __init__(self, anchors: Iterable[x509.Certificate], intermediates: Iterable[x509.Certificate] = (),
                 crls: Iterable[x509.CertificateRevocationList] = (), max_depth: int = 4) -> None:
        self._anchors = {a.fingerprint(hashes.SHA256()): a for a in anchors}
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for c in [*self._anchors.values(), *intermediates]:
            self._by_subject.setdefault(c.subject, []).append(c)
        self._crls = list(crls)
        self.max_depth = max_depth
        #: (id(cert), purpose) -> (cert, chain validity window, revoked from); the cert is kept so its id
        #: is not reused
        self._cache: dict[tuple[int, str], tuple[x509.Certificate, dt.datetime, dt.datetime,
                                                 dt.datetime | None]] = {}
        self._lock = threading.Lock()

    def check_certificate(self, cert: x509.Certificate, purpose: str, at: dt.datetime) -> None:
        if at.tzinfo is None:
            raise CertificateUntrusted("bad-time", "check time must be timezone-aware")
        cached = self._cache.get((id(cert), purpose))
        if cached is None or cached[0] is not cert:
            not_before, not_after, revoked = self._verify_chain(cert, purpose)
            with self._lock:
                self._cache[(id(cert), purpose)] = (cert, not_before, not_after, revoked)
        else:
            _, not_before, not_after, revoked = cached
        if revoked is not None and at >= revoked:
            when = "" if revoked == ALWAYS else f" from {revoked.isoformat()}"
            raise CertificateUntrusted("revoked", f"{cert.subject.rfc4514_string()} serial {cert.serial_number:x} "
                                                  f"(or a CA above it) is revoked{when} by its issuer's CRL")
        if at < not_before:
            raise CertificateUntrusted("not-yet-valid", f"{cert.subject.rfc4514_string()} (or its chain) is "
                                                        f"not valid before {not_before.isoformat()}")
        if at > not_after:
            raise CertificateUntrusted("expired", f"{cert.subject.rfc4514_string()} (or its chain) expired "
                                                  f"{not_after.isoformat()}")

    def _verify_chain(self, leaf: x509.Certificate, purpose: str
                      ) -> tuple[dt.datetime, dt.datetime, dt.datetime | None]:
        check_purpose(leaf, purpose)
        not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
        revoked: dt.datetime | None = None
        current = leaf
        for _depth in range(self.max_depth + 1):
            if current.fingerprint(hashes.SHA256()) in self._anchors:
                return not_before, not_after, revoked
            issuer = self._find_issuer(current)
            if issuer is None:
                raise CertificateUntrusted("unknown-ca", f"{leaf.subject.rfc4514_string()}: no trusted "
                                                         f"issuer for {current.issuer.rfc4514_string()}")
            if not _is_ca(issuer):
                raise CertificateUntrusted("invalid-ca",
                                           f"issuer {issuer.subject.rfc4514_string()} is not a CA")
            when = self._revocation(current, issuer)
            if when is not None:
                revoked = when if revoked is None else min(revoked, when)
            not_before = max(not_before, issuer.not_valid_before_utc)
            not_after = min(not_after, issuer.not_valid_after_utc)
            current = issuer
        raise CertificateUntrusted("chain-too-long", f"{leaf.subject.rfc4514_string()}: more than "
                                                     f"{self.max_depth} CAs")

    def _find_issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        for cand in self._by_subject.get(cert.issuer, ()):
            try:
                cert.verify_directly_issued_by(cand)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return cand
        return None

    def _revocation(self, cert: x509.Certificate, issuer: x509.Certificate) -> dt.datetime | None:
        """From which instant a loaded CRL of ``issuer`` revokes ``cert`` (``revoked_from``), or None."""
        for crl in self._crls:
            if crl.issuer != issuer.subject:
                continue
            public = issuer.public_key()
            if not isinstance(public, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public):
                continue
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                return revoked_from(entry)
        return None


# ----------------------------------------------------------------------------------------------
# The snapshot


@dataclass(frozen=True, slots=True)
class Keyring:
    """Everything one node needs to seal and open envelopes, as of now.

    ``decryption_keys`` holds current and previous generations by key id; ``encryption_key_ids`` names,
    per suite, our own current one (so a node can list itself as a recipient, e.g. for audit copies).
    ``trust`` decides whether a peer's signing certificate is acceptable at a given time.
    """

    node_id: str
    #: None for a node (or an auditor's tool) that only verifies and opens.
    signing: SigningIdentity | None
    trust: CertificateTrust
    decryption_keys: Mapping[str, DecryptionKey] = field(default_factory=dict)
    encryption_key_ids: Mapping[str, str] = field(default_factory=dict)
    peers: Mapping[str, PeerKeys] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kid, key in self.decryption_keys.items():
            if key.key_id != kid:
                raise KeyringError(f"decryption key filed under {kid} has key id {key.key_id}")
        for suite, kid in self.encryption_key_ids.items():
            if kid not in self.decryption_keys or self.decryption_keys[kid].suite != suite:
                raise KeyringError(f"own current {suite} encryption key {kid} has no decryption key")
        for nid, peer in self.peers.items():
            if peer.node_id != nid:
                raise KeyringError(f"peer filed under {nid} is {peer.node_id}")
        if self.signing is not None:
            own = [self.signing.certificate]
            own += [self.signing.mldsa_certificate] if self.signing.mldsa_certificate is not None else []
            for cert in own:
                try:
                    check_node_binding(cert, self.node_id)
                except CertificateUntrusted as exc:
                    raise KeyringError(f"node {self.node_id} cannot sign with a certificate that is not its "
                                       f"own: {exc.detail}") from exc
        object.__setattr__(self, "decryption_keys", _frozen_map(self.decryption_keys))
        object.__setattr__(self, "encryption_key_ids", _frozen_map(self.encryption_key_ids))
        object.__setattr__(self, "peers", _frozen_map(self.peers))

    @classmethod
    def build(cls, node_id: str, signing: SigningIdentity | None, trust: CertificateTrust,
              decryption_keys: Iterable[DecryptionKey] = (), peers: Iterable[PeerKeys] = (),
              encryption_key_ids: Mapping[str, str] | None = None) -> Keyring:
        """File keys under their ids. Without ``encryption_key_ids`` the *last* decryption key given per
        suite is our current one (list previous generations first)."""
        keys: dict[str, DecryptionKey] = {}
        current: dict[str, str] = {}
        for k in decryption_keys:
            keys[k.key_id] = k
            current[k.suite] = k.key_id
        return cls(node_id=node_id, signing=signing, trust=trust, decryption_keys=keys,
                   encryption_key_ids=dict(encryption_key_ids) if encryption_key_ids is not None else current,
                   peers={p.node_id: p for p in peers})

    def check_certificate(self, cert: x509.Certificate, purpose: str, at: dt.datetime) -> None:
        """Raise ``CertificateUntrusted`` unless ``cert`` is trusted for ``purpose`` at ``at``."""
        self.trust.check_certificate(cert, purpose, at)

    def signing_identity(self) -> SigningIdentity:
        """Our signing identity, or KeyringError for a verify-only keyring."""
        if self.signing is None:
            raise KeyringError(f"the keyring of {self.node_id} has no signing key")
        return self.signing

    def peer(self, node_id: str) -> PeerKeys | None:
        return self.peers.get(node_id)

    def signing_key_owner(self, key_id_hex: str) -> str | None:
        """The node (this one or a peer) whose signing certificates include ``key_id_hex``, if any."""
        own = self.signing
        if own is not None and key_id_hex in (own.key_id, own.mldsa_key_id):
            return self.node_id
        return next((nid for nid, p in self.peers.items() if key_id_hex in p.signing_certificates), None)

    def own_encryption_key(self, suite: str) -> EncryptionKey:
        kid = self.encryption_key_ids.get(suite)
        if kid is None:
            raise KeyringError(f"no own {suite} encryption key in the keyring of {self.node_id}")
        return self.decryption_keys[kid].public

    def encryption_key_for(self, node_id: str, suite: str) -> EncryptionKey:
        """The key to encrypt to ``node_id`` now (ourselves included)."""
        if node_id == self.node_id:
            return self.own_encryption_key(suite)
        peer = self.peers.get(node_id)
        if peer is None:
            raise KeyringError(f"node {node_id} is not a known peer of {self.node_id}")
        return peer.encryption_key_for(suite)

    def __repr__(self) -> str:
        return (f"Keyring(node_id={self.node_id!r}, signing={self.signing!r}, "
                f"decryption_keys={sorted(self.decryption_keys)!r}, peers={sorted(self.peers)!r})")
