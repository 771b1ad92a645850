"""Trust: verify a node's or a peer's certificate against the configured anchors, with CRLs.

``TrustStore.load(trust_dir, now)`` reads ``anchors/`` (self-signed CA certificates),
``intermediates/`` (optional CA certificates below them) and ``crls/``. Each CRL must be signed by
the CA it names and be current; otherwise it is refused with a reason, because a CRL we cannot
trust is a revocation we would silently miss. Every CA in a verified chain needs a current CRL
(fail closed): ``CRL_CHECK_ALL`` when every configured CA has one, ``CRL_CHECK`` otherwise.

``TrustStore.verify(cert, purpose, at=...)`` checks, in this order, and refuses with the first
problem (``CertificateError`` with a code from ``gateway.pki.errors.REFUSAL_CODES``): the purpose
profile (``gateway.pki.purpose``), the node id, the validity period at ``at`` (notBefore may be up
to ``clock_skew`` ahead of our clock; notAfter gets no grace, since expiry is known long in
advance), then the chain and revocation through pyOpenSSL's ``X509Store``.

Verifying "as of" an earlier instant (a dead letter replayed days later) uses the CRLs we hold now:
OpenSSL refuses a CRL issued after the verification time, so for such instants the chain is
verified by OpenSSL and revocation is judged from the current CRL with the envelope's rule
(``gateway.keyring.revoked_from``): revoked if the revocation date is not after ``at`` and the
reason says the key was not compromised (superseded, cessationOfOperation, affiliationChanged,
privilegeWithdrawn); at any date for any other reason or none.

Security: reads trust material staff installed; trusts only the anchors. The pyOpenSSL use is
limited to ``X509Store``/``X509StoreContext`` without callbacks, which works under systemd's
``MemoryDenyWriteExecute=yes`` (research tech-stack §3.5).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from OpenSSL import crypto

from gateway.keyring import revoked_from
from gateway.pki.errors import CertificateError
from gateway.pki.files import key_id, read_certificates, read_crl
from gateway.pki.purpose import Purpose, common_name, node_ids, profile_problem

DEFAULT_CLOCK_SKEW = dt.timedelta(minutes=5)
_Refuse = Callable[[str, str], CertificateError]
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der")
CRL_SUFFIXES = (".pem", ".crl", ".der")

# OpenSSL verify error numbers (x509_vfy.h) -> our refusal code.
_OPENSSL_CODES: dict[int, str] = {
    2: "unknown-ca", 20: "unknown-ca", 21: "unknown-ca", 18: "unknown-ca", 19: "unknown-ca",
    3: "crl-missing", 4: "bad-signature", 6: "bad-signature", 7: "bad-signature", 8: "crl-bad-signature",
    9: "not-yet-valid", 10: "expired", 11: "crl-not-yet-valid", 12: "crl-expired", 23: "revoked",
    24: "invalid-ca", 25: "invalid-ca", 26: "wrong-purpose", 32: "wrong-purpose", 33: "crl-bad-signature",
    44: "crl-missing", 54: "crl-bad-signature",
}


def utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError("a naive datetime; pass an aware one (UTC)")
    return moment.astimezone(dt.UTC)


@dataclass(frozen=True)
class TrustedCa:
    path: Path
    cert: x509.Certificate
    anchor: bool

    @property
    def name(self) -> str:
        return common_name(self.cert.subject)


@dataclass(frozen=True)
class LoadedCrl:
    path: Path
    crl: x509.CertificateRevocationList
    issuer: TrustedCa

    @property
    def next_update(self) -> dt.datetime:
        nu = self.crl.next_update_utc
        assert nu is not None  # load() refuses a CRL without one
        return nu

    @property
    def last_update(self) -> dt.datetime:
        return self.crl.last_update_utc


@dataclass(frozen=True)
class VerifiedCertificate:
    """A certificate that passed every check for ``purpose``; ``chain`` runs leaf to anchor."""

    cert: x509.Certificate
    purpose: Purpose
    chain: tuple[x509.Certificate, ...]
    node_id: str | None

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    @property
    def anchor_name(self) -> str:
        return common_name(self.chain[-1].subject)

    @property
    def issuer_name(self) -> str:
        return common_name(self.cert.issuer)

    @property
    def key_id(self) -> str:
        return key_id(self.cert.public_key())


@dataclass(frozen=True, slots=True)
class Verdict:
    """What still depends on the clock once a certificate has been verified (``TrustStore.verdict``)."""

    subject: str
    purpose: Purpose
    valid_from: dt.datetime
    valid_until: dt.datetime
    crl_until: dt.datetime | None
    crl_issuer: str
    revoked_from: dt.datetime | None

    def problem(self, at: dt.datetime, now: dt.datetime) -> tuple[str, str] | None:
        """(code, reason) when the certificate is not good as of ``at`` with CRLs judged at ``now``."""
        if at > self.valid_until:
            return "expired", f"{self.subject} (or its chain) expired at {_show(self.valid_until)}"
        if at < self.valid_from:
            return "not-yet-valid", (f"{self.subject} (or its chain) is not valid before "
                                     f"{_show(self.valid_from)}")
        if self.crl_until is not None and now > self.crl_until:
            return "crl-expired", (f"the CRL of CA {self.crl_issuer!r} expired at {_show(self.crl_until)}; "
                                   f"install the current CRL")
        if self.revoked_from is not None and at >= self.revoked_from:
            return "revoked", f"{self.subject} is revoked by its issuer's CRL"
        return None


@dataclass
class TrustStore:
    directory: Path
    cas: tuple[TrustedCa, ...]
    crls: tuple[LoadedCrl, ...]
    clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW
    _x509: list[crypto.X509] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._x509 = [crypto.X509.from_cryptography(ca.cert) for ca in self.cas]

    # -- loading -------------------------------------------------------------------------------------

    @classmethod
    def load(cls, trust_dir: Path, now: dt.datetime, *, clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
             problems: list[CertificateError] | None = None) -> TrustStore:
        """Read anchors, intermediates and CRLs. Raises on the first bad item, or, when ``problems``
        is a list, records each bad item there and leaves it out (for ``jgw certs status``)."""
        now = utc(now)

        def refuse(err: CertificateError) -> None:
            if problems is None:
                raise err
            problems.append(err)

        anchors_dir = trust_dir / "anchors"
        if not anchors_dir.is_dir():
            raise CertificateError(str(anchors_dir), "trust anchors", "layout",
                                   "directory missing; put the CA certificate(s) you trust here")
        cas: list[TrustedCa] = []
        for path in _files(anchors_dir, CERT_SUFFIXES):
            try:
                for cert in read_certificates(path, "trust anchor"):
                    _check_ca(path, cert, "trust anchor")
                    cas.append(TrustedCa(path, cert, anchor=True))
            except CertificateError as err:
                refuse(err)
        if not any(ca.anchor for ca in cas):
            raise CertificateError(str(anchors_dir), "trust anchors", "layout", "no trust anchor installed")
        inter_dir = trust_dir / "intermediates"
        if inter_dir.is_dir():
            for path in _files(inter_dir, CERT_SUFFIXES):
                try:
                    for cert in read_certificates(path, "intermediate CA"):
                        _check_ca(path, cert, "intermediate CA")
                        cas.append(TrustedCa(path, cert, anchor=False))
                except CertificateError as err:
                    refuse(err)
        crls: dict[bytes, LoadedCrl] = {}
        crl_dir = trust_dir / "crls"
        if crl_dir.is_dir():
            for path in _files(crl_dir, CRL_SUFFIXES):
                try:
                    loaded = check_crl(path, read_crl(path), cas, now, clock_skew)
                except CertificateError as err:
                    refuse(err)
                    continue
                key = loaded.issuer.cert.subject.public_bytes()
                if key not in crls or crls[key].last_update < loaded.last_update:
                    crls[key] = loaded
        return cls(trust_dir, tuple(cas), tuple(crls.values()), clock_skew)

    def crl_for(self, ca: x509.Certificate) -> LoadedCrl | None:
        for loaded in self.crls:
            if loaded.issuer.cert == ca:
                return loaded
        return None

    @property
    def crl_for_every_ca(self) -> bool:
        return all(self.crl_for(ca.cert) is not None for ca in self.cas)

    # -- verification ------------------------------------------------------------------------------------

    def verify(self, cert: x509.Certificate, purpose: Purpose, *, at: dt.datetime,
               now: dt.datetime | None = None, node_id: str | None = None,
               chain: Sequence[x509.Certificate] = (), file: str = "") -> VerifiedCertificate:
        """Check ``cert`` for ``purpose`` as of ``at``; CRL freshness is judged at ``now`` (default ``at``).

        ``chain`` holds untrusted intermediates that came with the certificate; ``file`` names it in
        errors. Raises ``CertificateError``.
        """
        at = utc(at)
        now = utc(now) if now is not None else at
        where = file or common_name(cert.subject)
        what = str(purpose)

        def refuse(code: str, reason: str) -> CertificateError:
            return CertificateError(where, what, code, reason)

        problem = profile_problem(cert, purpose)
        if problem:
            raise refuse("wrong-purpose", f"certificate {problem}")
        if node_id is not None and node_ids(cert) != [node_id]:
            named = ", ".join(node_ids(cert)) or "no node id"
            raise refuse("name-mismatch",
                         f"certificate names {named} in its subjectAltName, not node {node_id!r} (expected "
                         f"exactly one node URI, urn:jgw:node:{node_id}; the CN and dNSNames do not count)")
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        if at > na:
            raise refuse("expired", f"certificate expired at {_show(na)} (checked at {_show(at)})")
        if at < nb - self.clock_skew:
            raise refuse("not-yet-valid", f"certificate is valid only from {_show(nb)}, "
                                          f"more than {self.clock_skew} after {_show(at)}; check the clock")
        moment = max(at, nb)
        verified = self._openssl(cert, chain, moment, crl=False, refuse=refuse)
        relevant: list[LoadedCrl] = []
        for child, issuer in itertools.pairwise(verified):
            loaded = self.crl_for(issuer)
            if loaded is None:
                if child == cert or self.crl_for_every_ca:
                    raise refuse("crl-missing", f"no CRL installed for CA {common_name(issuer.subject)!r}; "
                                                f"put its current CRL into {self.directory / 'crls'}")
                continue
            if loaded.next_update < now:
                raise refuse("crl-expired",
                             f"the CRL of CA {loaded.issuer.name!r} ({loaded.path}) expired at "
                             f"{_show(loaded.next_update)}; install the current CRL")
            relevant.append(loaded)
        if all(loaded.last_update <= moment for loaded in relevant):
            self._openssl(cert, chain, moment, crl=True, refuse=refuse)
        else:
            _revocation_as_of(verified, relevant, moment, refuse)
        return VerifiedCertificate(cert, purpose, tuple(verified), node_id)

    def verdict(self, verified: VerifiedCertificate) -> Verdict:
        """The time-dependent part of ``verified``, precomputed for the per-message path: the window in
        which its whole chain is valid, until when the CRLs it depends on are current, and from when
        (if ever) it counts as revoked. The CRLs of a store never change, so this stays true."""
        chain = verified.chain
        crl_until: dt.datetime | None = None
        crl_issuer = ""
        revoked: dt.datetime | None = None
        for child, issuer in itertools.pairwise(chain):
            loaded = self.crl_for(issuer)
            if loaded is None:
                continue
            if crl_until is None or loaded.next_update < crl_until:
                crl_until, crl_issuer = loaded.next_update, loaded.issuer.name
            entry = loaded.crl.get_revoked_certificate_by_serial_number(child.serial_number)
            if entry is not None:
                when = revoked_from(entry)
                revoked = when if revoked is None else min(revoked, when)
        return Verdict(
            subject=common_name(verified.cert.subject), purpose=verified.purpose,
            valid_from=max(c.not_valid_before_utc for c in chain) - self.clock_skew,
            valid_until=min(c.not_valid_after_utc for c in chain), crl_until=crl_until, crl_issuer=crl_issuer,
            revoked_from=revoked)

    def _openssl(self, cert: x509.Certificate, chain: Sequence[x509.Certificate], moment: dt.datetime,
                 *, crl: bool, refuse: _Refuse) -> list[x509.Certificate]:
        store = crypto.X509Store()
        for ca in self._x509:
            store.add_cert(ca)
        untrusted = [crypto.X509.from_cryptography(c) for c in chain]
        untrusted += [x for x, ca in zip(self._x509, self.cas, strict=True) if not ca.anchor]
        if crl:
            for loaded in self.crls:
                store.add_crl(loaded.crl)
            flags = crypto.X509StoreFlags.CRL_CHECK
            if self.crl_for_every_ca:
                flags |= crypto.X509StoreFlags.CRL_CHECK_ALL
            store.set_flags(flags)
        store.set_time(moment)
        ctx = crypto.X509StoreContext(store, crypto.X509.from_cryptography(cert), untrusted)
        try:
            return [x.to_cryptography() for x in ctx.get_verified_chain()]
        except crypto.X509StoreContextError as exc:
            number, text = (exc.errors[0], str(exc.errors[2])) if len(exc.errors) >= 3 else (0, str(exc))
            code = _OPENSSL_CODES.get(int(number), "unknown-ca")
            at_fault = exc.certificate.to_cryptography() if exc.certificate is not None else cert
            who = ("certificate" if at_fault == cert
                   else f"chain certificate {common_name(at_fault.subject)!r}")
            reason = f"{who}: {text}"
            if code == "unknown-ca":
                reason = (f"issuer {common_name(cert.issuer)!r} is not a configured trust anchor or does not "
                          f"chain to one ({text})")
            elif code == "revoked":
                reason = f"{who} (serial {at_fault.serial_number:x}) is revoked by its issuer's CRL"
            raise refuse(code, reason) from exc


def check_crl(path: Path, crl: x509.CertificateRevocationList, cas: Iterable[TrustedCa], now: dt.datetime,
              clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW) -> LoadedCrl:
    """A CRL is usable when a configured CA with its issuer name signed it and it is current at ``now``."""
    named = [ca for ca in cas if ca.cert.subject == crl.issuer]
    if not named:
        raise CertificateError(str(path), "crl", "crl-bad-signature",
                               f"issued by {common_name(crl.issuer)!r}, which is not a configured CA")
    issuer = next((ca for ca in named if _crl_signed_by(crl, ca.cert)), None)
    if issuer is None:
        raise CertificateError(str(path), "crl", "crl-bad-signature",
                               f"names CA {common_name(crl.issuer)!r} as issuer but its signature does not "
                               f"verify with that CA's key (signed by another CA?)")
    nu = crl.next_update_utc
    if nu is None:
        raise CertificateError(str(path), "crl", "crl-expired",
                               "has no nextUpdate, so its freshness is unknown")
    if nu < now:
        raise CertificateError(str(path), "crl", "crl-expired",
                               f"CRL of CA {issuer.name!r} expired at {_show(nu)}; install the current CRL")
    if crl.last_update_utc > now + clock_skew:
        raise CertificateError(str(path), "crl", "crl-not-yet-valid",
                               f"CRL of CA {issuer.name!r} is dated {_show(crl.last_update_utc)}, in the "
                               f"future; check the clock")
    return LoadedCrl(path, crl, issuer)


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, InvalidSignature):
        return False


def _check_ca(path: Path, cert: x509.Certificate, what: str) -> None:
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise CertificateError(str(path), what, "invalid-ca",
                               f"{common_name(cert.subject)!r} is not a CA certificate "
                               f"(basicConstraints CA:TRUE)")


def _revocation_as_of(chain: Sequence[x509.Certificate], crls: Sequence[LoadedCrl], moment: dt.datetime,
                      refuse: _Refuse) -> None:
    by_issuer = {loaded.issuer.cert.subject.public_bytes(): loaded for loaded in crls}
    for child, issuer in itertools.pairwise(chain):
        loaded = by_issuer.get(issuer.subject.public_bytes())
        if loaded is None:
            continue
        entry = loaded.crl.get_revoked_certificate_by_serial_number(child.serial_number)
        if entry is None:
            continue
        if revoked_from(entry) <= moment:
            raise refuse("revoked",
                         f"certificate {common_name(child.subject)!r} (serial {child.serial_number:x}) "
                         f"was revoked at {_show(entry.revocation_date_utc)}")


def _files(directory: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def _show(moment: dt.datetime) -> str:
    return utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")
