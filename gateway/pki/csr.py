"""New keys and certificate requests for a node, written into its staging generation.

``create_csr`` makes a fresh key for one slot (EC P-256; ML-DSA-65 for ``signing-mldsa65``),
writes it 0600 into ``staging/<slot>.key`` and the request into ``staging/<slot>.csr`` for the CA.
The request names the node as CN and as subjectAltName URI ``urn:jgw:node:<id>`` and asks for the
slot's key usage; the CA decides what it issues, and ``jgw certs install`` checks what came back.
A key already waiting for its certificate is not replaced without ``force``: its request may be
with the CA.

``create_hybrid`` makes (or re-signs) the pq-hybrid KEM key statement in staging with staging's
signing keys (``gateway.pki.hybrid``).

Security: creates private keys (0600, never printed); talks to nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from gateway.errors import UsageError
from gateway.pki import hybrid
from gateway.pki.devca import PROFILE_EKU, PROFILE_KEY_USAGE
from gateway.pki.errors import CertificateError
from gateway.pki.files import (
    key_id,
    read_certificate,
    read_private_key,
    spki,
    write_atomic,
    write_private_key,
)
from gateway.pki.generation import SLOT_BY_NAME
from gateway.pki.layout import CertsDir, cert_name, key_name
from gateway.pki.purpose import NODE_URI_PREFIX
from gateway.pki.rotation import ensure_staging, live_generation


@dataclass(frozen=True)
class CsrResult:
    key_path: Path
    csr_path: Path
    key_id: str
    staging_created: bool
    #: the live generation staging was created from (its other slots carried over), or None when
    #: there was none yet: a first installation, where every slot needs its own request
    carried_from: str | None = None


def new_private_key(slot: str) -> ec.EllipticCurvePrivateKey | mldsa.MLDSA65PrivateKey:
    if slot == "signing-mldsa65":
        return mldsa.MLDSA65PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey | mldsa.MLDSA65PrivateKey, node_id: str,
              slot: str) -> x509.CertificateSigningRequest:
    purpose = SLOT_BY_NAME[slot].purpose
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
               .add_extension(x509.SubjectAlternativeName(
                   [x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id)]), critical=False)
               .add_extension(PROFILE_KEY_USAGE[purpose], critical=True))
    ekus = PROFILE_EKU[purpose]
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    if isinstance(key, mldsa.MLDSA65PrivateKey):
        return builder.sign(key, None)
    return builder.sign(key, hashes.SHA256())


def create_csr(cd: CertsDir, node_id: str, slot: str, *, force: bool = False) -> CsrResult:
    """New key and CSR for ``slot`` in staging. Call under ``cd.locked()``."""
    if slot not in SLOT_BY_NAME:
        raise UsageError(f"unknown purpose {slot!r} (one of: {', '.join(SLOT_BY_NAME)})")
    live = live_generation(cd)
    staging, created = ensure_staging(cd)
    key_path, csr_path = staging / key_name(slot), staging / f"{slot}.csr"
    if key_path.exists() and not force and _waiting_for_certificate(staging, slot):
        raise UsageError(f"{key_path}: a new {slot} key is already waiting for its certificate "
                         f"(request {csr_path.name}); install the issued certificate, or pass --force to "
                         f"replace the key (the pending request becomes useless)")
    key = new_private_key(slot)
    csr = build_csr(key, node_id, slot)
    write_private_key(key_path, key)
    write_atomic(csr_path, csr.public_bytes(serialization.Encoding.PEM))
    return CsrResult(key_path, csr_path, key_id(key.public_key()), created, live if created else None)


def _waiting_for_certificate(staging: Path, slot: str) -> bool:
    """True when the staged key has no matching staged certificate (its request is pending)."""
    try:
        key = read_private_key(staging / key_name(slot))
        cert = read_certificate(staging / cert_name(slot))
    except CertificateError:
        return (staging / key_name(slot)).exists()
    return spki(cert.public_key()) != spki(key.public_key())


def create_hybrid(cd: CertsDir, node_id: str, now: dt.datetime, *, new_keys: bool = False) -> Path:
    """Write the hybrid KEM keys (new ones when asked or absent) and their statement into staging,
    signed by staging's signing and signing-mldsa65 keys. Call under ``cd.locked()``."""
    staging, _ = ensure_staging(cd)
    sign_key = _read_key(staging / key_name("signing"))
    ml_sign = _read_key(staging / key_name("signing-mldsa65"))
    if not isinstance(sign_key, ec.EllipticCurvePrivateKey) or not isinstance(ml_sign,
                                                                                mldsa.MLDSA65PrivateKey):
        raise CertificateError(str(staging), "pq-hybrid", "wrong-purpose",
                               "staging's signing key must be EC P-256 and signing-mldsa65 ML-DSA-65")
    ml_path, x_path = staging / hybrid.MLKEM_KEY_FILE, staging / hybrid.X25519_KEY_FILE
    if new_keys or not (ml_path.exists() and x_path.exists()):
        ml_key, x_key = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        write_private_key(ml_path, ml_key)
        write_private_key(x_path, x_key)
    else:
        ml_any, x_any = read_private_key(ml_path), read_private_key(x_path)
        if not (isinstance(ml_any, mlkem.MLKEM768PrivateKey) and isinstance(x_any, x25519.X25519PrivateKey)):
            raise CertificateError(str(staging), "pq-hybrid", "wrong-purpose",
                                   f"{ml_path.name} / {x_path.name} are not ML-KEM-768 / X25519 keys")
        ml_key, x_key = ml_any, x_any
    statement = hybrid.make_statement(node_id, ml_key.public_key(), x_key.public_key(), sign_key, ml_sign,
                                      now)
    path = staging / hybrid.STATEMENT_FILE
    write_atomic(path, statement)
    return path


def _read_key(path: Path) -> PrivateKeyTypes:
    if not path.exists():
        raise CertificateError(str(path), "pq-hybrid", "missing",
                               "the statement is signed with this key; create it first (jgw pki csr)")
    return read_private_key(path)
