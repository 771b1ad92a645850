"""Throw-away key material for tests, benchmarks and test vectors: a tiny CA and node keyrings.

Everything here is generated fresh in memory (or written to a directory the caller names, with
private keys at mode 0600). It is not the development PKI of ``jgw pki init-dev`` (that lives in
``gateway.pki``); it exists so envelope tests, the relay's sealed-route tests and the benchmark can
build Keyrings without touching ``certs/``.

Security: makes private keys. Never use its output outside tests; never commit it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.keyring import (
    NODE_URI_PREFIX,
    PURPOSE_ENCRYPTION,
    PURPOSE_SIGNING,
    CaTrust,
    DecryptionKey,
    Keyring,
    PeerKeys,
    SigningIdentity,
)

SigningPublic = ec.EllipticCurvePublicKey | mldsa.MLDSA65PublicKey
AnyPublic = SigningPublic | mlkem.MLKEM768PublicKey | x25519.X25519PublicKey


def _key_usage(**bits: bool) -> x509.KeyUsage:
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


@dataclass(frozen=True)
class TestCa:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    __test__ = False  # not a pytest class

    @classmethod
    def create(cls, name: str = "jgw test CA (throw-away)", *, now: dt.datetime | None = None,
               days: int = 3650) -> TestCa:
        now = now or dt.datetime.now(dt.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
                .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def issue(self, public_key: AnyPublic, node_id: str, purpose: str, *,
              not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
              san: Sequence[x509.GeneralName] | None = None) -> x509.Certificate:
        """An end-entity certificate for ``node_id`` with the purpose's KeyUsage, bound to the node as jgw
        binds them: CN = node id and the one subjectAltName URI urn:jgw:node:<id>. ``san`` replaces the
        subjectAltName (an empty list leaves it out), for tests of the binding rule."""
        now = dt.datetime.now(dt.UTC)
        not_before = not_before or now - dt.timedelta(days=1)
        not_after = not_after or now + dt.timedelta(days=365)
        signing = purpose == PURPOSE_SIGNING
        if purpose not in (PURPOSE_SIGNING, PURPOSE_ENCRYPTION):
            raise ValueError(purpose)
        names = list(san) if san is not None else [x509.UniformResourceIdentifier(NODE_URI_PREFIX + node_id)]
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
                   .issuer_name(self.cert.subject).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(not_before)
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(digital_signature=signing, key_agreement=not signing),
                                  critical=True))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_tls(self, public_key: ec.EllipticCurvePublicKey, cn: str, *, server: bool,
                  days: int = 2) -> x509.Certificate:
        """A TLS server (SAN localhost, 127.0.0.1) or client certificate."""
        now = dt.datetime.now(dt.UTC)
        san: list[x509.GeneralName] = [x509.DNSName(cn)]
        if server:
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        eku = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.cert.subject).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .add_extension(_key_usage(digital_signature=True), critical=True)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
                .sign(self.key, hashes.SHA256()))

    def crl(self, revoked_serials: Iterable[int] = (), *,
            entries: Iterable[tuple[int, dt.datetime, x509.ReasonFlags | None]] = ()
            ) -> x509.CertificateRevocationList:
        """A CRL revoking ``revoked_serials`` now with no reason, and ``entries`` (serial, revocation
        date, reason or None) as given."""
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject)
                   .last_update(now - dt.timedelta(minutes=1)).next_update(now + dt.timedelta(days=7)))
        for serial, when, reason in [*((s, now, None) for s in revoked_serials), *entries]:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.key, hashes.SHA256())


@dataclass(frozen=True)
class NodeKeys:
    """One node's private keys and certificates (all generations, oldest first)."""

    node_id: str
    sign_key: ec.EllipticCurvePrivateKey
    sign_cert: x509.Certificate
    mldsa_key: mldsa.MLDSA65PrivateKey | None
    mldsa_cert: x509.Certificate | None
    enc_p256: tuple[ec.EllipticCurvePrivateKey, ...]
    enc_hybrid: tuple[tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey], ...]
    old_sign_certs: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create(cls, ca: TestCa, node_id: str, *, pq: bool = True, sign_not_after: dt.datetime | None = None,
               sign_not_before: dt.datetime | None = None) -> NodeKeys:
        sign_key = ec.generate_private_key(ec.SECP256R1())
        sign_cert = ca.issue(sign_key.public_key(), node_id, PURPOSE_SIGNING, not_before=sign_not_before,
                             not_after=sign_not_after)
        mkey = mldsa.MLDSA65PrivateKey.generate() if pq else None
        mcert = ca.issue(mkey.public_key(), node_id, PURPOSE_SIGNING, not_before=sign_not_before,
                         not_after=sign_not_after) if mkey else None
        hybrid = ((mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()),) if pq else ()
        p256 = (ec.generate_private_key(ec.SECP256R1()),)
        return cls(node_id, sign_key, sign_cert, mkey, mcert, p256, hybrid)

    def identity(self) -> SigningIdentity:
        return SigningIdentity.create(self.sign_key, self.sign_cert, self.mldsa_key, self.mldsa_cert)

    def decryption_keys(self) -> list[DecryptionKey]:
        keys = [DecryptionKey.p256(k) for k in self.enc_p256]
        keys += [DecryptionKey.hybrid(m, x) for m, x in self.enc_hybrid]
        return keys

    def as_peer(self) -> PeerKeys:
        """What another node knows of this one: certificates and public encryption keys."""
        certs = [*self.old_sign_certs, self.sign_cert] + ([self.mldsa_cert] if self.mldsa_cert else [])
        return PeerKeys.build(self.node_id, certs, [k.public for k in self.decryption_keys()])

    def keyring(self, peers: Iterable[NodeKeys], trust: CaTrust) -> Keyring:
        return Keyring.build(self.node_id, self.identity(), trust, self.decryption_keys(),
                             [p.as_peer() for p in peers if p.node_id != self.node_id])


