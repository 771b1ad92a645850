"""Installing what a CA or a peer sent: each file checked before it lands anywhere it is used.

- A node certificate goes into ``staging/`` only, after the pre-flight checks: chain to an anchor,
  CRL, purpose profile, key match (the staged key from ``jgw pki csr``, or ``--key``), validity,
  node id in the SAN. Without ``--purpose`` the slot is the one whose staged key the certificate
  carries. Nothing is live until ``jgw certs rotate``.
- A peer's certificate or hybrid key statement goes into ``peers/<id>/``; the one it replaces is
  kept as ``<slot>.previous.pem`` for the overlap while the peer rotates.
- A CRL goes into ``trust/crls/`` as PEM, named after its CA's anchor file, replacing the older
  CRL of that CA; an older CRL than the installed one is refused (it would un-revoke).
- A trust anchor goes into ``trust/anchors/``; its SHA-256 fingerprint is printed so staff can
  compare it with the one the CA published.

``dry_run`` runs every check and writes nothing ("simulated").

Security: reads files staff bring from a CA or a peer site; trusts none of them until verified.
Writes only under the certs directory, atomically, keys 0600.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

from gateway.config import NAME_RE
from gateway.errors import UsageError
from gateway.pki import hybrid
from gateway.pki.errors import CertificateError
from gateway.pki.files import (
    key_matches,
    pem_certificates,
    pem_private_key,
    read_certificates,
    read_crl,
    read_file,
    read_private_key,
    spki,
    write_atomic,
)
from gateway.pki.generation import SLOT_BY_NAME, SLOTS, Slot
from gateway.pki.layout import CertsDir, cert_name, key_name
from gateway.pki.peers import HYBRID_STEM, PEER_SLOTS
from gateway.pki.purpose import Purpose, common_name, profile_problem
from gateway.pki.rotation import ensure_staging
from gateway.pki.trust import TrustStore, VerifiedCertificate, check_crl, utc


@dataclass
class Installed:
    source: Path
    target: Path
    lines: list[str] = field(default_factory=list)
    simulated: bool = False


def _summary(v: VerifiedCertificate, now: dt.datetime) -> str:
    days = (v.not_after - now).total_seconds() / 86400
    return (f"{common_name(v.cert.subject)} serial {v.cert.serial_number:x}, valid until "
            f"{v.not_after:%Y-%m-%d} ({days:.0f} days), issued by {v.issuer_name}, "
            f"trusted via {v.anchor_name}")


def _trust(cd: CertsDir, now: dt.datetime) -> TrustStore:
    return TrustStore.load(cd.trust, now)


# -- this node's certificates ----------------------------------------------------------------------------


def install_node_certificate(cd: CertsDir, node_id: str, source: Path, now: dt.datetime, *,
                             slot_name: str | None = None, key_file: Path | None = None,
                             dry_run: bool = False) -> Installed:
    """Check ``source`` and put it into staging. Call under ``cd.locked()``."""
    now = utc(now)
    certs = read_certificates(source)
    leaf = certs[0]
    staging = cd.staging
    if not dry_run:
        staging, _ = ensure_staging(cd)
    key_dir = staging if staging.is_dir() else cd.live_dir()
    slot = SLOT_BY_NAME[slot_name] if slot_name else _slot_by_key(key_dir, leaf, source)
    if key_file is not None:
        key = read_private_key(key_file)
        if not key_matches(leaf, key):
            raise CertificateError(str(key_file), slot.name, "key-mismatch",
                                   f"this key does not belong to the certificate in {source}")
    else:
        key_path = key_dir / key_name(slot.name)
        key = read_private_key(key_path)
        if not key_matches(leaf, key):
            raise CertificateError(str(source), slot.name, "key-mismatch",
                                   f"the certificate does not carry the key in {key_path} (made by "
                                   f"jgw pki csr); was it issued for another request?")
    verified = _verify_slot(_trust(cd, now), slot, certs, source, node_id, now)
    out = Installed(source, staging / cert_name(slot.name), simulated=dry_run)
    if dry_run:
        out.lines.append(f"simulated: {slot.name} certificate passed every check: {_summary(verified, now)}")
        return out
    write_atomic(out.target, pem_certificates(certs))
    if key_file is not None:
        write_atomic(staging / key_name(slot.name), pem_private_key(key), 0o600)
    out.lines.append(f"staged {slot.name} certificate: {_summary(verified, now)}")
    if slot.purpose is Purpose.SIGNING and (staging / hybrid.STATEMENT_FILE).exists():
        out.lines.append("the signing key changed: re-sign the hybrid key statement with jgw pki hybrid "
                         "before jgw certs rotate")
    return out


def _slot_by_key(key_dir: Path, leaf: x509.Certificate, source: Path) -> Slot:
    wanted = spki(leaf.public_key())
    for slot in SLOTS:
        path = key_dir / key_name(slot.name)
        if path.exists() and spki(read_private_key(path).public_key()) == wanted:
            return slot
    raise CertificateError(str(source), "certificate", "key-mismatch",
                           f"carries none of the keys in {key_dir}; create the key and request with "
                           f"jgw pki csr, or name the key with --key")


def _verify_slot(trust: TrustStore, slot: Slot, certs: list[x509.Certificate], source: Path, node_id: str,
                 now: dt.datetime) -> VerifiedCertificate:
    verified = trust.verify(certs[0], slot.purpose, at=now, node_id=node_id, chain=certs[1:],
                            file=str(source))
    if not slot.key_ok(certs[0].public_key()):
        raise CertificateError(str(source), slot.name, "wrong-purpose",
                               f"the {slot.name} certificate must carry {slot.key_desc}")
    return verified


# -- peers ------------------------------------------------------------------------------------------------


def install_peer_file(cd: CertsDir, peer_id: str, source: Path, now: dt.datetime, *,
                      slot_name: str | None = None, dry_run: bool = False) -> Installed:
    """Check a peer's certificate or hybrid key statement and install it under peers/<id>/."""
    now = utc(now)
    if not NAME_RE.match(peer_id):
        raise UsageError(f"--peer {peer_id!r}: a node id must match {NAME_RE.pattern}")
    directory = cd.peers / peer_id
    if source.suffix == ".json":
        return _install_statement(cd, directory, peer_id, source, now, dry_run)
    certs = read_certificates(source)
    slot = SLOT_BY_NAME[slot_name] if slot_name else _peer_slot(source, certs[0])
    if slot.name not in PEER_SLOTS:
        raise UsageError(f"a peer has no {slot.name} slot (peers hold {', '.join(PEER_SLOTS)})")
    verified = _verify_slot(_trust(cd, now), slot, certs, source, peer_id, now)
    target = directory / cert_name(slot.name)
    out = Installed(source, target, simulated=dry_run)
    if target.exists() and read_certificates(target)[0] == certs[0]:
        out.lines.append(f"peer {peer_id} {slot.name}: already installed, nothing to do")
        return out
    if dry_run:
        out.lines.append(f"simulated: peer {peer_id} {slot.name} certificate passed every check: "
                         f"{_summary(verified, now)}")
        return out
    _replace_keeping_previous(target, directory / f"{slot.name}.previous.pem", pem_certificates(certs))
    out.lines.append(f"installed peer {peer_id} {slot.name}: {_summary(verified, now)}")
    return out


