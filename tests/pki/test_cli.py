"""The staff commands end to end, as a child process: output, files and exit codes scripts rely on."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.pki.devca import DevCa, new_key
from gateway.pki.devinit import init_dev
from gateway.pki.files import pem_certificates, read_certificates, write_atomic
from gateway.pki.layout import CertsDir
from gateway.pki.purpose import Purpose
from tests.pki.conftest import World, snapshot
from tests.pki.jgwcli import run as jgw

DAY = dt.timedelta(days=1)


def target(world: World, site: str = "a") -> list[str]:
    s = getattr(world, site)
    return ["--certs-dir", str(s.root), "--node", s.node_id]


def csr_and_issue(world: World, slot: str, tmp: Path, node: str = "city-a", **kw: object) -> Path:
    """Staff step 1 and the CA's part: jgw pki csr, then the dev CA issues it (as the 団体's CA would)."""
    r = jgw("pki", "csr", *target(world), "--purpose", slot)
    assert r.returncode == 0, r.stderr
    assert "mode 0600" in r.stdout and f"staging/{slot}.csr" in r.stdout
    assert (world.a.cd.staging / f"{slot}.key").stat().st_mode & 0o777 == 0o600
    out = tmp / f"issued-{slot}.pem"
    if kw:
        from cryptography import x509

        req = x509.load_pem_x509_csr((world.a.cd.staging / f"{slot}.csr").read_bytes())
        purpose = Purpose.SIGNING if slot.startswith("signing") else Purpose(slot)
        cert = world.ca.issue(req.public_key(), purpose, dt.datetime.now(dt.UTC), node_id=node,  # type: ignore[arg-type]
                              **kw)  # type: ignore[arg-type]
        write_atomic(out, pem_certificates([cert]))
        return out
    csr = world.a.cd.staging / f"{slot}.csr"
    r = jgw("pki", "issue-dev", str(world.ca.directory), str(csr), "--purpose", slot, "--node", node,
            "--out", str(out))
    assert r.returncode == 0 and "DEVELOPMENT ONLY" in r.stdout, r.stderr
    return out


def test_full_rotation_as_staff_do_it(world: World, tmp_path: Path) -> None:
    """csr -> CA -> install -> status -> rotate (dry run, then for real) -> rollback, every slot renewed."""
    issued = [csr_and_issue(world, slot, tmp_path) for slot in ("tls-client", "signing", "encryption",
                                                                 "signing-mldsa65")]
    r = jgw("certs", "rotate", *target(world), "--dry-run")
    assert r.returncode == 78 and "key-mismatch" not in r.stdout  # keys wait for their certificates
    assert "does not belong to the certificate" in r.stderr
    r = jgw("certs", "install", *target(world), *map(str, issued))  # slots found from the staged keys
    assert r.returncode == 0, r.stderr
    assert "4 installed, 0 failed" in r.stdout and "re-sign the hybrid key statement" in r.stdout
    assert jgw("pki", "hybrid", *target(world)).returncode == 0
    before = snapshot(world.a.cd.live_dir())
    r = jgw("certs", "rotate", *target(world), "--dry-run")
    assert r.returncode == 0 and "simulated rotate" in r.stdout and "nothing changed" in r.stdout, r.stderr
    assert world.a.cd.pointer("live") == "gen-0001"
    r = jgw("certs", "rotate", *target(world), "--state-dir", str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    assert "live: gen-0001 -> gen-0002" in r.stdout and "no daemon pid file" in r.stdout
    new_live = snapshot(world.a.cd.live_dir())
    assert all(new_live[f"{s}.key"] != before[f"{s}.key"] for s in ("tls-client", "signing", "encryption"))
    r = jgw("certs", "status", *target(world))
    assert r.returncode == 0 and "RESULT: all certificates and CRLs in order" in r.stdout, r.stdout
    r = jgw("certs", "rollback", *target(world), "--no-signal")
    assert r.returncode == 0 and "live: gen-0002 -> gen-0001" in r.stdout
    assert snapshot(world.a.cd.live_dir()) == before


def test_batch_install_isolates_failures(world: World, tmp_path: Path, other_ca: DevCa) -> None:
    """One bad file does not stop the good one; the summary counts both and the exit code is the
    failure's (78), with the file and reason on stderr."""
    good = csr_and_issue(world, "signing", tmp_path)
    foreign = tmp_path / "foreign.pem"
    key = new_key()
    write_atomic(foreign, pem_certificates([other_ca.issue(key.public_key(), Purpose.TLS_CLIENT,
                                                           dt.datetime.now(dt.UTC), node_id="city-a")]))
    r = jgw("certs", "install", *target(world), str(foreign), str(good), "--purpose", "signing")
    assert r.returncode == 78
    assert "1 installed, 1 failed" in r.stdout
    assert f"{foreign}: FAILED" in r.stderr and "Traceback" not in r.stderr
    assert read_certificates(world.a.cd.staging / "signing.pem")[0] == read_certificates(good)[0]


