"""Certificate rotation through two running daemons, as staff do it at 3 a.m., with traffic flowing.

Two real ``jgw run`` sites (see ``sites.py``): the city hall seals to the data centre over mTLS, the
data centre seals replies back. Producers publish continuously with publisher confirms at both
sites while staff use only the real CLI (``jgw pki csr``, ``jgw pki issue-dev``, ``jgw certs
install|export|rotate|rollback``, ``jgw reload``) in the runbook's order (ops/runbooks/cert-rotation).

What a user could observe, asserted: every message sent arrives once, byte for byte; nothing is
quarantined or dead-lettered; no producer saw an error; the reload counters; the generation on disk
and in the daemon's metrics; the broker's own view of which client certificate each connection
uses; and, read off the wire like an auditor would, which keys signed and were encrypted to.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.keyring import certificate_key_id
from gateway.pki.devca import DevCa
from gateway.pki.files import pem_certificates, read_certificate, write_atomic
from gateway.pki.generation import SLOT_BY_NAME
from tests.lab.faultproxy import FaultProxyServer
from tests.lab.harness import Amqp, Received
from tests.lab.rabbitnode import PrivateNode, rabbitmq_installed
from tests.rotation.sites import (
    CITY,
    DC,
    Sites,
    Traffic,
    assert_exactly_delivered,
    broker_validity,
    client_certificates,
    copy_pki,
    envelopes,
    jgw,
    jgw_ok,
    sample,
    start_dc_broker,
    tls_connections,
    wait_until,
)

if TYPE_CHECKING:
    from toxiproxy.proxy import Proxy

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not rabbitmq_installed(), reason="rabbitmq-server is not installed")]

SLOTS = ("tls-client", "signing", "encryption")
PEER = {CITY: DC, DC: CITY}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dev PKI per module (its CA and broker certificate); each test works on a copy."""
    pki = tmp_path_factory.mktemp("template") / "pki"
    jgw_ok("pki", "init-dev", pki, "--node", CITY, "--node", DC, "--no-pq")
    return pki


@pytest.fixture(scope="module")
def dc_node(tmp_path_factory: pytest.TempPathFactory, template: Path) -> Iterator[PrivateNode]:
    node = start_dc_broker(tmp_path_factory.mktemp("brokers"), template)
    yield node
    node.destroy()


@pytest.fixture
def sites(tmp_path: Path, template: Path, dc_node: PrivateNode, main_broker: str) -> Iterator[Sites]:
    s = Sites(tmp_path, copy_pki(template, tmp_path / "pki"), dc_node)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def lgwan_sites(tmp_path: Path, template: Path, dc_node: PrivateNode, main_broker: str
                ) -> Iterator[tuple[Sites, Proxy]]:
    """Both sites, with the city hall's link to the data centre's broker through a fault proxy."""
    from toxiproxy import Toxiproxy

    assert dc_node.tls is not None
    with FaultProxyServer() as server:
        server.configure_client()
        lgwan = Toxiproxy().create(upstream=f"127.0.0.1:{dc_node.tls.port}", name="lgwan")
        port = int(lgwan.listen.rsplit(":", 1)[1])
        s = Sites(tmp_path, copy_pki(template, tmp_path / "pki"), dc_node,
                  lgwan_url=f"amqps://localhost:{port}/%2F")
        try:
            s.start()
            yield s, lgwan
        finally:
            s.stop()


def cert(sites: Sites, node: str, generation: str, slot: str) -> x509.Certificate:
    return read_certificate(sites.certs(node) / "archive" / generation / f"{slot}.pem")


def kid(sites: Sites, node: str, generation: str, slot: str) -> bytes:
    return bytes.fromhex(certificate_key_id(cert(sites, node, generation, slot)))


