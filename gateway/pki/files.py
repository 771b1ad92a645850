"""Reading and writing certificate, CRL and key files, with the checks that come before any use.

A private key file is refused before it is read when group or others have any access to it (a key
that was exposed must be replaced, not quietly tightened). Keys are written 0600 from the moment the
file exists (``O_EXCL`` with the mode, then rename), never chmod-ed afterwards. Every write is
atomic: a temporary file in the same directory, fsync, rename, fsync of the directory.

Security: reads local files staff put in the certs directory; trusts no content until
``gateway.pki.trust`` has verified it. Never logs or prints key bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from gateway.pki.errors import CertificateError, KeyFileModeError
from gateway.pki.privileges import input_mode, read_input, user_name

PEM_CERT = b"-----BEGIN CERTIFICATE-----"
PEM_CRL = b"-----BEGIN X509 CRL-----"


def read_file(path: Path, what: str) -> bytes:
    """The file's bytes: as preloaded while still root (``gateway.pki.privileges``), else read now.
    A refusal says which user could not read it."""
    preloaded = read_input(path)
    if preloaded is not None:
        return preloaded
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CertificateError(str(path), what, "missing", "file not found") from exc
    except PermissionError as exc:
        raise CertificateError(str(path), what, "unreadable",
                               f"{user_name()} cannot read it: {exc.strerror}") from exc
    except OSError as exc:
        raise CertificateError(str(path), what, "unreadable", f"cannot read: {exc.strerror}") from exc



def read_certificates(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """Every certificate in a PEM file (leaf first, then intermediates) or the one in a DER file."""
    data = read_file(path, what)
    try:
        if PEM_CERT in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise CertificateError(str(path), what, "unreadable",
                               f"not a PEM or DER certificate ({exc})") from exc


def read_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    return read_certificates(path, what)[0]


def read_crl(path: Path) -> x509.CertificateRevocationList:
    data = read_file(path, "crl")
    try:
        if PEM_CRL in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CertificateError(str(path), "crl", "unreadable", f"not a PEM or DER CRL ({exc})") from exc


def check_key_mode(path: Path) -> None:
    """Refuse a key file that group or others can access, or that is not a regular file."""
    mode = input_mode(path)
    if mode is not None:
        if mode & 0o077:
            raise KeyFileModeError(str(path), mode)
        return
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise CertificateError(str(path), "private key", "missing", "file not found") from exc
    except OSError as exc:
        raise CertificateError(str(path), "private key", "unreadable",
                               f"{user_name()} cannot stat it: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise CertificateError(str(path), "private key", "unreadable", "not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileModeError(str(path), st.st_mode)


def read_private_key(path: Path) -> PrivateKeyTypes:
    """Load an unencrypted PKCS#8/traditional PEM or DER key after the mode check."""
    check_key_mode(path)
    data = read_file(path, "private key")
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password=None)
        return serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # the library message may quote PEM headers but never key material
        raise CertificateError(str(path), "private key", "unreadable",
                               "not an unencrypted PEM or DER private key") from exc


def spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: PublicKeyTypes) -> str:
    """The id of a public key, as ``gateway.keyring.key_id`` defines it: 32 hex digits, the first
    16 bytes of SHA-256 over the DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki(key)).digest()[:16].hex()


def key_matches(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    return spki(cert.public_key()) == spki(key.public_key())


def pem_certificates(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def pem_private_key(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file created with ``mode``, then rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we asked for; never adds to a key's
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    write_atomic(path, pem_private_key(key), 0o600)


def write_bytes_private(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o600)


def describe(obj: Any) -> str:
    """Short display of a certificate for messages: subject CN and serial, never more."""
    from gateway.pki.purpose import common_name

    if isinstance(obj, x509.Certificate):
        return f"{common_name(obj.subject)} (serial {obj.serial_number:x})"
    return type(obj).__name__
