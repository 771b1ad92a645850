"""A throw-away development CA: certificates for tests, the demo and rehearsing a rotation.

DEVELOPMENT ONLY. Its key sits unencrypted next to its certificate and every certificate it issues
says so in its subject (O=jgw DEVELOPMENT ONLY). A deployment's certificates come from the
団体's own CA (or the LGPKI-style process it follows): see ops/runbooks/cert-rotation.en.md.

The issued profiles are those of ``gateway.pki.purpose``; tests pass ``key_usage``/``eku``/dates to
make deliberately bad certificates.

Security: writes keys 0600 into a directory the caller names; talks to nothing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki.files import (
    pem_certificates,
    read_certificate,
    read_private_key,
    write_atomic,
    write_private_key,
)
from gateway.pki.purpose import NODE_URI_PREFIX, Purpose

DEV_ORG = "jgw DEVELOPMENT ONLY"
DEV_NOTICE = """\
DEVELOPMENT ONLY: made by `jgw pki init-dev`.
These keys and certificates are throw-away test material. The CA key is stored unencrypted in ca/.
Never use them on a network that carries real data; never copy them to a production node.
"""


def key_usage(*, digital_signature: bool = False, content_commitment: bool = False,
              key_encipherment: bool = False, data_encipherment: bool = False, key_agreement: bool = False,
              key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=content_commitment,
                         key_encipherment=key_encipherment, data_encipherment=data_encipherment,
                         key_agreement=key_agreement, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
                         encipher_only=False, decipher_only=False)


PROFILE_KEY_USAGE: dict[Purpose, x509.KeyUsage] = {
    Purpose.TLS_CLIENT: key_usage(digital_signature=True),
    Purpose.TLS_SERVER: key_usage(digital_signature=True),
    Purpose.SIGNING: key_usage(digital_signature=True, content_commitment=True),
    Purpose.ENCRYPTION: key_usage(key_agreement=True),
}
PROFILE_EKU: dict[Purpose, list[x509.ObjectIdentifier] | None] = {
    Purpose.TLS_CLIENT: [ExtendedKeyUsageOID.CLIENT_AUTH],
    Purpose.TLS_SERVER: [ExtendedKeyUsageOID.SERVER_AUTH],
    Purpose.SIGNING: None,
    Purpose.ENCRYPTION: None,
}


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str, org: str = DEV_ORG) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class DevCa:
    """A CA whose state (next CRL number, revoked serials) lives in ``directory``."""

    directory: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    revoked: dict[int, str] = field(default_factory=dict)
    crl_number: int = 1

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.directory / "crl.pem"

    @classmethod
    def create(cls, directory: Path, now: dt.datetime, *, name: str = "jgw dev CA",
               days: int = 3650, key: ec.EllipticCurvePrivateKey | None = None) -> DevCa:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = key or new_key()
        subject = _name(name)
        pub = key.public_key()
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(pub)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                .add_extension(key_usage(key_cert_sign=True, crl_sign=True), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
                .sign(key, hashes.SHA256()))
        ca = cls(directory, cert, key)
        write_private_key(directory / "ca.key", key)
        write_atomic(ca.cert_path, pem_certificates([cert]))
        (directory / "DEVELOPMENT-ONLY.txt").write_text(DEV_NOTICE)
        ca.save()
        return ca

    @classmethod
    def open(cls, directory: Path) -> DevCa:
        state = json.loads((directory / "state.json").read_text())
        key = read_private_key(directory / "ca.key")
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / 'ca.key'}: not an EC key")
        return cls(directory, read_certificate(directory / "ca.pem"), key,
                   {int(k): v for k, v in state["revoked"].items()}, int(state["crl_number"]))

    def save(self) -> None:
        state = {"revoked": {str(k): v for k, v in self.revoked.items()}, "crl_number": self.crl_number}
        write_atomic(self.directory / "state.json", json.dumps(state, indent=1).encode())

    @property
    def name(self) -> str:
        return str(self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)

    def issue(self, public_key: CertificatePublicKeyTypes, purpose: Purpose, now: dt.datetime, *,
              node_id: str | None = None, cn: str | None = None, days: float = 90,
              not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              hosts: Sequence[str] = (), usage: x509.KeyUsage | None = None,
              eku: list[x509.ObjectIdentifier] | None = None, no_eku: bool = False,
              ca: bool = False) -> x509.Certificate:
        """Issue a certificate for ``purpose``. ``node_id`` goes into the SAN as urn:jgw:node:ID;
        ``hosts`` (DNS names or IP addresses) into the SAN of a server certificate."""
        sans: list[x509.GeneralName] = []
        if node_id:
            sans.append(x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id))
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        nb = not_before or now - dt.timedelta(minutes=10)
        na = not_after or now + dt.timedelta(days=days)
        builder = (x509.CertificateBuilder().subject_name(_name(cn or node_id or purpose.value))
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(nb).not_valid_after(na)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(usage or PROFILE_KEY_USAGE[purpose], critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        ekus = None if no_eku else (eku if eku is not None else PROFILE_EKU[purpose])
        if ekus:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_csr(self, csr: x509.CertificateSigningRequest, purpose: Purpose, now: dt.datetime, *,
                  node_id: str, days: float = 90) -> x509.Certificate:
        """Sign a CSR as the dev CA: the profile comes from ``purpose``, the SAN from ``node_id``,
        and only the public key from the request (as a real CA does after its own checks). A request
        that asks for another node (its subjectAltName URI urn:jgw:node:ID) is refused."""
        if not csr.is_signature_valid:
            raise ValueError("the CSR's self-signature does not verify")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            asked = [u.removeprefix(NODE_URI_PREFIX) for u in san.get_values_for_type(x509.UniformResourceIdentifier)
                     if u.startswith(NODE_URI_PREFIX)]
        except x509.ExtensionNotFound:
            asked = []
        if asked and asked != [node_id]:
            raise ValueError(f"the request names node {', '.join(asked)}, not {node_id}; a certificate "
                             f"binds one node (subjectAltName URI {NODE_URI_PREFIX}<node-id>)")
        return self.issue(csr.public_key(), purpose, now, node_id=node_id, days=days)

    def revoke(self, serial: int, reason: str = "superseded") -> None:
        self.revoked[serial] = reason
        self.save()

    def make_crl(self, now: dt.datetime, *, next_update: dt.datetime | None = None,
                 last_update: dt.datetime | None = None, signer: ec.EllipticCurvePrivateKey | None = None,
                 revoked_at: dt.datetime | None = None) -> x509.CertificateRevocationList:
        """A CRL listing every revoked serial; ``signer`` lets a test sign it with a wrong key."""
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(last_update or now - dt.timedelta(minutes=10))
                   .next_update(next_update or now + dt.timedelta(days=7))
                   .add_extension(x509.CRLNumber(self.crl_number), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       self.key.public_key()), critical=False))
        for serial, reason in sorted(self.revoked.items()):
            entry = (x509.RevokedCertificateBuilder().serial_number(serial)
                     .revocation_date(revoked_at or now - dt.timedelta(minutes=5)))
            if reason in x509.ReasonFlags.__members__:
                entry = entry.add_extension(x509.CRLReason(x509.ReasonFlags[reason]), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        self.crl_number += 1
        self.save()
        return builder.sign(signer or self.key, hashes.SHA256())

    def write_crl(self, now: dt.datetime, *, next_update: dt.datetime | None = None) -> Path:
        """Write a fresh CRL to ca/crl.pem (the file a node installs with jgw certs install --crl)."""
        crl = self.make_crl(now, next_update=next_update)
        write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_path
