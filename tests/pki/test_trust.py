"""Trust decisions: each bad certificate or CRL is refused with its own code, file and reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway import keyring
from gateway.pki.devca import DevCa, key_usage, new_key
from gateway.pki.errors import CertificateError
from gateway.pki.files import key_id, pem_certificates
from gateway.pki.keyring_trust import StoreTrust
from gateway.pki.purpose import Purpose
from gateway.pki.trust import TrustStore

DAY = dt.timedelta(days=1)


def write_trust(root: Path, cas: list[DevCa], crls: dict[str, x509.CertificateRevocationList]) -> Path:
    (root / "anchors").mkdir(parents=True)
    (root / "crls").mkdir()
    for i, ca in enumerate(cas):
        (root / "anchors" / f"ca{i}.pem").write_bytes(pem_certificates([ca.cert]))
    for name, crl in crls.items():
        (root / "crls" / name).write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    return root


@pytest.fixture
def ca(tmp_path: Path, now: dt.datetime) -> DevCa:
    return DevCa.create(tmp_path / "ca", now)


@pytest.fixture
def store(tmp_path: Path, ca: DevCa, now: dt.datetime) -> TrustStore:
    return TrustStore.load(write_trust(tmp_path / "trust", [ca], {"ca.pem": ca.make_crl(now)}), now)


def issue(issuer: DevCa, purpose: Purpose, now: dt.datetime, **kw: object) -> x509.Certificate:
    return issuer.issue(new_key().public_key(), purpose, now, node_id="city-a", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_certificate_of_the_profile_verifies(store: TrustStore, ca: DevCa, now: dt.datetime,
                                               purpose: Purpose) -> None:
    """A dev CA certificate for each purpose verifies for that purpose and names the node."""
    cert = issue(ca, purpose, now)
    v = store.verify(cert, purpose, at=now, node_id="city-a")
    assert v.chain[-1] == ca.cert
    assert v.anchor_name == "jgw dev CA"
    assert v.key_id == keyring.key_id(cert.public_key())  # type: ignore[arg-type]


def refused(fn: Callable[[], object]) -> CertificateError:
    with pytest.raises(CertificateError) as info:
        fn()
    return info.value


def test_expired_certificate(store: TrustStore, ca: DevCa, now: dt.datetime) -> None:
    """An expired certificate is refused as expired, with the date, and no grace."""
    cert = issue(ca, Purpose.SIGNING, now, not_before=now - 30 * DAY, not_after=now - dt.timedelta(seconds=1))
    err = refused(lambda: store.verify(cert, Purpose.SIGNING, at=now, file="x/signing.pem"))
    assert err.code == "expired" and "expired at" in err.reason
    assert str(err).startswith("x/signing.pem: signing: ")
    assert err.exit_code == 78


def test_not_yet_valid_beyond_the_skew(store: TrustStore, ca: DevCa, now: dt.datetime) -> None:
    """notBefore an hour ahead is refused; two minutes ahead passes (clock skew allowance 5 min)."""
    late = issue(ca, Purpose.SIGNING, now, not_before=now + dt.timedelta(hours=1))
    assert refused(lambda: store.verify(late, Purpose.SIGNING, at=now)).code == "not-yet-valid"
    soon = issue(ca, Purpose.SIGNING, now, not_before=now + dt.timedelta(minutes=2))
    store.verify(soon, Purpose.SIGNING, at=now)


def test_revoked_certificate(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """A certificate on its CA's CRL is refused as revoked, naming its serial."""
    cert = issue(ca, Purpose.TLS_CLIENT, now)
    ca.revoke(cert.serial_number, "key_compromise")
    store = TrustStore.load(write_trust(tmp_path / "t", [ca], {"ca.pem": ca.make_crl(now)}), now)
    err = refused(lambda: store.verify(cert, Purpose.TLS_CLIENT, at=now))
    assert err.code == "revoked" and f"{cert.serial_number:x}" in err.reason


