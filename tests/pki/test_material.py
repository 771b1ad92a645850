"""The node's material: refused when anything is wrong, and when right, a keyring the envelope can use."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.envelope import inner
from gateway.envelope.opener import Opener, OpenPolicy
from gateway.envelope.sealer import Sealer, SealItem
from gateway.errors import JgwError
from gateway.keyring import Keyring
from gateway.pki import hybrid
from gateway.pki.devinit import stage_generation
from gateway.pki.errors import CertificateError, KeyFileModeError
from gateway.pki.files import (
    pem_certificates,
    pem_private_key,
    read_private_key,
    write_atomic,
    write_private_key,
)
from gateway.pki.generation import load_generation
from gateway.pki.layout import CertsDir
from gateway.pki.material import NodeMaterial, load_node_material
from gateway.pki.purpose import Purpose
from gateway.pki.rotation import rotate
from gateway.pki.trust import TrustStore
from tests.pki.conftest import World

DAY = dt.timedelta(days=1)


def live(world: World, site: str = "a") -> Path:
    return getattr(world, site).cd.live_dir()


def load(world: World, now: dt.datetime, site: str = "a",
         overlap: dt.timedelta = dt.timedelta(days=7)) -> NodeMaterial:
    s = getattr(world, site)
    return load_node_material(s.root, s.node_id, now, overlap=overlap)


def error_of(world: World, now: dt.datetime, site: str = "a") -> JgwError:
    with pytest.raises(JgwError) as info:
        load(world, now, site)
    return info.value


# -- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_readable_by_others_is_refused(world: World, now: dt.datetime, mode: int) -> None:
    """A private key readable (or writable) beyond its owner stops the load with exit 77 and the chmod."""
    key = live(world) / "signing.key"
    key.chmod(mode)
    err = error_of(world, now)
    assert isinstance(err, KeyFileModeError) and err.exit_code == 77
    assert str(key) in str(err) and "chmod 600" in str(err)


def test_key_0400_is_accepted(world: World, now: dt.datetime) -> None:
    """Read-only for the owner (as systemd credentials are) is fine."""
    (live(world) / "signing.key").chmod(0o400)
    load(world, now)


def test_key_that_does_not_match_its_certificate(world: World, now: dt.datetime) -> None:
    """A key from elsewhere in a slot is refused as key-mismatch, naming the key file."""
    write_private_key(live(world) / "encryption.key", ec.generate_private_key(ec.SECP256R1()))
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == "key-mismatch"
    assert err.file.endswith("encryption.key")


def test_one_key_for_two_purposes(world: World, now: dt.datetime) -> None:
    """Using the signing key pair for TLS too is refused: each purpose needs its own key."""
    gen = live(world)
    key = read_private_key(gen / "signing.key")
    cert = world.ca.issue(key.public_key(), Purpose.TLS_CLIENT, now, node_id="city-a")  # type: ignore[arg-type]
    write_atomic(gen / "tls-client.pem", pem_certificates([cert]))
    write_atomic(gen / "tls-client.key", pem_private_key(key), 0o600)
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == "key-reused"


@pytest.mark.parametrize("slot,code,kw", [
    ("signing", "expired", {"not_before": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                            "not_after": dt.datetime(2020, 6, 1, tzinfo=dt.UTC)}),
    ("tls-client", "not-yet-valid", {"not_before": dt.datetime(2099, 1, 1, tzinfo=dt.UTC),
                                     "not_after": dt.datetime(2099, 6, 1, tzinfo=dt.UTC)}),
])
def test_live_certificate_out_of_validity(world: World, now: dt.datetime, slot: str, code: str,
                                          kw: dict[str, dt.datetime]) -> None:
    """An expired or not-yet-valid live certificate stops the load with its code."""
    gen = live(world)
    key = read_private_key(gen / f"{slot}.key")
    purpose = Purpose.SIGNING if slot == "signing" else Purpose.TLS_CLIENT
    cert = world.ca.issue(key.public_key(), purpose, now, node_id="city-a", **kw)  # type: ignore[arg-type]
    write_atomic(gen / f"{slot}.pem", pem_certificates([cert]))
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == code


def test_revoked_live_certificate(world: World, now: dt.datetime) -> None:
    """Revoking the live TLS certificate (new CRL installed) stops the next load: the daemon keeps the
    old material and says why."""
    from gateway.pki.files import read_certificate

    cert = read_certificate(live(world) / "tls-client.pem")
    world.ca.revoke(cert.serial_number, "key_compromise")
    world.ca.write_crl(now)
    shutil.copyfile(world.ca.crl_path, world.a.cd.crls / "dev-ca.pem")
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == "revoked"


def test_wrong_purpose_in_a_slot(world: World, now: dt.datetime) -> None:
    """An encryption certificate placed in the signing slot is refused as wrong-purpose."""
    gen = live(world)
    key = read_private_key(gen / "signing.key")
    cert = world.ca.issue(key.public_key(), Purpose.ENCRYPTION, now, node_id="city-a")  # type: ignore[arg-type]
    write_atomic(gen / "signing.pem", pem_certificates([cert]))
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == "wrong-purpose"


def test_certificate_of_another_node(world: World, now: dt.datetime) -> None:
    """dc-b's certificate in city-a's slot (with its key) is refused as name-mismatch."""
    for name in ("signing.pem", "signing.key"):
        shutil.copy2(live(world, "b") / name, live(world) / name)
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == "name-mismatch"


def test_peer_from_another_ca(world: World, other_ca: object, now: dt.datetime) -> None:
    """A peer certificate from an untrusted CA leaves that peer out of the keyring (reported with the
    file and code) while the node's own material still loads; strict_peers makes it an error."""
    from gateway.pki.devca import DevCa, new_key

    assert isinstance(other_ca, DevCa)
    cert = other_ca.issue(new_key().public_key(), Purpose.SIGNING, now, node_id="dc-b")
    path = world.a.cd.peers / "dc-b" / "signing.pem"
    write_atomic(path, pem_certificates([cert]))
    m = load(world, now)
    assert "dc-b" not in m.keyring.peers and "dc-b" not in m.peers
    (problem,) = m.peer_problems
    assert problem.code == "unknown-ca" and problem.file == str(path)
    with pytest.raises(CertificateError) as info:
        load_node_material(world.a.root, "city-a", now, strict_peers=True)
    assert info.value.code == "unknown-ca"


