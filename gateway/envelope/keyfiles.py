"""Key material from explicitly named files, for ``jgw envelope`` (not for the daemon).

The daemon's keyring comes from ``certs/`` through ``gateway.pki``. An operator or auditor at a
desk names files instead, and the files ``jgw pki init-dev`` and ``jgw certs export`` write are
taken as they are:

- private keys (``open --key``, repeatable): PEM files of PKCS#8 blocks. Each P-256 key is a
  default-suite key. A pq-hybrid key is an ML-KEM-768 key with an X25519 key: both in one file, or
  one per file (``encryption-mlkem768.key`` and ``encryption-x25519.key`` of a generation). Keys
  from separate files are paired every way; the recipient key id in the envelope (a hash of both
  public keys) names the one pair that belongs together, so the order of ``--key`` does not matter.
- a peer's public material (``--peer NODE=FILE``, ``--to NODE=FILE``, repeatable per node): PEM
  files of certificates and SPKI blocks in any order, the pq-hybrid key statement
  ``encryption-hybrid.json`` (``gateway.pki.hybrid``), or a whole peer directory (``peers/<id>/``
  or what ``jgw certs export`` wrote: its known files, previous generation first).

How a peer's items are read: an EC or ML-DSA-65 *certificate* whose KeyUsage has digitalSignature
is a signing certificate; an EC certificate with keyAgreement, or a bare EC P-256 public key, is its
default-suite encryption key; one ML-KEM-768 plus one X25519 key (bare), or a key statement, make
its pq-hybrid encryption key. Every certificate must name the node it is given for (its one
subjectAltName URI ``urn:jgw:node:<node-id>``). A key statement counts only when it names the node and both its
signatures verify with that node's signing certificates given alongside (its own files, or the same
directory). Anything else is refused, naming the file and block.

Errors say who is at fault: a missing file is exit 66, a private key readable by others 77 (before
it is read), and any file that is not the key material it should be, or keys that do not fit
together, ``KeyFileError`` (78): the operator's files, not an envelope (65), are wrong.

Security: reads local files the operator names; nothing read here is printed.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519

from gateway.errors import NoInputError, PermissionError_
from gateway.keyring import (
    CertificateUntrusted,
    DecryptionKey,
    EncryptionKey,
    KeyringError,
    PeerKeys,
    SigningIdentity,
    check_node_binding,
)
from gateway.pki import hybrid
from gateway.pki.peers import peer_file_names

_PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
MAX_PEM_BYTES = 1024 * 1024
#: At most this many lone ML-KEM-768 (or X25519) keys are paired every way (``decryption_keys``).
MAX_LONE_HYBRID_KEYS = 8

PublicItem = x509.Certificate | ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey | mlkem.MLKEM768PublicKey \
    | x25519.X25519PublicKey


_PUBLIC_TYPES = (ec.EllipticCurvePublicKey, mldsa.MLDSA65PublicKey, mlkem.MLKEM768PublicKey,
                 x25519.X25519PublicKey)


class KeyFileError(KeyringError):
    """A named key, certificate, CRL or key statement file cannot serve: not PEM, a block of the wrong
    kind, keys that do not pair up, a statement that does not verify (exit 78, EX_CONFIG)."""


def _read(path: Path, private: bool) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise NoInputError(f"{path}: file not found") from exc
    except OSError as exc:
        raise NoInputError(f"{path}: cannot read: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file")
    if private and stat.S_IMODE(st.st_mode) & 0o077:
        raise PermissionError_(f"{path}: private key is mode {stat.S_IMODE(st.st_mode):04o}, readable beyond "
                               f"its owner; run: chmod 600 {path}")
    if st.st_size > MAX_PEM_BYTES:
        raise KeyFileError(f"{path}: {st.st_size} bytes is too large for a PEM key file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NoInputError(f"{path}: cannot read: {exc.strerror}") from exc


def _blocks(path: Path, data: bytes) -> list[tuple[str, bytes]]:
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_RE.finditer(data)]
    if not blocks:
        raise KeyFileError(f"{path}: no PEM block found")
    return blocks


def load_private_keys(path: Path) -> list[object]:
    """Every private key in a PEM file (PKCS#8 or traditional, unencrypted)."""
    out: list[object] = []
    for i, (kind, block) in enumerate(_blocks(path, _read(path, private=True))):
        if "PRIVATE KEY" not in kind:
            raise KeyFileError(f"{path}: block {i + 1} is a {kind}, not a private key")
        try:
            out.append(serialization.load_pem_private_key(block, password=None))
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"{path}: block {i + 1} is not a usable private key "
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
                raise KeyFileError(f"{path}: block {i + 1}: a {type(key).__name__} key is not used by "
                                   "envelopes")
        except ValueError as exc:
            raise KeyFileError(f"{path}: block {i + 1} ({kind}) does not parse") from exc
        if "PRIVATE" in kind:
            raise KeyFileError(f"{path}: block {i + 1} is a private key; a peer file holds public material "
                               "only")
        raise KeyFileError(f"{path}: block {i + 1} is a {kind}; expected CERTIFICATE or PUBLIC KEY")
    return out


def load_certificates(paths: Sequence[Path]) -> list[x509.Certificate]:
    out = []
    for path in paths:
        for item in load_public_items(path):
            if not isinstance(item, x509.Certificate):
                raise KeyFileError(f"{path}: holds a bare public key; expected certificates")
            out.append(item)
    return out


def load_crls(paths: Sequence[Path]) -> list[x509.CertificateRevocationList]:
    out = []
    for path in paths:
        for i, (kind, block) in enumerate(_blocks(path, _read(path, private=False))):
            if kind != "X509 CRL":
                raise KeyFileError(f"{path}: block {i + 1} is a {kind}, not an X509 CRL")
            try:
                out.append(x509.load_pem_x509_crl(block))
            except ValueError as exc:
                raise KeyFileError(f"{path}: block {i + 1} (X509 CRL) does not parse") from exc
    return out


def signing_identity(key: Path, cert: Path, mldsa_key: Path | None = None,
                     mldsa_cert: Path | None = None) -> SigningIdentity:
    def one_private(path: Path) -> object:
        keys = load_private_keys(path)
        if len(keys) != 1:
            raise KeyFileError(f"{path}: expected one private key, found {len(keys)}")
        return keys[0]

    def one_cert(path: Path) -> x509.Certificate:
        certs = load_certificates([path])
        if len(certs) != 1:
            raise KeyFileError(f"{path}: expected one certificate, found {len(certs)}")
        return certs[0]

    ec_key = one_private(key)
    if not isinstance(ec_key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(f"{key}: the signing key must be EC P-256")
    pq_key = one_private(mldsa_key) if mldsa_key else None
    if pq_key is not None and not isinstance(pq_key, mldsa.MLDSA65PrivateKey):
        raise KeyFileError(f"{mldsa_key}: not an ML-DSA-65 private key")
    pq_cert = one_cert(mldsa_cert) if mldsa_cert else None
    return SigningIdentity.create(ec_key, one_cert(cert), pq_key, pq_cert)


def decryption_keys(paths: Sequence[Path]) -> list[DecryptionKey]:
    """Every decryption key in ``paths`` (see the module docstring): one default-suite key per P-256
    key; one pq-hybrid key per file holding an ML-KEM-768 and an X25519 key; and lone ML-KEM-768 and
    X25519 keys (one per file, as a generation stores them) paired every way, so the envelope's
    recipient key id finds the pair that belongs together whatever the order of the files."""
    out: list[DecryptionKey] = []
    lone_kems: list[tuple[Path, mlkem.MLKEM768PrivateKey]] = []
    lone_xs: list[tuple[Path, x25519.X25519PrivateKey]] = []
    for path in paths:
        keys = load_private_keys(path)
        kems = [k for k in keys if isinstance(k, mlkem.MLKEM768PrivateKey)]
        xs = [k for k in keys if isinstance(k, x25519.X25519PrivateKey)]
        ecs = [k for k in keys if isinstance(k, ec.EllipticCurvePrivateKey)]
        if len(kems) + len(xs) + len(ecs) != len(keys):
            raise KeyFileError(f"{path}: holds a key type envelopes do not use (P-256, ML-KEM-768, X25519)")
        out += [DecryptionKey.p256(k) for k in ecs]
        if len(kems) == len(xs) == 1:
            out.append(DecryptionKey.hybrid(kems[0], xs[0]))
        elif len(kems) + len(xs) == 1:
            if kems:
                lone_kems.append((path, kems[0]))
            else:
                lone_xs.append((path, xs[0]))
        elif kems or xs:
            raise KeyFileError(f"{path}: holds {len(kems)} ML-KEM-768 and {len(xs)} X25519 keys; a pq-hybrid "
                               "key file holds one of each, or one key alone")
    if len(lone_kems) > MAX_LONE_HYBRID_KEYS or len(lone_xs) > MAX_LONE_HYBRID_KEYS:
        raise KeyFileError(f"more than {MAX_LONE_HYBRID_KEYS} lone ML-KEM-768 or X25519 key files")
    if bool(lone_kems) != bool(lone_xs):
        path, other = (lone_kems[0][0], "X25519") if lone_kems else (lone_xs[0][0], "ML-KEM-768")
        raise KeyFileError(f"{path}: a pq-hybrid decryption key is an ML-KEM-768 key with an X25519 key; "
                           f"give its {other} key too (another --key, e.g. encryption-"
                           f"{'x25519' if other == 'X25519' else 'mlkem768'}.key of the same generation)")
    out += [DecryptionKey.hybrid(m, x) for _, m in lone_kems for _, x in lone_xs]
    return out


def _expand(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as named; a directory stands for the peer files in it (peers/<id>/, jgw certs export),
    its previous generation first so that the current one is what a sender encrypts to."""
    known = peer_file_names()
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        present = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        unknown = [p.name for p in present if p.name not in known]
        if unknown:
            raise KeyFileError(f"{path}: {', '.join(unknown)} is not a peer file; a peer directory holds "
                               f"{', '.join(sorted(known))}")
        yield from sorted(present, key=lambda p: (".previous." not in p.name, p.name))


def _is_statement(path: Path) -> bool:
    return _read(path, private=False).lstrip()[:1] == b"{"


def peer_keys(node_id: str, paths: Sequence[Path]) -> PeerKeys:
    """A peer's signing certificates and encryption keys from its files; see the module docstring."""
    signing: list[x509.Certificate] = []
    encryption: list[EncryptionKey] = []
    kems: list[mlkem.MLKEM768PublicKey] = []
    xs: list[x25519.X25519PublicKey] = []
    statements: list[Path] = []
    files = list(_expand(paths))
    for path in files:
        if _is_statement(path):
            statements.append(path)
            continue
        for item in load_public_items(path):
            if isinstance(item, x509.Certificate):
                try:
                    check_node_binding(item, node_id)
                except CertificateUntrusted as exc:
                    raise KeyFileError(f"{path}: not {node_id}'s certificate: {exc.detail}") from exc
            key = item.public_key() if isinstance(item, x509.Certificate) else item
            signer_type = isinstance(key, ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey)
            if isinstance(item, x509.Certificate) and signer_type:
                try:
                    usage = item.extensions.get_extension_for_class(x509.KeyUsage).value
                except x509.ExtensionNotFound as exc:
                    raise KeyFileError(f"{path}: certificate {item.subject.rfc4514_string()} has no "
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
                raise KeyFileError(f"{path}: a {type(key).__name__} is neither a signing certificate nor an "
                                   "encryption key")
    if len(kems) != len(xs) or len(kems) > 1:
        raise KeyFileError(f"peer {node_id}: give exactly one ML-KEM-768 key with one X25519 key (pq-hybrid), "
                           f"got {len(kems)} and {len(xs)}")
    if kems:
        encryption.append(EncryptionKey.hybrid(kems[0], xs[0]))
    for path in statements:
        encryption.append(_statement_key(path, node_id, signing))
    return PeerKeys.build(node_id, signing, encryption)


def _statement_key(path: Path, node_id: str, signing: Sequence[x509.Certificate]) -> EncryptionKey:
    """The hybrid KEM key a statement gives, once it names ``node_id`` and both its signatures verify
    with signing certificates given for that node (``gateway.pki.hybrid.read_statement``)."""
    kinds = {type(c.public_key()) for c in signing}
    if not any(issubclass(k, ec.EllipticCurvePublicKey) for k in kinds) or not any(
            issubclass(k, mldsa.MLDSA65PublicKey) for k in kinds):
        raise KeyFileError(f"{path}: a key statement counts only with the certificates that signed it; give "
                           f"{node_id}'s signing.pem and signing-mldsa65.pem too (or its whole peer directory)")
    stated = hybrid.read_statement(path, node_id, signing)  # CertificateError, exit 78, names the problem
    return EncryptionKey.hybrid(stated.mlkem, stated.x25519)
