"""One generation of a node's own material, loaded and fully checked.

A generation is complete when every required slot (tls-client, signing, encryption) has its
certificate and its own key, each key is 0600 and belongs to its certificate, no key serves two
slots, and each certificate verifies for its purpose and node id against the trust store. The
post-quantum hybrid suite adds, all or nothing, an ML-DSA-65 signing certificate and key
(``signing-mldsa65``) and the hybrid KEM keys with their signed statement (``gateway.pki.hybrid``).
The same check runs on staging before a rotation, on live at daemon start and reload, and in
``jgw certs status``.

Security: reads private keys from the certs directory (mode checked first) and keeps them only in
the returned objects, whose reprs show no key material.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from gateway.pki import hybrid
from gateway.pki.errors import CertificateError
from gateway.pki.files import key_matches, read_certificates, read_private_key, spki
from gateway.pki.layout import cert_name, key_name
from gateway.pki.purpose import Purpose
from gateway.pki.trust import TrustStore, VerifiedCertificate


def _is_p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


@dataclass(frozen=True)
class Slot:
    """A place for one certificate and its key in a generation (and for peers, in peers/<id>/)."""

    name: str
    purpose: Purpose
    key_ok: Callable[[object], bool] = field(repr=False)
    key_desc: str
    required: bool


SLOTS: tuple[Slot, ...] = (
    Slot("tls-client", Purpose.TLS_CLIENT,
         lambda k: isinstance(k, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey),
         "an EC, RSA or Ed25519 key", True),
    Slot("signing", Purpose.SIGNING, _is_p256, "an EC P-256 key (suite default)", True),
    Slot("encryption", Purpose.ENCRYPTION, _is_p256, "an EC P-256 key (HPKE DHKEM(P-256))", True),
    Slot("signing-mldsa65", Purpose.SIGNING, lambda k: isinstance(k, mldsa.MLDSA65PublicKey),
         "an ML-DSA-65 key (suite pq-hybrid)", False),
)
SLOT_BY_NAME: dict[str, Slot] = {s.name: s for s in SLOTS}
#: Files that make up the pq-hybrid extras of a generation: present all together or not at all.
HYBRID_FILES: tuple[str, ...] = (cert_name("signing-mldsa65"), key_name("signing-mldsa65"),
                                 hybrid.MLKEM_KEY_FILE, hybrid.X25519_KEY_FILE, hybrid.STATEMENT_FILE)
#: Every file a generation may hold.
GENERATION_FILES: tuple[str, ...] = (
    *(name for s in SLOTS for name in (cert_name(s.name), key_name(s.name))),
    hybrid.MLKEM_KEY_FILE, hybrid.X25519_KEY_FILE, hybrid.STATEMENT_FILE)


@dataclass(frozen=True)
class Identity:
    """A verified certificate of this node with its private key."""

    slot: Slot
    verified: VerifiedCertificate
    key: PrivateKeyTypes = field(repr=False)
    cert_path: Path
    key_path: Path

    @property
    def cert(self) -> x509.Certificate:
        return self.verified.cert

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Leaf and intermediates (not the anchor), as presented to a peer."""
        return self.verified.chain[:-1]


@dataclass(frozen=True)
class HybridKeys:
    """The node's own hybrid KEM private keys and the statement that publishes their public half."""

    mlkem: mlkem.MLKEM768PrivateKey = field(repr=False)
    x25519: x25519.X25519PrivateKey = field(repr=False)
    statement: hybrid.HybridPublicKey
    statement_path: Path


@dataclass(frozen=True)
class Generation:
    name: str
    directory: Path
    identities: dict[str, Identity]
    hybrid: HybridKeys | None = None

    def __getitem__(self, slot: str) -> Identity:
        return self.identities[slot]

    @property
    def not_after(self) -> dt.datetime:
        """When the first of its certificates expires."""
        return min(i.verified.not_after for i in self.identities.values())


def load_identity(directory: Path, slot: Slot, node_id: str, trust: TrustStore, *, at: dt.datetime,
                  now: dt.datetime | None = None) -> Identity:
    cert_path = directory / cert_name(slot.name)
    key_path = directory / key_name(slot.name)
    certs = read_certificates(cert_path, slot.name)
    key = read_private_key(key_path)
    if not key_matches(certs[0], key):
        raise CertificateError(str(key_path), slot.name, "key-mismatch",
                               f"this key does not belong to the certificate in {cert_path}")
    verified = trust.verify(certs[0], slot.purpose, at=at, now=now, node_id=node_id, chain=certs[1:],
                            file=str(cert_path))
    if not slot.key_ok(certs[0].public_key()):
        raise CertificateError(str(cert_path), slot.name, "wrong-purpose",
                               f"the {slot.name} certificate must carry {slot.key_desc}")
    return Identity(slot, verified, key, cert_path, key_path)


def load_generation(directory: Path, node_id: str, trust: TrustStore, *, at: dt.datetime,
                    now: dt.datetime | None = None) -> Generation:
    """Load and check every slot of the generation in ``directory``; raise on the first problem."""
    if not directory.is_dir():
        raise CertificateError(str(directory), "generation", "missing", "directory not found")
    present = [name for name in HYBRID_FILES if (directory / name).exists()]
    with_hybrid = bool(present)
    if present and len(present) != len(HYBRID_FILES):
        absent = [name for name in HYBRID_FILES if name not in present]
        raise CertificateError(str(directory), "pq-hybrid", "layout",
                               f"has {', '.join(present)} but lacks {', '.join(absent)}; the pq-hybrid "
                               f"material comes all together (jgw pki csr --purpose signing-mldsa65, "
                               f"jgw pki hybrid)")
    identities: dict[str, Identity] = {}
    seen: dict[bytes, str] = {}
    for slot in SLOTS:
        if not slot.required and not with_hybrid:
            continue
        ident = load_identity(directory, slot, node_id, trust, at=at, now=now)
        fingerprint = spki(ident.cert.public_key())
        if fingerprint in seen:
            raise CertificateError(str(ident.key_path), slot.name, "key-reused",
                                   f"the same key is also the {seen[fingerprint]} key; "
                                   f"each purpose needs its own key")
        seen[fingerprint] = slot.name
        identities[slot.name] = ident
    keys = _load_hybrid(directory, node_id, identities) if with_hybrid else None
    return Generation(directory.name, directory, identities, keys)


def _load_hybrid(directory: Path, node_id: str, identities: dict[str, Identity]) -> HybridKeys:
    ml_path, x_path = directory / hybrid.MLKEM_KEY_FILE, directory / hybrid.X25519_KEY_FILE
    ml_key, x_key = read_private_key(ml_path), read_private_key(x_path)
    if not isinstance(ml_key, mlkem.MLKEM768PrivateKey):
        raise CertificateError(str(ml_path), "pq-hybrid", "wrong-purpose", "not an ML-KEM-768 private key")
    if not isinstance(x_key, x25519.X25519PrivateKey):
        raise CertificateError(str(x_path), "pq-hybrid", "wrong-purpose", "not an X25519 private key")
    statement_path = directory / hybrid.STATEMENT_FILE
    statement = hybrid.read_statement(statement_path, node_id,
                                      [identities["signing"].cert, identities["signing-mldsa65"].cert])
    if (spki(statement.mlkem) != spki(ml_key.public_key())
            or spki(statement.x25519) != spki(x_key.public_key())):
        raise CertificateError(str(statement_path), "pq-hybrid", "key-mismatch",
                               f"states a hybrid key other than the one in {ml_path.name} and {x_path.name}")
    return HybridKeys(ml_key, x_key, statement, statement_path)