def test_expired_crl_stops_the_load(world: World, now: dt.datetime) -> None:
    """Loading a week after the dev CRL's 30 days ran out fails on the CRL, not later on a message."""
    err = error_of(world, now + 31 * DAY)
    assert isinstance(err, CertificateError) and err.code == "crl-expired"


def test_pq_hybrid_material_comes_whole(world: World, now: dt.datetime) -> None:
    """A generation with half of the pq-hybrid files is refused as a layout problem naming what lacks."""
    (live(world) / hybrid.STATEMENT_FILE).unlink()
    err = error_of(world, now)
    assert isinstance(err, CertificateError) and err.code == "layout" and hybrid.STATEMENT_FILE in str(err)


# -- what a good load gives -----------------------------------------------------------------------------


def test_metric_inputs(world: World, now: dt.datetime) -> None:
    """Expiry per purpose with a bounded subject (node id or CA name) and CRL nextUpdate per issuer."""
    m = load(world, now)
    own = {(e.purpose, e.subject) for e in m.expiries if e.role == "own"}
    assert own == {("tls-client", "city-a"), ("signing", "city-a"), ("encryption", "city-a"),
                   ("signing-mldsa65", "city-a")}
    peer = {(e.purpose, e.subject) for e in m.expiries if e.role == "peer"}
    assert peer == {("signing", "dc-b"), ("encryption", "dc-b"), ("signing-mldsa65", "dc-b")}
    assert {(e.purpose, e.subject) for e in m.expiries if e.role == "anchor"} == {
        ("ca", "jgw dev CA")}
    assert [c.issuer for c in m.crls] == ["jgw dev CA"]
    assert m.crls[0].next_update > now
    labels = {e.subject for e in m.expiries}
    assert all("=" not in s and len(s) < 64 for s in labels)  # node ids and CNs, never DNs


def seal_and_open(sender: Keyring, receiver: Keyring, suite: str, now: dt.datetime) -> bytes:
    payload = b"\x82\xa0 synthetic test payload \x00\xff"
    sealer = Sealer(suite=suite, route="r1", recipients=[receiver.node_id])
    (env,) = sealer.seal([SealItem("m-1", inner.Contents(payload))], sender, now.timestamp())
    assert isinstance(env, bytes), env
    opener = Opener(OpenPolicy(senders=frozenset({sender.node_id}), suites=frozenset({suite}),
                               routes=frozenset({"r1"}), replay_window=3600))
    return opener.open(env, receiver, now.timestamp()).contents.body


@pytest.mark.parametrize("suite", ["default", "pq-hybrid"])
def test_keyrings_seal_and_open_between_sites(world: World, now: dt.datetime, suite: str) -> None:
    """city-a's keyring seals to dc-b, dc-b's keyring opens it: signatures checked through the CRL-checked
    trust hook, both suites."""
    a, b = load(world, now), load(world, now, "b")
    body = seal_and_open(a.keyring, b.keyring, suite, now)
    assert body == b"\x82\xa0 synthetic test payload \x00\xff"


def rotate_all_new(world: World, now: dt.datetime) -> None:
    """A completely new generation for city-a (every key new), made live by the real rotation."""
    cd = world.a.cd
    stage_generation(cd.staging, "city-a", world.ca, now)
    trust = TrustStore.load(cd.trust, now)
    rotate(cd, lambda d: load_generation(d, "city-a", trust, at=now))