@pytest.mark.parametrize("case,kw,code", [
    ("another node's name", {"node": "dc-b"}, "name-mismatch"),
    ("already expired", {"not_before": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                         "not_after": dt.datetime(2020, 2, 1, tzinfo=dt.UTC)}, "expired"),
    ("issued for encryption", {"purpose_override": Purpose.ENCRYPTION}, "wrong-purpose"),
])
def test_install_preflight_refusals(world: World, tmp_path: Path, case: str, kw: dict[str, object],
                                    code: str) -> None:
    """What the CA sent back is checked before it goes into staging; staging keeps the old certificate."""
    r = jgw("pki", "csr", *target(world), "--purpose", "signing")
    assert r.returncode == 0
    from cryptography import x509

    req = x509.load_pem_x509_csr((world.a.cd.staging / "signing.csr").read_bytes())
    node = str(kw.pop("node", "city-a"))
    purpose = kw.pop("purpose_override", Purpose.SIGNING)
    cert = world.ca.issue(req.public_key(), purpose, dt.datetime.now(dt.UTC), node_id=node, **kw)  # type: ignore[arg-type]
    issued = tmp_path / "issued.pem"
    write_atomic(issued, pem_certificates([cert]))
    staged_before = (world.a.cd.staging / "signing.pem").read_bytes()
    r = jgw("certs", "install", *target(world), str(issued), "--purpose", "signing")
    assert r.returncode == 78 and code in r.stderr, (case, r.stderr)
    assert (world.a.cd.staging / "signing.pem").read_bytes() == staged_before


def test_issued_certificates_bind_the_node(world: World, tmp_path: Path) -> None:
    """jgw pki csr asks for, and the dev CA issues, one subjectAltName URI urn:jgw:node:<id> with the
    node id as CN; issue-dev refuses a request that names another node than --node (issue 15 item 7)."""
    from cryptography import x509

    from gateway.keyring import certificate_node_id

    issued = csr_and_issue(world, "signing", tmp_path)
    cert = read_certificates(issued)[0]
    assert certificate_node_id(cert) == "city-a"
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "city-a"
    req = x509.load_pem_x509_csr((world.a.cd.staging / "signing.csr").read_bytes())
    assert req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == ["urn:jgw:node:city-a"]
    r = jgw("pki", "issue-dev", str(world.ca.directory), str(world.a.cd.staging / "signing.csr"),
            "--purpose", "signing", "--node", "dc-b", "--out", str(tmp_path / "wrong.pem"))
    assert r.returncode == 65 and "names node city-a" in r.stderr, r.stderr
    assert not (tmp_path / "wrong.pem").exists()
    for site in (world.a, world.b):
        for slot in ("tls-client", "signing", "encryption", "signing-mldsa65"):
            assert certificate_node_id(read_certificates(site.cd.live_dir() / f"{slot}.pem")[0]) == site.node_id


def test_install_certificate_for_no_staged_key(world: World, tmp_path: Path) -> None:
    """A certificate whose key is nowhere in staging is refused as key-mismatch with what to do."""
    cert = world.ca.issue(new_key().public_key(), Purpose.SIGNING, dt.datetime.now(dt.UTC), node_id="city-a")
    path = tmp_path / "orphan.pem"
    write_atomic(path, pem_certificates([cert]))
    r = jgw("certs", "install", *target(world), str(path))
    assert r.returncode == 78 and "key-mismatch" not in r.stdout and "jgw pki csr" in r.stderr


def test_csr_does_not_overwrite_a_pending_key(world: World) -> None:
    """A second csr for the same slot would orphan the request at the CA: refused without --force."""
    assert jgw("pki", "csr", *target(world), "--purpose", "encryption").returncode == 0
    key = (world.a.cd.staging / "encryption.key").read_bytes()
    r = jgw("pki", "csr", *target(world), "--purpose", "encryption")
    assert r.returncode == 64 and "--force" in r.stderr
    assert (world.a.cd.staging / "encryption.key").read_bytes() == key
    assert jgw("pki", "csr", *target(world), "--purpose", "encryption", "--force").returncode == 0
    assert (world.a.cd.staging / "encryption.key").read_bytes() != key


