"""Key material from explicitly named PEM files, for ``jgw envelope`` (not for the daemon).

The daemon's keyring comes from ``certs/`` through ``gateway.pki``. An operator or auditor at a
desk names files instead: a private key file per key (the hybrid ML-KEM-768 + X25519 key as one
file holding both PKCS#8 blocks), and per peer one PEM file holding its signing certificates and
public encryption keys (certificates or SPKI blocks, in any order).

How a peer file's blocks are read: an EC or ML-DSA-65 *certificate* whose KeyUsage has
digitalSignature is a signing certificate; an EC certificate with keyAgreement, or a bare EC P-256
public key, is its default-suite encryption key; one ML-KEM-768 plus one X25519 key (certificate or
bare) make its pq-hybrid encryption key. Anything else is refused, naming the file and block.

Security: reads local files the operator names. Private key files must be mode 0600 or stricter
(refused with exit 77 otherwise, before they are read); nothing read here is printed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519

from gateway.errors import DataError, NoInputError, PermissionError_
from gateway.keyring import DecryptionKey, EncryptionKey, PeerKeys, SigningIdentity

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
MAX_PEM_BYTES = 1024 * 1024

PublicItem = x509.Certificate | ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey | mlkem.MLKEM768PublicKey \
    | x25519.X25519PublicKey


_PUBLIC_TYPES = (ec.EllipticCurvePublicKey, mldsa.MLDSA65PublicKey, mlkem.MLKEM768PublicKey,
                 x25519.X25519PublicKey)


def _read(path: Path, private: bool) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise NoInputError(f"{path}: file not found") from exc
    except OSError as exc:
        raise NoInputError(f"{path}: cannot read: {exc.strerror}") from exc
    if private and stat.S_IMODE(st.st_mode) & 0o077:
        raise PermissionError_(f"{path}: private key is mode {stat.S_IMODE(st.st_mode):04o}, readable beyond "
                               f"its owner; run: chmod 600 {path}")
    if st.st_size > MAX_PEM_BYTES:
        raise DataError(f"{path}: {st.st_size} bytes is too large for a PEM key file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NoInputError(f"{path}: cannot read: {exc.strerror}") from exc


def _blocks(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_RE.finditer(data)]
    if not blocks:
        raise DataError(f"{path}: no PEM block found")
    return blocks


def load_private_keys(path: Path) -> list[object]:
    """Every private key in a PEM file (PKCS#8 or traditional, unencrypted)."""
    out: list[object] = []
    for i, (kind, block) in enumerate(_blocks(path, _read(path, private=True))):
        if "PRIVATE KEY" not in kind:
            raise DataError(f"{path}: block {i + 1} is a {kind}, not a private key")
        try:
            out.append(serialization.load_pem_private_key(block, password=None))
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path}: block {i + 1} is not a usable private key "
                            f"({type(exc).__name__})") from exc
    return out


def load_public_items(path: Path) -> list[PublicItem]:
    """Every certificate and public key in a PEM file."""
    out: list[PublicItem] = []
    for i, (kind, block) in enumerate(_blocks(path, _read(path, private=False))):
        try:
            if kind == "CERTIFICATE":
                out.append(x509.load_pem_x509_certificate(block))
                continue
            if kind == "PUBLIC KEY":
                key = serialization.load_pem_public_key(block)
                if isinstance(key, _PUBLIC_TYPES):
                    out.append(key)
                    continue
                raise DataError(f"{path}: block {i + 1}: a {type(key).__name__} key is not used by envelopes")
        except ValueError as exc:
            raise DataError(f"{path}: block {i + 1} ({kind}) does not parse") from exc
        if "PRIVATE" in kind:
            raise DataError(f"{path}: block {i + 1} is a private key; a peer file holds public material only")
        raise DataError(f"{path}: block {i + 1} is a {kind}; expected CERTIFICATE or PUBLIC KEY")
    return out


def load_certificates(paths: Sequence[Path]) -> list[x509.Certificate]:
    out = []
    for path in paths:
        for item in load_public_items(path):
            if not isinstance(item, x509.Certificate):
                raise DataError(f"{path}: holds a bare public key; expected certificates")
            out.append(item)
    return out