def test_overlap_keeps_the_previous_decryption_key(world: World, now: dt.datetime) -> None:
    """After city-a rotates, a message dc-b sealed to city-a's old key still opens during the overlap
    and no longer opens after it."""
    b = load(world, now, "b")
    sealer = Sealer(suite="default", route="r1", recipients=["city-a"])
    (env,) = sealer.seal([SealItem("m-1", inner.Contents(b"x"))], b.keyring, now.timestamp())
    assert isinstance(env, bytes)
    rotate_all_new(world, now)
    during = load(world, now, overlap=dt.timedelta(days=7))
    assert during.previous is not None
    assert len(during.keyring.decryption_keys) == 4  # 2 suites x 2 generations
    opener = Opener(OpenPolicy(senders=None, suites=None, routes=None, replay_window=None))
    assert opener.open(env, during.keyring, now.timestamp()).contents.body == b"x"
    after = load(world, now + 8 * DAY, overlap=dt.timedelta(days=7))
    assert after.previous is None
    from gateway.envelope.errors import EnvelopeError

    with pytest.raises(EnvelopeError) as info:
        Opener(OpenPolicy(senders=None, suites=None, routes=None, replay_window=None)).open(
            env, after.keyring, (now + 8 * DAY).timestamp())
    assert info.value.reason == "not-recipient"


def test_peer_rotation_overlap(world: World, now: dt.datetime) -> None:
    """When a peer's new signing certificate is installed, the old one stays as .previous and both are in
    the keyring, so messages signed before and after the peer's rotation verify."""
    from gateway.pki.install import install_peer_file

    old = load(world, now, "b").keyring
    rotate_all_new(world, now)  # city-a rotates ...
    new_a = world.a.cd.live_dir()
    with world.b.cd.locked():  # ... and dc-b's staff install its new public certificates
        for name in ("signing.pem", "encryption.pem", "signing-mldsa65.pem", hybrid.STATEMENT_FILE):
            install_peer_file(world.b.cd, "city-a", new_a / name, now)
    b = load(world, now, "b")
    peer = b.keyring.peers["city-a"]
    assert len(peer.signing_certificates) == 4
    assert set(old.peers["city-a"].signing_certificates) <= set(peer.signing_certificates)
    a = load(world, now)
    assert seal_and_open(a.keyring, b.keyring, "pq-hybrid", now)


def test_material_reads_one_generation_even_if_live_moves(world: World, now: dt.datetime) -> None:
    """The loader resolves live once: its TLS files are the archive paths of that generation."""
    m = load(world, now)
    assert m.tls.cert.parent.name == "gen-0001"
    assert "live" not in m.tls.cert.parts
    os.stat(m.tls.key)
    assert m.ssl_context() is not m.ssl_context()  # fresh per call


def test_no_live_generation(tmp_path: Path, world: World, now: dt.datetime) -> None:
    """A certs dir with trust but nothing live says so and how to fix it."""
    root = tmp_path / "empty"
    shutil.copytree(world.a.cd.trust, root / "trust")
    with pytest.raises(CertificateError) as info:
        load_node_material(root, "city-a", now)
    assert info.value.code == "missing" and "jgw certs rotate" in str(info.value)


def test_write_private_key_is_0600_even_with_a_loose_umask(tmp_path: Path) -> None:
    """Keys are created 0600 regardless of the umask (no window where they are readable)."""
    old = os.umask(0)
    try:
        write_private_key(tmp_path / "k.key", ec.generate_private_key(ec.SECP256R1()))
    finally:
        os.umask(old)
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600


def test_certs_dir_layout_name() -> None:
    assert CertsDir(Path("/x")).journal == Path("/x/rotation.pending")


def test_rotation_order_that_refuses_nothing(world: World, now: dt.datetime, tmp_path: Path) -> None:
    """The runbook's order (peers get the staged signing certificates first, rotate, then peers get the
    new encryption certificate) lets every message in either direction open at every step."""
    from gateway.pki.install import export_public, install_peer_file

    a_cd, b_cd = world.a.cd, world.b.cd

    def peers_install(source: Path, signing_only: bool) -> None:
        out = tmp_path / ("sign" if signing_only else "all")
        for path in export_public(source, out, signing_only=signing_only):
            with b_cd.locked():
                install_peer_file(b_cd, "city-a", path, now)

    def both_ways(suite: str) -> None:
        a, b = load(world, now), load(world, now, "b")
        assert seal_and_open(a.keyring, b.keyring, suite, now)
        assert seal_and_open(b.keyring, a.keyring, suite, now)

    sealed_by_b_before = load(world, now, "b").keyring
    stage_generation(a_cd.staging, "city-a", world.ca, now)
    peers_install(a_cd.staging, signing_only=True)
    for suite in ("default", "pq-hybrid"):
        both_ways(suite)
    trust = TrustStore.load(a_cd.trust, now)
    rotate(a_cd, lambda d: load_generation(d, "city-a", trust, at=now))
    for suite in ("default", "pq-hybrid"):
        both_ways(suite)  # a signs with the new key; b still encrypts to a's previous key (overlap)
        assert seal_and_open(sealed_by_b_before, load(world, now).keyring, suite, now)
    peers_install(a_cd.live_dir(), signing_only=False)
    b = load(world, now, "b")
    new_enc = load(world, now).keyring.own_encryption_key("default").key_id
    assert b.keyring.encryption_key_for("city-a", "default").key_id == new_enc
    for suite in ("default", "pq-hybrid"):
        both_ways(suite)