def keyrings(node_ids: Sequence[str], *,
             pq: bool = True) -> tuple[TestCa, dict[str, NodeKeys], dict[str, Keyring]]:
    """A CA, every node's keys, and each node's Keyring knowing all the others."""
    ca = TestCa.create()
    nodes = {n: NodeKeys.create(ca, n, pq=pq) for n in node_ids}
    trust = CaTrust([ca.cert])
    return ca, nodes, {n: k.keyring(nodes.values(), trust) for n, k in nodes.items()}


def write_private_pem(path: Path, *keys: ec.EllipticCurvePrivateKey | mldsa.MLDSA65PrivateKey
                      | mlkem.MLKEM768PrivateKey | x25519.X25519PrivateKey) -> Path:
    """Write PKCS#8 PEM block(s) to ``path`` at mode 0600 (created that way, never wider)."""
    data = b"".join(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()) for k in keys)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def write_public_pem(path: Path, *items: x509.Certificate | AnyPublic) -> Path:
    blocks = []
    for item in items:
        if isinstance(item, x509.Certificate):
            blocks.append(item.public_bytes(serialization.Encoding.PEM))
        else:
            blocks.append(item.public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    path.write_bytes(b"".join(blocks))
    return path


def write_node_files(directory: Path, node: NodeKeys) -> Mapping[str, Path]:
    """A node's files as the ``jgw envelope`` CLI takes them: sign.key/sign.crt, mldsa.key/mldsa.crt,
    enc.key (P-256), enc-pq.key (ML-KEM-768 + X25519 in one file), and peer.pem (everything a peer
    needs: signing certificates and public encryption keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {"sign.key": write_private_pem(directory / "sign.key", node.sign_key),
           "sign.crt": write_public_pem(directory / "sign.crt", node.sign_cert),
           "enc.key": write_private_pem(directory / "enc.key", node.enc_p256[-1])}
    public: list[x509.Certificate | AnyPublic] = [node.sign_cert, node.enc_p256[-1].public_key()]
    if node.mldsa_key is not None and node.mldsa_cert is not None:
        out["mldsa.key"] = write_private_pem(directory / "mldsa.key", node.mldsa_key)
        out["mldsa.crt"] = write_public_pem(directory / "mldsa.crt", node.mldsa_cert)
        public.append(node.mldsa_cert)
    if node.enc_hybrid:
        m, x = node.enc_hybrid[-1]
        out["enc-pq.key"] = write_private_pem(directory / "enc-pq.key", m, x)
        public += [m.public_key(), x.public_key()]
    out["peer.pem"] = write_public_pem(directory / "peer.pem", *public)
    return out


@dataclass
class Issued:
    cert: Path
    key: Path


class TlsCa:
    """The test CA writing TLS files: its certificate, and server or client certificates with keys (0600)."""

    def __init__(self, directory: Path, cn: str = "jgw-test-ca") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = TestCa.create(cn, days=2)
        self.cert = self.ca.cert
        self.cert_path = write_public_pem(self.dir / f"{cn}.pem", self.cert)

    def issue(self, cn: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.ca.issue_tls(key.public_key(), cn, server=server)
        return Issued(write_public_pem(self.dir / f"{cn}.pem", cert), write_private_pem(self.dir / f"{cn}.key", key))