def load_crls(paths: Sequence[Path]) -> list[x509.CertificateRevocationList]:
    out = []
    for path in paths:
        for i, (kind, block) in enumerate(_blocks(path, _read(path, private=False))):
            if kind != "X509 CRL":
                raise DataError(f"{path}: block {i + 1} is a {kind}, not an X509 CRL")
            try:
                out.append(x509.load_pem_x509_crl(block))
            except ValueError as exc:
                raise DataError(f"{path}: block {i + 1} (X509 CRL) does not parse") from exc
    return out


def signing_identity(key: Path, cert: Path, mldsa_key: Path | None = None,
                     mldsa_cert: Path | None = None) -> SigningIdentity:
    def one_private(path: Path) -> object:
        keys = load_private_keys(path)
        if len(keys) != 1:
            raise DataError(f"{path}: expected one private key, found {len(keys)}")
        return keys[0]

    def one_cert(path: Path) -> x509.Certificate:
        certs = load_certificates([path])
        if len(certs) != 1:
            raise DataError(f"{path}: expected one certificate, found {len(certs)}")
        return certs[0]

    ec_key = one_private(key)
    if not isinstance(ec_key, ec.EllipticCurvePrivateKey):
        raise DataError(f"{key}: the signing key must be EC P-256")
    pq_key = one_private(mldsa_key) if mldsa_key else None
    if pq_key is not None and not isinstance(pq_key, mldsa.MLDSA65PrivateKey):
        raise DataError(f"{mldsa_key}: not an ML-DSA-65 private key")
    pq_cert = one_cert(mldsa_cert) if mldsa_cert else None
    return SigningIdentity.create(ec_key, one_cert(cert), pq_key, pq_cert)


def decryption_keys(path: Path) -> list[DecryptionKey]:
    """A P-256 key file gives one default-suite key; a file with an ML-KEM-768 and an X25519 key gives
    one pq-hybrid key; several P-256 keys in one file give one key each."""
    keys = load_private_keys(path)
    kems = [k for k in keys if isinstance(k, mlkem.MLKEM768PrivateKey)]
    xs = [k for k in keys if isinstance(k, x25519.X25519PrivateKey)]
    ecs = [k for k in keys if isinstance(k, ec.EllipticCurvePrivateKey)]
    if len(kems) + len(xs) + len(ecs) != len(keys):
        raise DataError(f"{path}: holds a key type envelopes do not use")
    if len(kems) != len(xs) or len(kems) > 1:
        raise DataError(f"{path}: a pq-hybrid key file holds exactly one ML-KEM-768 and one X25519 key")
    out = [DecryptionKey.p256(k) for k in ecs]
    if kems:
        out.append(DecryptionKey.hybrid(kems[0], xs[0]))
    return out


def peer_keys(node_id: str, paths: Sequence[Path]) -> PeerKeys:
    """A peer's signing certificates and encryption keys from its PEM file(s); see module docstring."""
    signing: list[x509.Certificate] = []
    encryption: list[EncryptionKey] = []
    kems: list[mlkem.MLKEM768PublicKey] = []
    xs: list[x25519.X25519PublicKey] = []
    for path in paths:
        for item in load_public_items(path):
            key = item.public_key() if isinstance(item, x509.Certificate) else item
            signer_type = isinstance(key, ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey)
            if isinstance(item, x509.Certificate) and signer_type:
                try:
                    usage = item.extensions.get_extension_for_class(x509.KeyUsage).value
                except x509.ExtensionNotFound as exc:
                    raise DataError(f"{path}: certificate {item.subject.rfc4514_string()} has no "
                                    "KeyUsage") from exc
                if usage.digital_signature:
                    signing.append(item)
                    continue
            if isinstance(key, ec.EllipticCurvePublicKey):
                encryption.append(EncryptionKey.p256(key))
            elif isinstance(key, mlkem.MLKEM768PublicKey):
                kems.append(key)
            elif isinstance(key, x25519.X25519PublicKey):
                xs.append(key)
            else:
                raise DataError(f"{path}: a {type(key).__name__} is neither a signing certificate nor an "
                                "encryption key")
    if len(kems) != len(xs) or len(kems) > 1:
        raise DataError(f"peer {node_id}: give exactly one ML-KEM-768 key with one X25519 key (pq-hybrid), "
                        f"got {len(kems)} and {len(xs)}")
    if kems:
        encryption.append(EncryptionKey.hybrid(kems[0], xs[0]))
    return PeerKeys.build(node_id, signing, encryption)