def declare_taps(sites: Sites) -> tuple[str, str]:
    """Extra queues on the data centre's broker that get a copy of every envelope in each direction."""
    taps = (f"{sites.prefix}.tap-in", f"{sites.prefix}.tap-out")
    with Amqp(sites.dc_node.url) as dc:
        for queue, exchange, key in ((taps[0], sites.exchange_in, "ido-file"),
                                     (taps[1], sites.exchange_out, "reply")):
            dc.declare_queue(queue, quorum=False)
            dc.bind(queue, exchange, key)
    return taps


def rotate_site(sites: Sites, node: str, days: int) -> float:
    """The runbook, steps 1-7, for every slot of ``node``; returns when the daemon switched (time.time)."""
    cfg, peer_cfg = sites.config(node), sites.config(PEER[node])
    staging, issued, usb = sites.certs(node) / "staging", sites.tmp / "issued" / node, sites.tmp / "usb"
    issued.mkdir(parents=True)
    ca = DevCa.open(sites.pki / "ca")
    for slot in SLOTS:  # 1. keys and requests; 2. the CA issues (another organisation: done in-process)
        jgw_ok("pki", "csr", cfg, "--purpose", slot)
        request = x509.load_pem_x509_csr((staging / f"{slot}.csr").read_bytes())
        issued_cert = ca.issue_csr(request, SLOT_BY_NAME[slot].purpose, dt.datetime.now(dt.UTC), node_id=node,
                                   days=days)
        write_atomic(issued / f"{slot}.pem", pem_certificates([issued_cert]))
    out = jgw_ok("certs", "install", cfg, *sorted(issued.iterdir()))  # 3. into staging only
    assert "3 installed" in out, out
    # 4. peers first learn the new signing certificate, and reload
    jgw_ok("certs", "export", cfg, "--staging", "--out", usb / f"{node}-signing")
    jgw_ok("certs", "install", peer_cfg, "--peer", node, *sorted((usb / f"{node}-signing").iterdir()))
    assert "reloaded: generation" in jgw_ok("reload", peer_cfg)
    # 5. rotate: checks the broker accepts the new TLS certificate, switches, SIGHUPs the daemon
    before = sites.reloads(node, "success")
    out = jgw_ok("certs", "rotate", cfg, "--check-brokers")
    assert "sent SIGHUP to jgw" in out, out
    sites.wait_reloads(node, "success", before + 1)
    switched = time.time()
    # 7. then the new encryption certificate goes to the peers
    jgw_ok("certs", "export", cfg, "--out", usb / node)
    jgw_ok("certs", "install", peer_cfg, "--peer", node, *sorted((usb / node).iterdir()))
    jgw_ok("reload", peer_cfg)
    return switched