def _peer_slot(source: Path, leaf: x509.Certificate) -> Slot:
    stem = source.name.removesuffix(".pem").removesuffix(".previous")
    if stem in PEER_SLOTS:
        return SLOT_BY_NAME[stem]
    if isinstance(leaf.public_key(), mldsa.MLDSA65PublicKey):
        return SLOT_BY_NAME["signing-mldsa65"]
    for name in ("signing", "encryption"):
        if profile_problem(leaf, SLOT_BY_NAME[name].purpose) is None:
            return SLOT_BY_NAME[name]
    raise CertificateError(str(source), "peer certificate", "wrong-purpose",
                           "fits neither the signing nor the encryption profile; "
                           "name the slot with --purpose")


def _install_statement(cd: CertsDir, directory: Path, peer_id: str, source: Path, now: dt.datetime,
                       dry_run: bool) -> Installed:
    trust = _trust(cd, now)
    signers = []
    for slot in ("signing", "signing-mldsa65"):
        for suffix in (".pem", ".previous.pem"):
            path = directory / f"{slot}{suffix}"
            if path.exists():
                certs = read_certificates(path)
                try:
                    signers.append(_verify_slot(trust, SLOT_BY_NAME[slot], certs, path, peer_id, now).cert)
                except CertificateError:
                    continue
    statement = hybrid.read_statement(source, peer_id, signers)
    target = directory / hybrid.STATEMENT_FILE
    out = Installed(source, target, simulated=dry_run)
    if dry_run:
        out.lines.append(f"simulated: peer {peer_id} hybrid key statement {statement.key_id} "
                         f"passed every check")
        return out
    _replace_keeping_previous(target, directory / f"{HYBRID_STEM}.previous.json",
                              read_file(source, "hybrid key statement"))
    out.lines.append(f"installed peer {peer_id} hybrid key statement (key id {statement.key_id})")
    return out


