"""The keyring: one key-id rule, consistent containers, and the CA trust hook's refusals."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519
from cryptography.x509.oid import NameOID

from gateway.keyring import (
    PURPOSE_ENCRYPTION,
    PURPOSE_SIGNING,
    CaTrust,
    CertificateUntrusted,
    DecryptionKey,
    EncryptionKey,
    Keyring,
    KeyringError,
    PeerKeys,
    SigningIdentity,
    hybrid_key_id,
    key_id,
)
from tests.lab.testca import NodeKeys, TestCa, _key_usage

from .conftest import Pki

NOW = dt.datetime.now(dt.UTC)


def test_key_id_matches_openssl(tmp_path: Path, pki: Pki) -> None:
    """key_id is SHA-256 over the DER SPKI, first 16 bytes, as the openssl CLI computes it."""
    cert = pki.nodes["city-a"].sign_cert
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pub = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-pubkey"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, check=True,
                         capture_output=True).stdout
    assert key_id(cert.public_key()) == hashlib.sha256(der).hexdigest()[:32]  # type: ignore[arg-type]


def test_hybrid_key_id_orders_mlkem_first() -> None:
    """The hybrid id covers both SPKIs, ML-KEM then X25519, and differs from either key's own id."""
    m, x = mlkem.MLKEM768PrivateKey.generate().public_key(), x25519.X25519PrivateKey.generate().public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = m.public_bytes(serialization.Encoding.DER, spki) + x.public_bytes(serialization.Encoding.DER, spki)
    assert hybrid_key_id(m, x) == hashlib.sha256(der).hexdigest()[:32]
    assert hybrid_key_id(m, x) not in (key_id(m), key_id(x))
    assert EncryptionKey.hybrid(m, x).key_id == hybrid_key_id(m, x)


def test_signing_identity_checks_its_parts(pki: Pki) -> None:
    """A private key must match its certificate; ML-DSA comes as key and certificate together."""
    a, b = pki.nodes["city-a"], pki.nodes["dc-b"]
    ident = SigningIdentity.create(a.sign_key, a.sign_cert, a.mldsa_key, a.mldsa_cert)
    assert ident.key_id == key_id(a.sign_key.public_key())
    assert a.mldsa_key is not None and ident.mldsa_key_id == key_id(a.mldsa_key.public_key())
    p384 = ec.generate_private_key(ec.SECP384R1())
    for args in [(a.sign_key, b.sign_cert), (a.sign_key, a.sign_cert, a.mldsa_key, b.mldsa_cert),
                 (a.sign_key, a.sign_cert, a.mldsa_key, None), (p384, a.sign_cert)]:
        with pytest.raises(KeyringError):
            SigningIdentity.create(*args)  # type: ignore[arg-type]


def test_containers_refuse_misfiled_keys(pki: Pki) -> None:
    """A key filed under another key's id, or a current id that is not there, is a KeyringError."""
    a, b = pki.nodes["city-a"], pki.nodes["dc-b"]
    with pytest.raises(KeyringError):
        PeerKeys("dc-b", {key_id(a.sign_key.public_key()): b.sign_cert})
    enc = DecryptionKey.p256(b.enc_p256[0]).public
    with pytest.raises(KeyringError):
        PeerKeys("dc-b", {}, {enc.key_id: enc}, {"pq-hybrid": enc.key_id})
    with pytest.raises(KeyringError):
        Keyring("dc-b", b.identity(), pki.trust, {}, {"default": enc.key_id})


def test_build_makes_the_last_key_current(pki: Pki) -> None:
    """Previous generations first, current last: build() picks the last key per suite."""
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    node = pki.nodes["dc-b"]
    keys = [DecryptionKey.p256(old), DecryptionKey.p256(new)]
    ring = Keyring.build("dc-b", node.identity(), pki.trust, keys)
    assert ring.encryption_key_ids["default"] == key_id(new.public_key())
    assert len(ring.decryption_keys) == 2
    assert ring.own_encryption_key("default").key_id == key_id(new.public_key())
    with pytest.raises(KeyringError):
        ring.encryption_key_for("nobody", "default")


