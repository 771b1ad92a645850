"""mTLS to RabbitMQ with EXTERNAL authentication: stdlib ``ssl`` contexts for pika.

``client_context`` builds a fresh ``ssl.SSLContext``: TLS 1.2 or later, the broker's certificate
verified against the configured anchors with its hostname checked, the broker's CRL checked
(``VERIFY_CRL_CHECK_LEAF``, CRLs loaded from their PEM files), and our client certificate and key.
Contexts are never changed after they are built: a reload builds a new one and reconnects (pika
reads the context only when it connects). pyOpenSSL is not used here, so TLS keeps working under
systemd's ``MemoryDenyWriteExecute=yes`` (research tech-stack §3.5).

``check_login`` opens one connection with a context and logs in with EXTERNAL, so staff (and
``jgw certs rotate --check-broker``) learn whether the broker accepts a certificate before the daemon
depends on it. Failures are translated once, here, into one line that says what to do.

Security: talks to the broker named by the caller; trusts the anchors given; reads our private key
(mode 0600 enforced first).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import TlsConfig
from gateway.pki.errors import CertificateError
from gateway.pki.files import PEM_CRL, check_key_mode

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True)
class TlsFiles:
    """The files of one TLS client identity plus what it trusts."""

    cert: Path
    key: Path
    cafiles: tuple[Path, ...]
    crlfiles: tuple[Path, ...] = ()
    crl_check: bool = True

    def client_context(self) -> ssl.SSLContext:
        return client_context(cafiles=self.cafiles, cert=self.cert, key=self.key, crlfiles=self.crlfiles,
                              crl_check=self.crl_check)

    def fingerprint(self) -> str:
        """A digest of what a context made now would contain (files are replaced in place, so their
        paths alone say nothing): a reload moves a link to a new connection only when it changed."""
        digest = hashlib.sha256(b"crl-check" if self.crl_check else b"no-crl-check")
        for path in (self.cert, self.key, *self.cafiles, *self.crlfiles):
            digest.update(str(path).encode() + b"\0")
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError as exc:  # building the context reports it; here it only has to differ
                digest.update(f"unreadable: {exc.errno}".encode())
        return digest.hexdigest()


def client_context(*, cafiles: Sequence[Path], cert: Path, key: Path, crlfiles: Sequence[Path] = (),
                   crl_check: bool = True) -> ssl.SSLContext:
    """A new client context for mTLS to a broker. Raises ``CertificateError``/``KeyFileModeError``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname by default
    ctx.minimum_version = MINIMUM_VERSION
    if not cafiles:
        raise CertificateError("", "tls", "missing", "no CA certificate to verify the broker with")
    for path in cafiles:
        _load_verify(ctx, path, "CA certificate")
    if crl_check:
        if not crlfiles:
            raise CertificateError("", "tls", "crl-missing",
                                   "CRL checking of the broker certificate needs its CA's CRL (trust/crls/)")
        for path in crlfiles:
            try:
                pem = PEM_CRL in path.read_bytes()
            except OSError as exc:
                raise CertificateError(str(path), "crl", "unreadable",
                                       f"cannot read: {exc.strerror}") from exc
            if not pem:
                raise CertificateError(str(path), "crl", "unreadable",
                                       "TLS needs CRLs in PEM; install it with jgw certs install --crl, "
                                       "which converts DER to PEM")
            _load_verify(ctx, path, "CRL")
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    check_key_mode(key)
    try:
        ctx.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise CertificateError(str(exc.filename or cert), "tls-client", "missing",
                               "file not found") from exc
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise CertificateError(str(key), "tls-client", "key-mismatch",
                                   f"this key does not belong to the certificate in {cert}") from exc
        raise CertificateError(str(cert), "tls-client", "unreadable",
                               f"cannot load the certificate and key ({exc.reason or exc})") from exc
    return ctx


def _load_verify(ctx: ssl.SSLContext, path: Path, what: str) -> None:
    try:
        ctx.load_verify_locations(cafile=str(path))
    except FileNotFoundError as exc:
        raise CertificateError(str(path), what, "missing", "file not found") from exc
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(str(path), what, "unreadable", f"cannot load ({exc})") from exc


def for_broker(files: TlsFiles, tls: TlsConfig) -> TlsFiles:
    """The node's TLS files, with the broker's own CA and CRL when ``[brokers.NAME.tls]`` names them
    (otherwise the broker is verified against the node's trust anchors and CRLs)."""
    return dataclasses.replace(files, cafiles=(tls.ca,) if tls.ca is not None else files.cafiles,
                               crlfiles=(tls.crl,) if tls.crl is not None else files.crlfiles)


def describe_failure(exc: BaseException) -> str:
    """One line for an operator about a failed TLS connection or EXTERNAL login."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        nested = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = cur.__cause__ or cur.__context__ or nested
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain)
    lowered = text.lower()
    for needle, hint in _HINTS:
        if needle in lowered:
            return f"{hint} ({_last(chain)})"
    return _last(chain)


# Most specific first. "certificate verify failed" is our verdict on the broker's certificate; an
# "alert" is the broker's verdict on ours.
_HINTS: tuple[tuple[str, str], ...] = (
    ("hostname mismatch", "the broker's certificate does not name the expected server_hostname"),
    ("verify failed: certificate revoked", "the broker's certificate is revoked (our CRL says so)"),
    ("verify failed: certificate has expired", "the broker's certificate has expired"),
    ("verify failed: unable to get certificate crl", "no CRL for the broker certificate's CA in trust/crls/"),
    ("verify failed: crl has expired", "the CRL for the broker certificate's CA has expired"),
    ("certificate verify failed", "we do not trust the broker's certificate (trust anchors, CRL)"),
    ("alert certificate revoked", "the broker refused our client certificate: it is revoked"),
    ("alert certificate expired", "the broker refused our client certificate: it has expired"),
    ("alert unknown ca", "the broker refused our client certificate: it does not trust its CA"),
    ("certificate required", "the broker requires a client certificate and we sent none"),
    ("alert bad certificate", "the broker refused our client certificate"),
    ("alert", "the broker ended the TLS handshake with an alert"),
    ("eof occurred in violation of protocol", "the broker closed the TLS connection while setting up: it "
                                              "probably refused our client certificate (expired, revoked, "
                                              "unknown CA); its log says which"),
    ("authenticationerror", "the broker refused EXTERNAL login: is the user named by the certificate's CN "
                            "created (rabbitmqctl add_user, clear_password, set_permissions)?"),
    ("access_refused", "the broker refused the login (user or vhost permissions)"),
    ("connection refused", "nothing listens on that address and port"),
    ("timed out", "no answer from the broker (firewall, address)"),
)


def _last(chain: list[BaseException]) -> str:
    for e in reversed(chain):
        if str(e):
            return f"{type(e).__name__}: {e}"
    return type(chain[-1]).__name__
