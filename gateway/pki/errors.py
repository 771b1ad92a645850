"""Certificate, CRL and key-file refusals: one typed error per kind, each naming the file and reason.

Every refusal carries a short ``code`` from ``REFUSAL_CODES`` (bounded: safe as a metric label or a
script's switch) besides the operator text. Material problems are configuration problems (exit 78);
a private key readable by others is a permission problem (exit 77).

Security: pure definitions. Messages name files, node ids, serial numbers and dates, never key bytes.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from gateway.errors import ConfigError, JgwError, PermissionError_, TempFailError
from gateway.pki.privileges import user_name

#: Every ``code`` a refusal can carry, with what it means to an operator.
REFUSAL_CODES: dict[str, str] = {
    "missing": "a required file is absent",
    "unreadable": "the file is not a certificate, key or CRL in PEM/DER, or cannot be read",
    "expired": "the certificate's notAfter has passed",
    "not-yet-valid": "the certificate's notBefore is ahead of our clock by more than the allowed skew",
    "revoked": "the certificate's serial number is on its issuer's CRL",
    "wrong-purpose": "key usage, extended key usage or key type do not fit the purpose it is used for",
    "unknown-ca": "the certificate does not chain to a configured trust anchor",
    "bad-signature": "a signature in the chain does not verify",
    "invalid-ca": "an issuer in the chain is not allowed to act as a CA",
    "name-mismatch": "the certificate does not name the node id it is used for",
    "crl-missing": "no CRL is installed for a CA in the chain",
    "crl-expired": "a CRL's nextUpdate has passed",
    "crl-not-yet-valid": "a CRL's thisUpdate is in the future",
    "crl-bad-signature": "a CRL is not signed by the CA it names, or by no configured CA at all",
    "crl-older": "a CRL being installed is older than the one already installed for its CA",
    "key-mismatch": "a private key does not belong to its certificate",
    "key-reused": "one key is used for two purposes; each purpose needs its own key",
    "key-mode": "a private key file is readable by group or others",
    "layout": "the certs directory is not in the expected shape",
}


class CertificateError(ConfigError):
    """A certificate, CRL or key was refused. ``code`` is one of ``REFUSAL_CODES``; the message reads
    ``FILE: WHAT: CODE: REASON`` (the runbooks explain each code)."""

    def __init__(self, file: str, what: str, code: str, reason: str) -> None:
        if code not in REFUSAL_CODES:
            raise ValueError(f"unknown refusal code {code!r}")
        self.code = code
        super().__init__(file, what, f"{code}: {reason}")
        self.reason = reason


class KeyFileModeError(PermissionError_):
    """A private key file is group- or world-accessible; refused before it is even read."""

    code = "key-mode"

    def __init__(self, file: str, mode: int) -> None:
        self.file = file
        self.mode = mode
        self.reason = (f"private key is mode {mode & 0o777:04o}, readable beyond its owner; "
                       f"run: chmod 600 {file}")
        super().__init__(f"{file}: key-mode: {self.reason}")


@contextlib.contextmanager
def os_errors(what: str) -> Iterator[None]:
    """Translate a file-system error escaping ``what`` into one line with the file: permission
    problems exit 77, a full or failing disk 75 (try again), anything else 78."""
    try:
        yield
    except JgwError:
        raise
    except OSError as exc:
        where = exc.filename or what
        text = exc.strerror or str(exc)
        if isinstance(exc, PermissionError):
            raise PermissionError_(f"{where}: {user_name()}: {text}; run as root or as the user owning the "
                                   f"certs directory") from exc
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS):
            raise TempFailError(f"{where}: {text}") from exc
        raise CertificateError(str(where), what, "unreadable", text) from exc