def test_repr_shows_ids_only(pki: Pki) -> None:
    """Printing a keyring or its parts shows key ids, never key material."""
    ring = pki.keyrings["city-a"]
    text = repr(ring) + repr(ring.signing) + repr(next(iter(ring.decryption_keys.values())))
    assert ring.signing.key_id in text
    assert "PRIVATE" not in text and "object at" not in text


def test_keyring_is_immutable(pki: Pki) -> None:
    """A snapshot cannot be changed in place (reloads swap a whole new Keyring)."""
    ring = pki.keyrings["city-a"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ring.node_id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        ring.peers["x"] = ring.peers["dc-b"]  # type: ignore[index]


# -- the trust hook --------------------------------------------------------------------------------


def untrusted(trust: CaTrust, cert: x509.Certificate, purpose: str = PURPOSE_SIGNING,
              at: dt.datetime = NOW) -> str:
    with pytest.raises(CertificateUntrusted) as info:
        trust.check_certificate(cert, purpose, at)
    return info.value.code


def test_trusted_certificate_passes(pki: Pki) -> None:
    """A signing certificate issued by the anchor, checked for signing inside its validity, passes."""
    pki.trust.check_certificate(pki.nodes["city-a"].sign_cert, PURPOSE_SIGNING, NOW)
    pki.trust.check_certificate(pki.nodes["city-a"].mldsa_cert, PURPOSE_SIGNING, NOW)  # type: ignore[arg-type]


def test_refusals(pki: Pki) -> None:
    """Unknown CA, expiry, not yet valid, revocation, wrong purpose and a CA as leaf are refused."""
    cert = pki.nodes["city-a"].sign_cert
    assert untrusted(CaTrust([TestCa.create().cert]), cert) == "unknown-ca"
    second = dt.timedelta(seconds=1)
    assert untrusted(pki.trust, cert, at=cert.not_valid_after_utc + second) == "expired"
    assert untrusted(pki.trust, cert, at=cert.not_valid_before_utc - second) == "not-yet-valid"
    revoking = CaTrust([pki.ca.cert], crls=[pki.ca.crl([cert.serial_number])])
    assert untrusted(revoking, cert) == "revoked"
    assert untrusted(pki.trust, cert, PURPOSE_ENCRYPTION) == "wrong-purpose"
    assert untrusted(pki.trust, pki.ca.cert) == "wrong-purpose"
    with pytest.raises(CertificateUntrusted):
        pki.trust.check_certificate(cert, PURPOSE_SIGNING, dt.datetime.now())  # naive time


R = x509.ReasonFlags
REVOCATIONS = {
    # reason: (revoked one day after the checked instant, revoked one day before, revoked at that instant)
    R.superseded: ("trusted", "revoked", "revoked"),
    R.cessation_of_operation: ("trusted", "revoked", "revoked"),
    R.affiliation_changed: ("trusted", "revoked", "revoked"),
    R.privilege_withdrawn: ("trusted", "revoked", "revoked"),
    R.key_compromise: ("revoked", "revoked", "revoked"),
    R.ca_compromise: ("revoked", "revoked", "revoked"),
    R.aa_compromise: ("revoked", "revoked", "revoked"),
    R.unspecified: ("revoked", "revoked", "revoked"),
    R.certificate_hold: ("revoked", "revoked", "revoked"),
    None: ("revoked", "revoked", "revoked"),
}


@pytest.mark.parametrize("reason", list(REVOCATIONS), ids=lambda r: r.name if r else "no-reason")
def test_revocation_date_counts_only_when_the_key_was_not_compromised(pki: Pki, reason: R | None) -> None:
    """A message created before its signing certificate was revoked still verifies when the CA says
    the key was not compromised (superseded, cessationOfOperation, affiliationChanged,
    privilegeWithdrawn); for any other reason, or none, the revocation counts for every created-at
    (docs/envelope.md section 9, check 6). It counts from the revocation date itself."""
    cert = pki.nodes["city-a"].sign_cert
    at = NOW.replace(microsecond=0)
    for when, expected in zip((at + dt.timedelta(days=1), at - dt.timedelta(days=1), at), REVOCATIONS[reason],
                              strict=True):
        trust = CaTrust([pki.ca.cert], crls=[pki.ca.crl(entries=[(cert.serial_number, when, reason)])])
        if expected == "trusted":
            trust.check_certificate(cert, PURPOSE_SIGNING, at)
        else:
            assert untrusted(trust, cert, at=at) == "revoked", (reason, when)
        # the cached path answers the same for a later message of the same certificate
        assert untrusted(trust, cert, at=at + dt.timedelta(days=2)) == "revoked"


def test_cached_chain_still_honours_time(pki: Pki) -> None:
    """After a successful (cached) check, the same certificate at a time past expiry is refused."""
    trust = CaTrust([pki.ca.cert])
    cert = pki.nodes["dc-b"].sign_cert
    trust.check_certificate(cert, PURPOSE_SIGNING, NOW)
    assert untrusted(trust, cert, at=cert.not_valid_after_utc + dt.timedelta(days=1)) == "expired"


def test_crl_from_another_issuer_is_ignored(pki: Pki) -> None:
    """A CRL not signed by the issuer cannot revoke its certificates."""
    cert = pki.nodes["city-a"].sign_cert
    same_name = pki.ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    forged = TestCa.create(str(same_name))
    assert forged.cert.subject == pki.ca.cert.subject
    trust = CaTrust([pki.ca.cert], crls=[forged.crl([cert.serial_number])])
    trust.check_certificate(cert, PURPOSE_SIGNING, NOW)


def _intermediate(root: TestCa, ca: bool) -> TestCa:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(root.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(_key_usage(key_cert_sign=ca, crl_sign=ca, digital_signature=not ca), critical=True)
            .sign(root.key, hashes.SHA256()))
    return TestCa(key, cert)


def test_chain_through_intermediate(pki: Pki) -> None:
    """A leaf under an intermediate CA chains to the anchor; the chain's validity bounds the leaf's."""
    inter = _intermediate(pki.ca, ca=True)
    leaf = inter.issue(mldsa.MLDSA65PrivateKey.generate().public_key(), "city-a", PURPOSE_SIGNING)
    trust = CaTrust([pki.ca.cert], [inter.cert])
    trust.check_certificate(leaf, PURPOSE_SIGNING, NOW)
    assert untrusted(trust, leaf, at=NOW + dt.timedelta(days=60)) == "expired"  # leaf fine, intermediate not
    assert untrusted(CaTrust([pki.ca.cert]), leaf) == "unknown-ca"


def test_issuer_that_is_not_a_ca(pki: Pki) -> None:
    """A certificate signed by an end-entity key does not chain, however it names its issuer."""
    fake = _intermediate(pki.ca, ca=False)
    leaf = fake.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), "city-a", PURPOSE_SIGNING)
    assert untrusted(CaTrust([pki.ca.cert], [fake.cert]), leaf) == "invalid-ca"


def test_one_key_per_purpose(pki: Pki) -> None:
    """A certificate asserting keyAgreement as well as digitalSignature is refused for signing."""
    key = ec.generate_private_key(ec.SECP256R1())
    both = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
            .issuer_name(pki.ca.cert.subject).public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
            .sign(pki.ca.key, hashes.SHA256()))
    assert untrusted(pki.trust, both) == "wrong-purpose"
    node = NodeKeys.create(pki.ca, "enc-only", pq=False)
    enc_cert = pki.ca.issue(node.enc_p256[0].public_key(), "enc-only", PURPOSE_ENCRYPTION)
    pki.trust.check_certificate(enc_cert, PURPOSE_ENCRYPTION, NOW)
    assert untrusted(pki.trust, enc_cert, PURPOSE_SIGNING) == "wrong-purpose"