def test_revocation_as_of_an_earlier_instant(tmp_path: Path, now: dt.datetime) -> None:
    """Verifying as of before the revocation (a replayed dead letter) accepts a superseded certificate
    but never one revoked for key compromise."""
    ca = DevCa.create(tmp_path / "old-ca", now - 30 * DAY)
    superseded = issue(ca, Purpose.SIGNING, now, not_before=now - 10 * DAY)
    compromised = issue(ca, Purpose.SIGNING, now, not_before=now - 10 * DAY)
    ca.revoke(superseded.serial_number, "superseded")
    ca.revoke(compromised.serial_number, "key_compromise")
    crl = ca.make_crl(now, revoked_at=now - DAY, last_update=now - dt.timedelta(hours=1))
    store = TrustStore.load(write_trust(tmp_path / "t", [ca], {"ca.pem": crl}), now)
    before = now - 3 * DAY
    store.verify(superseded, Purpose.SIGNING, at=before, now=now)
    assert refused(lambda: store.verify(superseded, Purpose.SIGNING, at=now)).code == "revoked"
    assert refused(lambda: store.verify(compromised, Purpose.SIGNING, at=before, now=now)).code == "revoked"


@pytest.mark.parametrize("reason", ["none", "unspecified", "certificate_hold"])
def test_revocation_without_a_safe_reason_counts_for_every_instant(tmp_path: Path, now: dt.datetime,
                                                                   reason: str) -> None:
    """Only a CRL entry whose reason says the key was not compromised (superseded,
    cessationOfOperation, affiliationChanged, privilegeWithdrawn) leaves earlier messages valid; no
    reason, unspecified or certificateHold count as revoked at any instant (issue 15 item 8)."""
    ca = DevCa.create(tmp_path / "old-ca", now - 30 * DAY)
    cert = issue(ca, Purpose.SIGNING, now, not_before=now - 10 * DAY)
    ca.revoke(cert.serial_number, reason)
    crl = ca.make_crl(now, revoked_at=now - DAY, last_update=now - dt.timedelta(hours=1))
    store = TrustStore.load(write_trust(tmp_path / "t", [ca], {"ca.pem": crl}), now)
    before = now - 3 * DAY
    assert refused(lambda: store.verify(cert, Purpose.SIGNING, at=before, now=now)).code == "revoked"
    hook = StoreTrust(store, clock=lambda: now)
    with pytest.raises(keyring.CertificateUntrusted) as info:
        hook.check_certificate(cert, keyring.PURPOSE_SIGNING, before)
    assert info.value.code == "revoked"