def test_rotating_both_sites_under_load_loses_nothing(sites: Sites) -> None:
    """Both sites rotate TLS client, signing and encryption keys in the runbook's order while both
    business systems publish: nothing lost, nothing quarantined, no producer error; afterwards the
    daemons, the broker and the envelopes on the wire all show the new generation."""
    tap_in, tap_out = declare_taps(sites)
    crl_before = sample(sites.metrics(CITY), "jgw_crl_next_update_timestamp_seconds", issuer="jgw dev CA")
    with Traffic(sites) as traffic:
        # the CA's daily CRL arrives during the change window; both nodes install it
        now = dt.datetime.now(dt.UTC)
        DevCa.open(sites.pki / "ca").write_crl(now, next_update=now + dt.timedelta(days=45))
        for node in (CITY, DC):
            jgw_ok("certs", "install", sites.config(node), "--crl", sites.pki / "ca" / "crl.pem")
        switched = {CITY: rotate_site(sites, CITY, days=120)}
        switched[DC] = rotate_site(sites, DC, days=150)
        time.sleep(2.0)  # traffic keeps flowing on the new generation
        at_dc, at_city = traffic.delivered()
    sent_city, sent_dc = traffic.city.sent, traffic.dc.sent
    assert traffic.city.errors == [] and traffic.dc.errors == [], "producers saw errors"
    assert len(sent_city) > 300 and len(sent_dc) > 300, "traffic flowed through the whole rotation"
    assert_exactly_delivered(sent_city, at_dc, "city hall → data centre")
    assert_exactly_delivered(sent_dc, at_city, "data centre → city hall")

    assert_nothing_set_aside(sites)
    metrics = {node: sites.metrics(node) for node in (CITY, DC)}
    # each daemon reloaded three times (peer's signing cert, own rotation, peer's encryption cert)
    for node in (CITY, DC):
        assert sample(metrics[node], "jgw_reloads_total", result="success") == 3, node
        assert sample(metrics[node], "jgw_reloads_total", result="failure") == 0, node
        assert sites.live_generation(node) == "gen-0002"
        status = jgw("certs", "status", sites.config(node), "--json")
        assert status.returncode == 0, status.stdout
        assert '"live": "gen-0002"' in status.stdout and '"previous": "gen-0001"' in status.stdout

    # the expiry metrics show the new certificates, own and peer's, and the renewed CRL
    for node in (CITY, DC):
        for slot in SLOTS:
            new = cert(sites, node, "gen-0002", slot).not_valid_after_utc.timestamp()
            assert sample(metrics[node], "jgw_certificate_expiry_timestamp_seconds", purpose=slot,
                          subject=node) == new, (node, slot)
        for slot in ("signing", "encryption"):
            peer_new = cert(sites, PEER[node], "gen-0002", slot).not_valid_after_utc.timestamp()
            assert sample(metrics[node], "jgw_certificate_expiry_timestamp_seconds", purpose=slot,
                          subject=PEER[node]) == peer_new, (node, "peer", slot)
        crl_after = sample(metrics[node], "jgw_crl_next_update_timestamp_seconds", issuer="jgw dev CA")
        assert crl_after > crl_before + 10 * 86400, "the renewed CRL (45 days instead of 30) is exported"

    # the broker's view: every TLS connection logs in with the node's new client certificate
    for node in (CITY, DC):  # each node has a publishing and a consuming connection there
        new_identity = broker_validity(cert(sites, node, "gen-0002", "tls-client"))
        mine = client_certificates(sites.dc_node, node, expect=new_identity)
        assert {validity for _name, validity in mine} == {new_identity}, (new_identity, mine)

    # on the wire, as an auditor reads it: old keys, then new keys; and envelopes encrypted to the
    # receiver's previous key after it had switched, which it still opened (the overlap window)
    for tap, sender, receiver in ((tap_in, CITY, DC), (tap_out, DC, CITY)):
        seen = sorted(envelopes(sites.dc_node.url, tap), key=lambda e: e.header.created_at_ms)
        signed = {e.header.signing_key_ids[0] for e in seen}
        to = {e.header.recipients[0].key_id for e in seen}
        old_sign, new_sign = (kid(sites, sender, g, "signing") for g in ("gen-0001", "gen-0002"))
        old_enc, new_enc = (kid(sites, receiver, g, "encryption") for g in ("gen-0001", "gen-0002"))
        assert signed == {old_sign, new_sign}, f"{sender} signed with {signed}"
        assert to == {old_enc, new_enc}, f"{sender} encrypted to {to}"
        last = seen[-1].header
        assert (last.signing_key_ids[0], last.recipients[0].key_id) == (new_sign, new_enc)
        overlap = [e for e in seen if e.header.recipients[0].key_id == old_enc
                   and e.header.created_at_ms > switched[receiver] * 1000]
        assert overlap, f"no message to {receiver}'s previous key after it switched: overlap not exercised"

    # the audit trail, for the auditor years later: each reload recorded with the generations, intact
    for node in (CITY, DC):
        trail = sites.config(node).parent / "state" / "audit"
        shown = jgw_ok("audit", "show", trail, "--event", "cert-change", "--json")
        changes = [json.loads(line) for line in shown.splitlines()]
        assert [(c.get("outcome"), c.get("old"), c.get("new")) for c in changes].count(
            ("loaded", "gen-0001", "gen-0002")) == 1, changes
        assert len(changes) == 3 and all(c.get("outcome") == "loaded" for c in changes), changes
        assert jgw("audit", "verify", trail).returncode == 0