def test_status_flags_expiring_and_exits_1(world: World) -> None:
    """With a 100-day warning window the 90-day dev certificates are 'expiring' and status exits 1;
    --json carries the same verdict for monitoring scripts."""
    r = jgw("certs", "status", *target(world), "--warn-days", "100")
    assert r.returncode == 1 and "expiring" in r.stdout and "RESULT: attention needed" in r.stdout
    r = jgw("certs", "status", *target(world), "--json")
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data["ok"] is True and data["live"] == "gen-0001"
    sections = {(i["section"], i["item"]) for i in data["items"]}
    assert ("live gen-0001", "signing") in sections and ("peer dc-b", "encryption") in sections
    assert ("trust", "crl") in sections


def test_status_shows_a_revoked_peer_and_a_due_crl(world: World) -> None:
    """A peer certificate revoked on the installed CRL is shown as revoked; a CRL due within the
    warning window is 'expiring'; both make the check fail."""
    peer_cert = read_certificates(world.a.cd.peers / "dc-b" / "signing.pem")[0]
    world.ca.revoke(peer_cert.serial_number, "key_compromise")
    now = dt.datetime.now(dt.UTC)
    crl = world.ca.write_crl(now, next_update=now + dt.timedelta(hours=6))
    r = jgw("certs", "install", *target(world), "--crl", str(crl))
    assert r.returncode == 0, r.stderr
    r = jgw("certs", "status", *target(world))
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    line = next(line for line in lines if line.startswith("peer dc-b") and " signing " in line)
    assert line.rstrip().endswith("revoked")
    assert any(line.startswith("trust") and "crl" in line and "expiring" in line for line in lines)


def test_status_reports_a_pending_repair(world: World) -> None:
    """A journal left by a killed rotation makes status exit 1 and say what to run."""
    cd = world.a.cd
    (cd.journal).write_text(json.dumps({"action": "rotate", "generation": "gen-0002",
                                        "before": {"live": "gen-0001", "previous": None},
                                        "after": {"live": "gen-0002", "previous": "gen-0001"}}))
    r = jgw("certs", "status", *target(world))
    assert r.returncode == 1 and "needs repair" in r.stdout


def test_crl_install_converts_der_and_refuses_an_older_crl(world: World, tmp_path: Path) -> None:
    """A DER CRL is stored as PEM under the CA's name; an older CRL than the installed one is refused
    (it would un-revoke); a CRL from an untrusted CA is refused."""
    now = dt.datetime.now(dt.UTC)
    old = world.ca.make_crl(now, last_update=now - 2 * DAY)
    new = world.ca.make_crl(now)
    der = tmp_path / "new.crl"
    der.write_bytes(new.public_bytes(serialization.Encoding.DER))
    r = jgw("certs", "install", *target(world), "--crl", str(der))
    assert r.returncode == 0, r.stderr
    stored = world.a.cd.crls / "dev-ca.pem"
    assert stored.read_bytes().startswith(b"-----BEGIN X509 CRL-----")
    older = tmp_path / "old.pem"
    older.write_bytes(old.public_bytes(serialization.Encoding.PEM))
    r = jgw("certs", "install", *target(world), "--crl", str(older))
    assert r.returncode == 78 and "un-revoke" in r.stderr
    assert [p.name for p in world.a.cd.crls.iterdir()] == ["dev-ca.pem"]