BOTH = key_usage(digital_signature=True, key_agreement=True)
WRONG_PURPOSE = {
    "encryption certificate used for signing": (Purpose.ENCRYPTION, Purpose.SIGNING, {}),
    "signing certificate used for encryption": (Purpose.SIGNING, Purpose.ENCRYPTION, {}),
    "TLS client certificate used for signing": (Purpose.TLS_CLIENT, Purpose.SIGNING, {}),
    "signing certificate used as TLS client (no clientAuth)": (Purpose.SIGNING, Purpose.TLS_CLIENT, {}),
    "signing certificate that also allows key agreement": (
        Purpose.SIGNING, Purpose.SIGNING, {"usage": BOTH}),
    "encryption certificate that also allows signatures": (
        Purpose.ENCRYPTION, Purpose.ENCRYPTION, {"usage": BOTH}),
    "signing certificate carrying a TLS EKU": (
        Purpose.SIGNING, Purpose.SIGNING, {"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]}),
    "TLS client certificate without any EKU": (Purpose.TLS_CLIENT, Purpose.TLS_CLIENT, {"no_eku": True}),
    "a CA certificate as an end entity": (Purpose.SIGNING, Purpose.SIGNING, {"ca": True}),
}


@pytest.mark.parametrize("case", list(WRONG_PURPOSE))
def test_wrong_purpose(store: TrustStore, ca: DevCa, now: dt.datetime, case: str) -> None:
    """A certificate whose key usage, EKU or basic constraints do not fit is refused as wrong-purpose."""
    issued_as, used_as, kw = WRONG_PURPOSE[case]
    cert = issue(ca, issued_as, now, **kw)
    err = refused(lambda: store.verify(cert, used_as, at=now))
    assert err.code == "wrong-purpose", err


def test_wrong_curve_is_wrong_purpose(store: TrustStore, ca: DevCa, now: dt.datetime) -> None:
    """A signing certificate on a curve outside P-256/384/521 is refused."""
    k1 = ec.generate_private_key(ec.SECP256K1()).public_key()
    cert = ca.issue(k1, Purpose.SIGNING, now, node_id="city-a")
    assert refused(lambda: store.verify(cert, Purpose.SIGNING, at=now)).code == "wrong-purpose"


def test_certificate_from_another_ca(store: TrustStore, other_ca: DevCa, now: dt.datetime) -> None:
    """A certificate issued by a CA that is not an anchor is refused as unknown-ca, naming the issuer."""
    cert = issue(other_ca, Purpose.SIGNING, now)
    err = refused(lambda: store.verify(cert, Purpose.SIGNING, at=now))
    assert err.code == "unknown-ca" and "untrusted CA" in err.reason


def test_impostor_ca_with_the_same_name(tmp_path: Path, store: TrustStore, now: dt.datetime) -> None:
    """A CA that copies the anchor's name but not its key cannot issue trusted certificates."""
    impostor = DevCa.create(tmp_path / "impostor", now)  # same name "jgw dev CA", another key
    cert = issue(impostor, Purpose.SIGNING, now)
    code = refused(lambda: store.verify(cert, Purpose.SIGNING, at=now)).code
    assert code in ("bad-signature", "unknown-ca")


def test_node_id_mismatch(store: TrustStore, ca: DevCa, now: dt.datetime) -> None:
    """A certificate for city-a is refused where dc-b's is expected."""
    cert = issue(ca, Purpose.SIGNING, now)
    err = refused(lambda: store.verify(cert, Purpose.SIGNING, at=now, node_id="dc-b"))
    assert err.code == "name-mismatch" and "city-a" in err.reason


@pytest.mark.parametrize("case", ["dns-name", "cn-only"])
def test_node_is_named_by_its_node_uri_only(store: TrustStore, ca: DevCa, now: dt.datetime, case: str) -> None:
    """The node a certificate belongs to is its one subjectAltName URI urn:jgw:node:<id> (issue 15
    item 7): a dNSName or a CN that spells the node id does not bind the certificate to it."""
    key = new_key().public_key()
    cert = (ca.issue(key, Purpose.SIGNING, now, cn="city-a", hosts=["city-a"]) if case == "dns-name"
            else ca.issue(key, Purpose.SIGNING, now, cn="city-a"))
    err = refused(lambda: store.verify(cert, Purpose.SIGNING, at=now, node_id="city-a"))
    assert err.code == "name-mismatch" and "urn:jgw:node:city-a" in err.reason


def test_expired_crl_is_refused_at_load(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """A CRL past its nextUpdate is refused when the trust store loads, with the file and the date."""
    crl = ca.make_crl(now, last_update=now - 8 * DAY, next_update=now - DAY)
    trust_dir = write_trust(tmp_path / "t", [ca], {"old.pem": crl})
    err = refused(lambda: TrustStore.load(trust_dir, now))
    assert err.code == "crl-expired" and err.file.endswith("crls/old.pem")


def test_crl_signed_by_the_wrong_ca(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """A CRL that names our CA but is signed by another key is refused as crl-bad-signature."""
    crl = ca.make_crl(now, signer=new_key())
    err = refused(lambda: TrustStore.load(write_trust(tmp_path / "t", [ca], {"forged.pem": crl}), now))
    assert err.code == "crl-bad-signature" and "does not verify" in err.reason


def test_crl_of_an_unknown_ca(tmp_path: Path, ca: DevCa, other_ca: DevCa, now: dt.datetime) -> None:
    """A CRL from a CA we do not trust is refused, naming that CA."""
    err = refused(lambda: TrustStore.load(
        write_trust(tmp_path / "t", [ca], {"other.pem": other_ca.make_crl(now)}), now))
    assert err.code == "crl-bad-signature" and "untrusted CA" in err.reason


def test_crl_from_the_future(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """A CRL dated a day ahead means a wrong clock here or there; it is refused."""
    crl = ca.make_crl(now, last_update=now + DAY, next_update=now + 8 * DAY)
    err = refused(lambda: TrustStore.load(write_trust(tmp_path / "t", [ca], {"f.pem": crl}), now))
    assert err.code == "crl-not-yet-valid"


def test_missing_crl_fails_closed(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """Without a CRL for the issuing CA nothing it issued verifies (fail closed), and the error says
    where the CRL goes."""
    store = TrustStore.load(write_trust(tmp_path / "t", [ca], {}), now)
    err = refused(lambda: store.verify(issue(ca, Purpose.SIGNING, now), Purpose.SIGNING, at=now))
    assert err.code == "crl-missing" and "crls" in err.reason


def test_crl_expiring_while_running(store: TrustStore, ca: DevCa, now: dt.datetime) -> None:
    """A store loaded with a fresh CRL refuses once that CRL has expired (checked at verification)."""
    cert = issue(ca, Purpose.SIGNING, now, days=30)
    err = refused(lambda: store.verify(cert, Purpose.SIGNING, at=now + 8 * DAY))
    assert err.code == "crl-expired"


def test_problems_mode_collects_instead_of_raising(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """For status, a bad CRL is recorded and left out while the rest loads."""
    bad = ca.make_crl(now, signer=new_key())
    good = ca.make_crl(now)
    problems: list[CertificateError] = []
    store = TrustStore.load(write_trust(tmp_path / "t", [ca], {"a-bad.pem": bad, "b-good.pem": good}), now,
                            problems=problems)
    assert [p.code for p in problems] == ["crl-bad-signature"]
    assert len(store.crls) == 1


def test_intermediate_chain_with_crls_for_every_ca(tmp_path: Path, ca: DevCa, now: dt.datetime) -> None:
    """anchor -> intermediate -> leaf verifies with CRL_CHECK_ALL; revoking the intermediate on the
    anchor's CRL takes the leaf down with it."""
    inter_key = new_key()
    inter_cert = ca.issue(inter_key.public_key(), Purpose.SIGNING, now, cn="jgw dev issuing CA",
                          usage=key_usage(key_cert_sign=True, crl_sign=True), ca=True, no_eku=True)
    inter = DevCa(tmp_path / "inter", inter_cert, inter_key)
    (tmp_path / "inter").mkdir()
    leaf = issue(inter, Purpose.SIGNING, now)
    crls = {"root.pem": ca.make_crl(now), "inter.pem": inter.make_crl(now)}
    trust_dir = write_trust(tmp_path / "t", [ca], crls)
    (trust_dir / "intermediates").mkdir()
    (trust_dir / "intermediates" / "inter.pem").write_bytes(pem_certificates([inter_cert]))
    store = TrustStore.load(trust_dir, now)
    assert store.crl_for_every_ca
    v = store.verify(leaf, Purpose.SIGNING, at=now)
    assert [c.subject for c in v.chain] == [leaf.subject, inter_cert.subject, ca.cert.subject]
    ca.revoke(inter_cert.serial_number, "ca_compromise")
    (trust_dir / "crls" / "root.pem").write_bytes(ca.make_crl(now).public_bytes(serialization.Encoding.PEM))
    store = TrustStore.load(trust_dir, now)
    assert refused(lambda: store.verify(leaf, Purpose.SIGNING, at=now)).code == "revoked"


def test_keyring_trust_hook(store: TrustStore, ca: DevCa, now: dt.datetime) -> None:
    """The keyring hook accepts a good signing certificate, and on its cached path still notices expiry
    and refuses with the keyring's exception type and our code."""
    cert = issue(ca, Purpose.SIGNING, now, days=2)
    hook = StoreTrust(store, clock=lambda: now)
    hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now)
    hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now + dt.timedelta(hours=1))
    with pytest.raises(keyring.CertificateUntrusted) as info:
        hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now + 3 * DAY)
    assert info.value.code == "expired"
    with pytest.raises(keyring.CertificateUntrusted) as info:
        hook.check_certificate(cert, keyring.PURPOSE_ENCRYPTION, now)
    assert info.value.code == "wrong-purpose"


def test_keyring_trust_hook_cached_path_follows_the_clock(tmp_path: Path, now: dt.datetime) -> None:
    """Once cached, a certificate is still refused when the CRL runs out (by the clock), and a superseded
    certificate counts as revoked only for messages made after its revocation."""
    ca = DevCa.create(tmp_path / "old-ca", now - 30 * DAY)
    cert = issue(ca, Purpose.SIGNING, now, not_before=now - 10 * DAY)
    ca.revoke(cert.serial_number, "superseded")
    crl = ca.make_crl(now, revoked_at=now - DAY, next_update=now + 2 * DAY)
    store = TrustStore.load(write_trust(tmp_path / "t", [ca], {"ca.pem": crl}), now)
    clock = [now]
    hook = StoreTrust(store, clock=lambda: clock[0])
    hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now - 3 * DAY)  # signed before the revocation
    hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now - 2 * DAY)  # cached path
    with pytest.raises(keyring.CertificateUntrusted) as info:
        hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now)
    assert info.value.code == "revoked"
    clock[0] = now + 3 * DAY
    with pytest.raises(keyring.CertificateUntrusted) as info:
        hook.check_certificate(cert, keyring.PURPOSE_SIGNING, now - 3 * DAY)
    assert info.value.code == "crl-expired"


def test_key_ids_agree_with_the_keyring() -> None:
    """gateway.pki and gateway.keyring name a key the same way."""
    key = new_key().public_key()
    assert key_id(key) == keyring.key_id(key)