def _replace_keeping_previous(target: Path, previous: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    write_atomic(tmp, data)
    if target.exists():
        os.replace(target, previous)
    os.replace(tmp, target)


# -- trust ------------------------------------------------------------------------------------------------


def install_crl(cd: CertsDir, source: Path, now: dt.datetime, *, dry_run: bool = False) -> Installed:
    now = utc(now)
    problems: list[CertificateError] = []
    trust = TrustStore.load(cd.trust, now, problems=problems)  # tolerate the expired CRL being replaced
    crl = read_crl(source)
    loaded = check_crl(source, crl, trust.cas, now, trust.clock_skew)
    installed = [c for c in _crls_of(cd, loaded.issuer.cert)]
    for path, old in installed:
        if old.last_update_utc > crl.last_update_utc:
            raise CertificateError(str(source), "crl", "crl-older",
                                   f"dated {crl.last_update_utc:%Y-%m-%d %H:%M}Z, older than the installed "
                                   f"{path.name} ({old.last_update_utc:%Y-%m-%d %H:%M}Z); installing "
                                   f"it would un-revoke certificates")
    target = cd.crls / f"{loaded.issuer.path.stem}.pem"
    out = Installed(source, target, simulated=dry_run)
    nu = loaded.next_update
    summary = (f"CRL of {loaded.issuer.name}: {len(list(crl))} revoked, next update {nu:%Y-%m-%d %H:%M}Z "
               f"({(nu - now).total_seconds() / 3600:.0f} h)")
    if dry_run:
        out.lines.append(f"simulated: {summary}")
        return out
    cd.crls.mkdir(parents=True, exist_ok=True)
    write_atomic(target, crl.public_bytes(serialization.Encoding.PEM))
    for path, _ in installed:
        if path != target:
            path.unlink(missing_ok=True)
    out.lines.append(f"installed {summary}")
    return out


def _crls_of(cd: CertsDir, ca: x509.Certificate) -> list[tuple[Path, x509.CertificateRevocationList]]:
    found = []
    if cd.crls.is_dir():
        for path in sorted(cd.crls.iterdir()):
            try:
                crl = read_crl(path)
            except CertificateError:
                continue
            if crl.issuer == ca.subject:
                found.append((path, crl))
    return found


def install_anchor(cd: CertsDir, source: Path, now: dt.datetime, *, dry_run: bool = False) -> Installed:
    now = utc(now)
    certs = read_certificates(source, "trust anchor")
    if len(certs) != 1:
        raise CertificateError(str(source), "trust anchor", "layout", "install one CA certificate per file")
    cert = certs[0]
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CertificateError(str(source), "trust anchor", "invalid-ca", "not a CA certificate")
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateError(str(source), "trust anchor", "invalid-ca",
                               "not self-signed; an intermediate CA goes into trust/intermediates/") from exc
    if cert.not_valid_after_utc < now:
        raise CertificateError(str(source), "trust anchor", "expired",
                               f"expired at {cert.not_valid_after_utc:%Y-%m-%d}")
    target = cd.anchors / (source.stem + ".pem")
    out = Installed(source, target, simulated=dry_run)
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    line = (f"trust anchor {common_name(cert.subject)!r}, valid until {cert.not_valid_after_utc:%Y-%m-%d}, "
            f"SHA-256 fingerprint {fingerprint}: compare it with the one your CA published")
    if target.exists():
        raise CertificateError(str(target), "trust anchor", "layout",
                               "a file of that name is already installed")
    if dry_run:
        out.lines.append(f"simulated: {line}")
        return out
    cd.anchors.mkdir(parents=True, exist_ok=True)
    write_atomic(target, pem_certificates([cert]))
    out.lines.append(f"installed {line}")
    return out


#: What peers need to verify our signatures (send before a rotation) and to encrypt to us (after).
SIGNING_EXPORT = (cert_name("signing"), cert_name("signing-mldsa65"))
ENCRYPTION_EXPORT = (cert_name("encryption"), hybrid.STATEMENT_FILE)


def export_public(generation: Path, dest: Path, *, signing_only: bool = False) -> list[Path]:
    """Copy a generation's public material (what peers install) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in SIGNING_EXPORT if signing_only else SIGNING_EXPORT + ENCRYPTION_EXPORT:
        src = generation / name
        if src.is_file():
            shutil.copyfile(src, dest / name)
            copied.append(dest / name)
    return copied