def test_expired_crl_is_replaced_by_install(world: World, tmp_path: Path) -> None:
    """When the installed CRL has expired (the node refuses to load), installing the new one still works."""
    now = dt.datetime.now(dt.UTC)
    expired = world.ca.make_crl(now, last_update=now - 9 * DAY, next_update=now - DAY)
    (world.a.cd.crls / "dev-ca.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    r = jgw("certs", "status", *target(world))
    assert r.returncode == 1 and "crl-expired" in r.stdout
    fresh = world.ca.write_crl(now)
    assert jgw("certs", "install", *target(world), "--crl", str(fresh)).returncode == 0
    assert jgw("certs", "status", *target(world)).returncode == 0


def test_peer_install_keeps_the_previous_certificate(world: World, tmp_path: Path) -> None:
    """Installing a peer's renewed certificate keeps the old one as .previous (overlap); the same file
    again is a no-op; a certificate naming another node is refused."""
    now = dt.datetime.now(dt.UTC)
    peer_dir = world.a.cd.peers / "dc-b"
    old = (peer_dir / "signing.pem").read_bytes()
    cert = world.ca.issue(new_key().public_key(), Purpose.SIGNING, now, node_id="dc-b")
    new = tmp_path / "signing.pem"
    write_atomic(new, pem_certificates([cert]))
    r = jgw("certs", "install", *target(world), "--peer", "dc-b", str(new))
    assert r.returncode == 0, r.stderr
    assert (peer_dir / "signing.previous.pem").read_bytes() == old
    assert (peer_dir / "signing.pem").read_bytes() == new.read_bytes()
    r = jgw("certs", "install", *target(world), "--peer", "dc-b", str(new))
    assert "already installed" in r.stdout
    r = jgw("certs", "install", *target(world), "--peer", "cs-c", str(new))
    assert r.returncode == 78 and "name-mismatch" in r.stderr


def test_export_then_peer_install_roundtrip(world: World, tmp_path: Path) -> None:
    """What 'jgw certs export' writes at one site installs cleanly at the other."""
    out = tmp_path / "usb"
    r = jgw("certs", "export", *target(world), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["encryption-hybrid.json", "encryption.pem",
                                                     "signing-mldsa65.pem", "signing.pem"]
    shutil.rmtree(world.b.cd.peers / "city-a")
    r = jgw("certs", "install", *target(world, "b"), "--peer", "city-a", *map(str, sorted(out.iterdir())))
    assert r.returncode == 0 and "4 installed, 0 failed" in r.stdout, r.stderr
    assert jgw("certs", "status", *target(world, "b")).returncode == 0


def test_anchor_install_prints_the_fingerprint(world: World, tmp_path: Path, other_ca: DevCa) -> None:
    """A new anchor is installed with its SHA-256 fingerprint shown for comparison; a non-CA is refused."""
    r = jgw("certs", "install", *target(world), "--anchor", str(other_ca.cert_path))
    assert r.returncode == 0 and "SHA-256 fingerprint" in r.stdout, r.stderr
    leaf = tmp_path / "leaf.pem"
    write_atomic(leaf, (world.a.cd.live_dir() / "signing.pem").read_bytes())
    r = jgw("certs", "install", *target(world), "--anchor", str(leaf))
    assert r.returncode == 78 and "not a CA certificate" in r.stderr


def test_lock_contention_exit_75(world: World) -> None:
    """While another certs command holds the lock, rotate exits 75 at once."""
    cd = CertsDir(world.a.root)
    with cd.locked():
        r = jgw("certs", "rotate", *target(world))
    assert r.returncode == 75 and "another jgw certs command" in r.stderr


def test_usage_errors(world: World) -> None:
    """No node named: exit 64 with what to give."""
    r = jgw("certs", "status")
    assert r.returncode == 64 and "--certs-dir DIR --node ID" in r.stderr


def test_init_dev_refuses_a_non_empty_directory(world: World) -> None:
    r = jgw("pki", "init-dev", str(world.pki.directory), "--node", "x-1")
    assert r.returncode == 64 and "not empty" in r.stderr


def test_world_readable_key_in_staging_stops_rotate_with_77(world: World, tmp_path: Path) -> None:
    """A staged key with loose permissions stops the rotation with exit 77 and the chmod to run."""
    issued = csr_and_issue(world, "encryption", tmp_path)
    assert jgw("certs", "install", *target(world), str(issued)).returncode == 0
    (world.a.cd.staging / "encryption.key").chmod(0o644)
    r = jgw("certs", "rotate", *target(world))
    assert r.returncode == 77 and "chmod 600" in r.stderr and world.a.cd.pointer("live") == "gen-0001"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the directory to another user")
def test_root_acts_as_the_owner_of_the_certs_dir(now: dt.datetime) -> None:
    """Staff running jgw as root still produce files the daemon's user owns (0600, its uid)."""
    base = Path(tempfile.mkdtemp(prefix="jgw-owner-"))
    try:
        base.chmod(0o711)
        pki = init_dev(base / "pki", ["city-a"], now)
        root = pki.nodes["city-a"]
        (base / "pki").chmod(0o711)
        nobody = pwd.getpwnam("nobody")
        for path in [root, *root.rglob("*")]:
            os.lchown(path, nobody.pw_uid, nobody.pw_gid)
        r = jgw("pki", "csr", "--certs-dir", str(root), "--node", "city-a", "--purpose", "signing")
        assert r.returncode == 0, r.stderr
        key = root / "staging" / "signing.key"
        st = key.stat()
        assert (st.st_uid, st.st_mode & 0o777) == (nobody.pw_uid, 0o600)
        r = jgw("certs", "status", "--certs-dir", str(root), "--node", "city-a")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        shutil.rmtree(base)


def test_file_system_errors_end_in_one_line(tmp_path: Path) -> None:
    """Whatever the file system throws comes out as one line with the file and a sysexits code."""
    from gateway.errors import PermissionError_, TempFailError
    from gateway.pki.errors import CertificateError, os_errors

    cases: list[tuple[OSError, type, int]] = [
        (PermissionError(13, "Permission denied", "/etc/jgw/certs/.lock"), PermissionError_, 77),
        (OSError(28, "No space left on device", "/etc/jgw/certs/archive"), TempFailError, 75),
        (IsADirectoryError(21, "Is a directory", "/x"), CertificateError, 78)]
    for exc, kind, code in cases:
        with pytest.raises(kind) as info, os_errors("certs"):
            raise exc
        assert info.value.exit_code == code and str(exc.filename) in str(info.value)
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    r = jgw("pki", "csr", "--certs-dir", str(not_a_dir), "--node", "city-a", "--purpose", "signing")
    assert r.returncode in (75, 77, 78), r.stderr
    assert "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
    assert str(not_a_dir) in r.stderr


def test_first_install_from_an_empty_directory(world: World, tmp_path: Path) -> None:
    """A new node starts from nothing: anchor, CRL, three requests, issued certificates, first rotation."""
    root = tmp_path / "new-node"
    args = ["--certs-dir", str(root), "--node", "cs-c"]
    assert jgw("certs", "install", *args, "--anchor", str(world.ca.cert_path)).returncode == 0
    assert jgw("certs", "install", *args, "--crl", str(world.ca.crl_path)).returncode == 0
    issued = []
    for slot in ("tls-client", "signing", "encryption"):
        r = jgw("pki", "csr", *args, "--purpose", slot)
        assert r.returncode == 0, r.stderr
        out = tmp_path / f"{slot}.pem"
        r = jgw("pki", "issue-dev", str(world.ca.directory), str(root / "staging" / f"{slot}.csr"),
                "--purpose", slot, "--node", "cs-c", "--out", str(out))
        assert r.returncode == 0, r.stderr
        issued.append(str(out))
    r = jgw("certs", "install", *args, *issued)
    assert r.returncode == 0 and "3 installed" in r.stdout, r.stderr
    r = jgw("certs", "rotate", *args, "--no-signal")
    assert r.returncode == 0 and "live: (none) -> gen-0001" in r.stdout, r.stderr
    assert jgw("certs", "status", *args).returncode == 0
    r = jgw("pki", "csr", "--certs-dir", str(root / "live" / "tls-client.pem"), "--node", "cs-c",
            "--purpose", "signing")
    assert r.returncode == 78 and "not a directory" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_rotate_refuses_keys_the_running_daemon_could_not_read(world: World, tmp_path: Path) -> None:
    """jgw runs as 'nobody', the certs directory belongs to root: the new keys would be root's 0600
    files the daemon cannot read, so rotate stops (77) before switching and says what to do."""
    import subprocess

    nobody = pwd.getpwnam("nobody")
    state = tmp_path / "state"
    state.mkdir()
    # stands in for the daemon: a process of that user whose argv says jgw
    daemon = subprocess.Popen(["/bin/sh", "-c", "echo ready; sleep 30", "jgw"], stdout=subprocess.PIPE,
                              text=True, user=nobody.pw_uid, cwd="/", start_new_session=True)
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
        (state / "jgw.pid").write_text(str(daemon.pid))
        issued = csr_and_issue(world, "signing", tmp_path)
        assert jgw("certs", "install", *target(world), str(issued)).returncode == 0
        assert jgw("pki", "hybrid", *target(world)).returncode == 0
        r = jgw("certs", "rotate", *target(world), "--state-dir", str(state))
        assert r.returncode == 77, r.stdout + r.stderr
        assert f"runs as uid {nobody.pw_uid}" in r.stderr and "could not read" in r.stderr
        assert world.a.cd.pointer("live") == "gen-0001"
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)  # its own process group: sh and its sleep
        daemon.wait()
