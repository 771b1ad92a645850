"""The keyring's trust hook, backed by the CRL-checked ``TrustStore``.

``gateway.keyring.Keyring.check_certificate(cert, purpose, at)`` lands here for every envelope a
peer signed. The first check of a certificate runs the full verification (pyOpenSSL chain with
CRLs) and keeps its ``Verdict``; later ones compare ``at`` and the clock with it (validity window,
CRL freshness, revocation date): a few comparisons. The cache is keyed by the certificate object's
id and holds the object, as ``keyring.CaTrust`` does, so an id cannot be reused while cached. The
CRLs of a store never change: new CRLs mean a new store and a new keyring.

Security: decides whether a peer's signature counts. Fails closed: any refusal becomes
``CertificateUntrusted`` with the refusal code as its reason.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

from cryptography import x509

from gateway.keyring import PURPOSE_ENCRYPTION, PURPOSE_SIGNING, CertificateUntrusted
from gateway.pki.errors import CertificateError
from gateway.pki.purpose import Purpose
from gateway.pki.trust import TrustStore, Verdict

_PURPOSES = {PURPOSE_SIGNING: Purpose.SIGNING, PURPOSE_ENCRYPTION: Purpose.ENCRYPTION}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class StoreTrust:
    """``gateway.keyring.CertificateTrust`` over a ``TrustStore``; safe to call from several threads."""

    def __init__(self, store: TrustStore, clock: Callable[[], dt.datetime] = _utcnow,
                 max_cache: int = 4096) -> None:
        self.store = store
        self._clock = clock
        self._max_cache = max_cache
        self._cache: dict[tuple[int, Purpose], tuple[x509.Certificate, Verdict]] = {}
        self._lock = threading.Lock()

    def check_certificate(self, cert: x509.Certificate, purpose: str, at: dt.datetime) -> None:
        if purpose not in _PURPOSES:
            raise ValueError(f"unknown certificate purpose {purpose!r}")
        if at.tzinfo is None:
            raise CertificateUntrusted("bad-time", "check time must be timezone-aware")
        wanted = _PURPOSES[purpose]
        now = self._clock()
        key = (id(cert), wanted)
        cached = self._cache.get(key)
        if cached is None or cached[0] is not cert:
            try:
                verdict = self.store.verdict(self.store.verify(cert, wanted, at=at, now=now))
            except CertificateError as err:
                raise CertificateUntrusted(err.code, err.reason) from err
            with self._lock:
                if len(self._cache) >= self._max_cache:
                    self._cache.clear()
                self._cache[key] = (cert, verdict)
        else:
            verdict = cached[1]
        problem = verdict.problem(at, now)
        if problem is not None:
            raise CertificateUntrusted(*problem)