def test_a_reload_moves_only_the_links_whose_tls_files_changed(sites: Sites) -> None:
    """A peer's new signing certificate changes nothing about our TLS connections: the reload keeps
    them (the broker lists the very same client ports). A new CRL does change what the broker's
    certificate is checked against, so that reload moves both links to new connections."""
    def city_ports() -> set[int]:
        return {c["peer_port"] for c in tls_connections(sites.dc_node) if c["user"] == CITY}

    ca = DevCa.open(sites.pki / "ca")
    signing = read_certificate(sites.certs(DC) / "live" / "signing.pem")
    key = serialization.load_pem_private_key((sites.certs(DC) / "live" / "signing.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    request = x509.CertificateSigningRequestBuilder().subject_name(signing.subject).sign(key, hashes.SHA256())
    reissued = sites.tmp / "dc-signing.pem"  # the same key re-certified: only the peer directory changes
    write_atomic(reissued, pem_certificates([ca.issue_csr(request, SLOT_BY_NAME["signing"].purpose,
                                                          dt.datetime.now(dt.UTC), node_id=DC, days=60)]))
    with Traffic(sites) as traffic:
        ports = wait_until(lambda: (p := city_ports()) and len(p) == 2 and p, 30, "both city hall links")
        jgw_ok("certs", "install", sites.config(CITY), "--peer", DC, reissued)
        out = jgw_ok("reload", sites.config(CITY))
        assert "0 link(s) moved, 2 unchanged" in out, out
        assert city_ports() == ports, "the connections were kept"

        ca.write_crl(dt.datetime.now(dt.UTC))
        jgw_ok("certs", "install", sites.config(CITY), "--crl", sites.pki / "ca" / "crl.pem")
        out = jgw_ok("reload", sites.config(CITY))
        assert "2 link(s) moved, 0 unchanged" in out, out
        moved = wait_until(lambda: (p := city_ports()) and len(p) == 2 and p, 30, "both links reconnected")
        assert not moved & ports, (ports, moved)
        at_dc, at_city = traffic.delivered()
    assert_all_delivered(sites, traffic, at_dc, at_city)


def test_rotation_to_a_certificate_the_broker_refuses_keeps_the_old_identity(sites: Sites) -> None:
    """The city hall's 団体 moved to a new CA and issued the next TLS client certificate from it, but
    the data centre's broker was not told to trust that CA yet. ``rotate --check-brokers`` stops
    before switching; forced through, the daemon's reload is refused (``jgw reload`` exits 1 with the
    reason), it keeps its old identity and keeps relaying; ``jgw certs rollback`` recovers."""
    cfg = sites.config(CITY)
    now = dt.datetime.now(dt.UTC)
    new_ca = DevCa.create(sites.tmp / "new-ca", now, name="cityhall CA 2")  # the 団体's new CA
    new_ca.write_crl(now, next_update=now + dt.timedelta(days=30))
    jgw_ok("certs", "install", cfg, "--anchor", new_ca.cert_path)
    jgw_ok("certs", "install", cfg, "--crl", new_ca.crl_path)
    jgw_ok("pki", "csr", cfg, "--purpose", "tls-client")
    issued = sites.tmp / "tls-client-new-ca.pem"
    jgw_ok("pki", "issue-dev", new_ca.directory, sites.certs(CITY) / "staging" / "tls-client.csr",
           "--purpose", "tls-client", "--node", CITY, "--out", issued)
    jgw_ok("certs", "install", cfg, issued)
    old_identity = broker_validity(cert(sites, CITY, "gen-0001", "tls-client"))
    refusal = "refused our client certificate"  # TLS 1.3: the alert, or an EOF in its place

    def assert_old_identity() -> None:
        """The broker sees the city hall's connections, every one with the old certificate."""
        mine = client_certificates(sites.dc_node, CITY, expect=old_identity)
        assert {validity for _name, validity in mine} == {old_identity}, (old_identity, mine)

    with Traffic(sites) as traffic:
        r = jgw("certs", "rotate", cfg, "--check-brokers")
        assert r.returncode == 69 and refusal in r.stderr, (r.returncode, r.stdout, r.stderr)
        assert sites.live_generation(CITY) == "gen-0001", "nothing switched"

        # staff go ahead without the check (say the link was down a moment ago) and reload
        jgw_ok("certs", "rotate", cfg, "--no-signal")
        assert sites.live_generation(CITY) == "gen-0002"
        r = jgw("reload", cfg)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "reload refused, still running on the previous material" in r.stdout
        assert refusal in r.stdout and "datacenter" in r.stdout, r.stdout
        metrics = sites.metrics(CITY)
        assert sample(metrics, "jgw_reloads_total", result="failure") == 1
        assert sample(metrics, "jgw_reloads_total", result="success") == 0
        assert sample(metrics, "jgw_tls_handshake_failures_total", broker="datacenter") >= 1
        assert sample(metrics, "jgw_broker_up", broker="datacenter", role="publish") == 1
        assert_old_identity()  # the daemon stays on its old identity
        assert "reload refused" in sites.daemon(CITY).log()
        shown = jgw("status", cfg).stdout  # what staff see afterwards: disk and daemon disagree
        assert "certificates: generation gen-0001; live on disk is gen-0002, not loaded" in shown, shown
        assert_relaying(sites, CITY, sites.to_dc, sites.from_dc)

        out = jgw_ok("certs", "rollback", cfg)  # the runbook's way back; signals the daemon
        assert "sent SIGHUP to jgw" in out, out
        sites.wait_reloads(CITY, "success", 1)
        assert sites.live_generation(CITY) == "gen-0001"
        assert_old_identity()
        shown = jgw("status", cfg).stdout
        assert "certificates: generation gen-0001\n" in shown, shown
        at_dc, at_city = traffic.delivered()
    assert_all_delivered(sites, traffic, at_dc, at_city)


def test_reload_refuses_bad_material_and_keeps_relaying(sites: Sites) -> None:
    """Two mistakes staff make: a private key left world-readable (a careless ``chmod -R``), and a
    CRL whose nextUpdate passed because nobody installed the next one. Each reload is refused with
    the reason (``jgw reload`` at the city hall, SIGHUP as ``systemctl reload`` at the data centre);
    the daemons keep their material and relay on; fixed, the next reload succeeds."""
    with Traffic(sites) as traffic:
        key = sites.certs(CITY) / "live" / "signing.key"
        key.chmod(0o644)
        r = jgw("reload", sites.config(CITY))
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "key-mode" in r.stdout and f"chmod 600 {key.resolve()}" in r.stdout, r.stdout
        key.chmod(0o600)
        assert "reloaded: generation gen-0001" in jgw_ok("reload", sites.config(CITY))

        crl = sites.certs(DC) / "trust" / "crls" / "dev-ca.pem"
        now = dt.datetime.now(dt.UTC)
        ca = DevCa.open(sites.pki / "ca")
        day = dt.timedelta(days=1)
        stale = ca.make_crl(now, last_update=now - 31 * day, next_update=now - day)
        crl.write_bytes(stale.public_bytes(serialization.Encoding.PEM))  # what 31 days without renewal leave
        dc_pid = int((sites.config(DC).parent / "state" / "jgw.pid").read_text())
        os.kill(dc_pid, signal.SIGHUP)
        sites.wait_reloads(DC, "failure", 1)
        log = sites.daemon(DC).log()
        assert "reload refused" in log and "crl-expired" in log, log[-3000:]
        assert_relaying(sites, DC, sites.store, sites.reply)

        ca.write_crl(dt.datetime.now(dt.UTC))  # the CA's current CRL, installed the normal way
        jgw_ok("certs", "install", sites.config(DC), "--crl", sites.pki / "ca" / "crl.pem")
        os.kill(dc_pid, signal.SIGHUP)
        sites.wait_reloads(DC, "success", 1)
        at_dc, at_city = traffic.delivered()
    assert_all_delivered(sites, traffic, at_dc, at_city)
    for node in (CITY, DC):
        metrics = sites.metrics(node)
        assert sample(metrics, "jgw_reloads_total", result="failure") == 1, node
        assert sample(metrics, "jgw_reloads_total", result="success") == 1, node


def assert_relaying(sites: Sites, node: str, *routes: str) -> None:
    """Messages keep being delivered on these routes of ``node`` (now, not only in the end)."""
    def delivered() -> list[float]:
        return [sites.outcome(node, route, "delivered") for route in routes]

    before = delivered()
    wait_until(lambda: all(now >= was + 20 for now, was in zip(delivered(), before, strict=True)), 30,
               f"{node} still relaying on {routes}")


def assert_all_delivered(sites: Sites, traffic: Traffic, at_dc: list[Received], at_city: list[Received]) -> None:
    """What every test here ends with: no producer error, each message delivered once both ways,
    nothing quarantined or dead-lettered."""
    assert traffic.city.errors == [] and traffic.dc.errors == [], "producers saw errors"
    assert_exactly_delivered(traffic.city.sent, at_dc, "city hall → data centre")
    assert_exactly_delivered(traffic.dc.sent, at_city, "data centre → city hall")
    assert_nothing_set_aside(sites)


def assert_nothing_set_aside(sites: Sites) -> None:
    for node, route in ((CITY, sites.to_dc), (CITY, sites.from_dc), (DC, sites.store), (DC, sites.reply)):
        metrics = sites.metrics(node)
        for outcome in ("quarantined", "dead_lettered"):
            count = sample(metrics, "jgw_messages_total", route=route, outcome=outcome)
            assert count == 0, f"{node} {route}: {count:g} {outcome}"


def test_a_crl_takes_effect_while_the_lgwan_link_is_down(lgwan_sites: tuple[Sites, Proxy]) -> None:
    """The CA's new CRL must be applied at once (key compromise), also while LGWAN is cut: the city
    hall's TLS identity does not change, so its reload must not wait for the unreachable broker.
    Messages wait at the city hall meanwhile and all arrive when the link is back."""
    sites, lgwan = lgwan_sites
    cfg = sites.config(CITY)
    with Traffic(sites) as traffic:
        lgwan.disable()
        wait_until(lambda: sample(sites.metrics(CITY), "jgw_broker_up", broker="datacenter", role="publish") == 0,
                   30, "the city hall sees the link down")
        now = dt.datetime.now(dt.UTC)
        DevCa.open(sites.pki / "ca").write_crl(now, next_update=now + dt.timedelta(days=40))
        jgw_ok("certs", "install", cfg, "--crl", sites.pki / "ca" / "crl.pem")
        r = jgw("reload", cfg)
        assert r.returncode == 0, (r.stdout, r.stderr)
        crl = read_crl_next_update(sites.certs(CITY) / "trust" / "crls" / "dev-ca.pem")
        assert sample(sites.metrics(CITY), "jgw_crl_next_update_timestamp_seconds", issuer="jgw dev CA") == crl
        lgwan.enable()
        at_dc, at_city = traffic.delivered()
    assert_all_delivered(sites, traffic, at_dc, at_city)


def read_crl_next_update(path: Path) -> float:
    next_update = x509.load_pem_x509_crl(path.read_bytes()).next_update_utc
    assert next_update is not None
    return next_update.timestamp()
