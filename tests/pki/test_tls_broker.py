"""mTLS with EXTERNAL against a real private RabbitMQ node (verify_peer, fail_if_no_peer_cert, CRLs).

One node for the module, destroyed at the end. Each refusal must come back as one clear line that
says whose certificate was refused and why.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from gateway.amqp.blocking import check_login
from gateway.config import TlsConfig
from gateway.errors import UnavailableError
from gateway.pki.devca import DevCa, new_key
from gateway.pki.devinit import DevPki, init_dev
from gateway.pki.errors import CertificateError, KeyFileModeError
from gateway.pki.files import pem_certificates, read_certificate, write_atomic, write_private_key
from gateway.pki.layout import CertsDir
from gateway.pki.material import load_node_material
from gateway.pki.purpose import Purpose
from gateway.pki.tls import client_context
from gateway.pki.trust import TrustStore
from tests.lab.rabbitnode import TlsListener, rabbitmq_installed
from tests.pki.crlnode import CrlCheckingNode
from tests.pki.jgwcli import run as jgw

pytestmark = pytest.mark.skipif(not rabbitmq_installed(), reason="rabbitmq-server is not installed")
REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC)


@dataclass
class Env:
    pki: DevPki
    node: CrlCheckingNode
    tmp: Path
    other_ca: DevCa

    @property
    def live(self) -> Path:
        return CertsDir(self.pki.nodes["city-a"]).live_dir()

    @property
    def crl(self) -> Path:
        return self.pki.nodes["city-a"] / "trust" / "crls" / "dev-ca.pem"

    def client(self, name: str, *, ca: DevCa | None = None, cn: str = "city-a",
               **kw: object) -> tuple[Path, Path]:
        """A TLS client certificate and key for ``cn`` from ``ca`` (default the dev CA)."""
        key = new_key()
        cert = (ca or self.pki.ca).issue(key.public_key(), Purpose.TLS_CLIENT, NOW, node_id=cn,
                                         **kw)  # type: ignore[arg-type]
        cert_path, key_path = self.tmp / f"{name}.pem", self.tmp / f"{name}.key"
        write_atomic(cert_path, pem_certificates([cert]))
        write_private_key(key_path, key)
        return cert_path, key_path

    def context(self, cert: Path | None, key: Path | None, *, crl: Path | None = None,
                tls12: bool = False) -> ssl.SSLContext:
        if cert is None or key is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cafile=str(self.pki.broker_ca))
        else:
            ctx = client_context(cafiles=(self.pki.broker_ca,), cert=cert, key=key,
                                 crlfiles=(crl or self.crl,))
        if tls12:
            # TLS 1.2 verifies the client certificate inside the handshake, so the broker's alert
            # always reaches us (with TLS 1.3 it may arrive after the handshake, or as a bare EOF).
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def login(self, ctx: ssl.SSLContext, hostname: str = "localhost") -> None:
        check_login("127.0.0.1", self.node.tls.port, ctx, server_hostname=hostname)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("tls")
    pki = init_dev(tmp / "pki", ["city-a"], NOW)
    node = CrlCheckingNode(base=tmp / "nodes",
                           tls=TlsListener(pki.broker_ca, pki.broker_cert, pki.broker_key),
                           crl_dir=tmp / "broker-crls")
    node.install_crl(pki.ca.crl_path)
    node.start()
    try:
        node.add_external_user("city-a")
        yield Env(pki, node, tmp, DevCa.create(tmp / "other-ca", NOW, name="untrusted CA"))
    finally:
        node.destroy()


def refusal(env: Env, ctx: ssl.SSLContext, hostname: str = "localhost") -> str:
    with pytest.raises(UnavailableError) as info:
        env.login(ctx, hostname)
    assert info.value.exit_code == 69
    return str(info.value)


def test_good_certificate_logs_in_with_external(env: Env) -> None:
    """The node's live TLS identity logs in with EXTERNAL as the user named by its CN."""
    ctx = env.context(env.live / "tls-client.pem", env.live / "tls-client.key")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.check_hostname
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    params = pika.ConnectionParameters(host="127.0.0.1", port=env.node.tls.port,  # type: ignore[union-attr]
                                       ssl_options=pika.SSLOptions(ctx, "localhost"),
                                       credentials=pika.credentials.ExternalCredentials())
    conn = pika.BlockingConnection(params)
    try:
        listed = env.node.ctl("list_connections", "user", "auth_mechanism", "ssl_protocol").stdout
        assert "city-a\tEXTERNAL\ttlsv1.3" in listed
    finally:
        conn.close()


def test_material_builds_the_context(env: Env) -> None:
    """What the daemon will use: load_node_material(...).ssl_context() logs in; so does the context for
    a [brokers.NAME.tls] table naming the broker's own CA, and one naming a CA we do not use fails."""
    material = load_node_material(env.pki.nodes["city-a"], "city-a", NOW)
    env.login(material.ssl_context())
    env.login(material.ssl_context_for(TlsConfig(server_hostname="localhost", external_auth=True,
                                                 ca=env.pki.broker_ca)))
    wrong = material.ssl_context_for(TlsConfig(server_hostname="localhost", external_auth=True,
                                               ca=env.other_ca.cert_path))
    assert "we do not trust the broker's certificate" in refusal(env, wrong)


def test_no_client_certificate(env: Env) -> None:
    """Without a client certificate the broker refuses (fail_if_no_peer_cert), and we say so."""
    text = refusal(env, env.context(None, None))
    assert "requires a client certificate" in text or "refused our client certificate" in text, text


def test_expired_client_certificate(env: Env) -> None:
    """An expired client certificate is refused by the broker; the message says expired."""
    cert, key = env.client("expired", not_before=NOW - dt.timedelta(days=60),
                           not_after=NOW - dt.timedelta(days=1))
    text = refusal(env, env.context(cert, key, tls12=True))
    assert "refused our client certificate: it has expired" in text, text
    # and our own pre-flight would never have used it:
    with pytest.raises(CertificateError) as info:
        TrustStore.load(env.pki.nodes["city-a"] / "trust", NOW).verify(
            read_certificate(cert), Purpose.TLS_CLIENT, at=NOW)
    assert info.value.code == "expired"


def test_client_certificate_from_another_ca(env: Env) -> None:
    """A client certificate from a CA the broker does not trust is refused: unknown CA."""
    cert, key = env.client("foreign", ca=env.other_ca)
    text = refusal(env, env.context(cert, key, tls12=True))
    assert "does not trust its CA" in text, text


def test_client_certificate_from_another_ca_tls13(env: Env) -> None:
    """With TLS 1.3 the refusal may reach us late or as a closed stream; either way it is one clear line."""
    cert, key = env.client("foreign13", ca=env.other_ca)
    text = refusal(env, env.context(cert, key))
    assert "refused our client certificate" in text or "probably refused our client certificate" in text, text


def test_revoked_client_certificate(env: Env) -> None:
    """A client certificate on the CRL the broker checks is refused as revoked; after it is revoked, our
    own trust store refuses it too."""
    cert, key = env.client("to-revoke")
    env.login(env.context(cert, key))  # fine before revocation
    ca = DevCa.open(env.pki.ca.directory)
    serial = read_certificate(cert).serial_number
    ca.revoke(serial, "key_compromise")
    try:
        crl = ca.write_crl(NOW)
        env.node.install_crl(crl)
        text = refusal(env, env.context(cert, key, tls12=True))
        assert "refused our client certificate: it is revoked" in text, text
        trust_dir = env.tmp / "trust-revoked"
        (trust_dir / "anchors").mkdir(parents=True)
        (trust_dir / "crls").mkdir()
        write_atomic(trust_dir / "anchors" / "ca.pem", ca.cert_path.read_bytes())
        write_atomic(trust_dir / "crls" / "ca.pem", crl.read_bytes())
        with pytest.raises(CertificateError) as info:
            TrustStore.load(trust_dir, NOW).verify(read_certificate(cert), Purpose.TLS_CLIENT, at=NOW)
        assert info.value.code == "revoked"
    finally:
        ca.revoked.pop(serial)
        env.node.install_crl(ca.write_crl(NOW))
    env.login(env.context(env.live / "tls-client.pem", env.live / "tls-client.key"))


def test_broker_certificate_revoked_in_our_crl(env: Env) -> None:
    """When our CRL lists the broker's certificate, we refuse the broker (VERIFY_CRL_CHECK_LEAF)."""
    ca = DevCa.open(env.pki.ca.directory)
    serial = read_certificate(env.pki.broker_cert).serial_number
    ca.revoke(serial, "key_compromise")
    try:
        crl_path = env.tmp / "crl-broker-revoked.pem"
        crl_path.write_bytes(ca.write_crl(NOW).read_bytes())
    finally:
        ca.revoked.pop(serial)
        ca.write_crl(NOW)
    text = refusal(env, env.context(env.live / "tls-client.pem", env.live / "tls-client.key", crl=crl_path))
    assert "the broker's certificate is revoked" in text, text


def test_wrong_server_hostname(env: Env) -> None:
    """The broker's certificate must name the host we expect."""
    ctx = env.context(env.live / "tls-client.pem", env.live / "tls-client.key")
    text = refusal(env, ctx, "broker.example")
    assert "does not name the expected server_hostname" in text, text


def test_broker_from_a_ca_we_do_not_trust(env: Env) -> None:
    """A broker whose certificate does not chain to our anchors is refused before any login."""
    ctx = client_context(cafiles=(env.other_ca.cert_path,), cert=env.live / "tls-client.pem",
                         key=env.live / "tls-client.key", crl_check=False)
    text = refusal(env, ctx)
    assert "we do not trust the broker's certificate" in text, text


def test_valid_certificate_without_a_broker_user(env: Env) -> None:
    """A good certificate whose CN has no EXTERNAL user on the broker: the message says what to create."""
    cert, key = env.client("stranger", cn="cs-unknown")
    text = refusal(env, env.context(cert, key))
    assert "rabbitmqctl add_user" in text, text


def test_context_refuses_a_world_readable_key(env: Env) -> None:
    """The context is not even built from a key others can read."""
    cert, key = env.client("loose")
    key.chmod(0o644)
    with pytest.raises(KeyFileModeError):
        env.context(cert, key)


def test_crl_check_needs_a_crl(env: Env) -> None:
    with pytest.raises(CertificateError) as info:
        client_context(cafiles=(env.pki.broker_ca,), cert=env.live / "tls-client.pem",
                       key=env.live / "tls-client.key", crlfiles=())
    assert info.value.code == "crl-missing"


def test_rotate_refuses_a_certificate_the_broker_does_not_accept(env: Env) -> None:
    """jgw certs rotate --check-brokers logs in with the staged TLS identity first; a certificate the
    broker refuses stops the rotation and live stays as it was. (Last in the module: it rotates city-a.)"""
    root = env.pki.nodes["city-a"]
    cd = CertsDir(root)
    config = env.tmp / "city-a.toml"
    config.write_text(f"""
[node]
id = "city-a"
state_dir = "{env.tmp / 'state'}"
certs_dir = "{root}"

[brokers.site]
urls = ["amqps://127.0.0.1:{env.node.tls.port}/%2F"]
[brokers.site.tls]
server_hostname = "localhost"
""")
    r = jgw("pki", "csr", str(config), "--purpose", "tls-client")
    assert r.returncode == 0, r.stderr
    csr = cd.staging / "tls-client.csr"
    # issued for the staged key but with a user name the broker does not know
    issued = env.tmp / "issued-tls.pem"
    ca = DevCa.open(env.pki.ca.directory)
    from cryptography import x509

    req = x509.load_pem_x509_csr(csr.read_bytes())
    cert = ca.issue(req.public_key(), Purpose.TLS_CLIENT, NOW, node_id="city-a", cn="city-a-renamed")  # type: ignore[arg-type]
    write_atomic(issued, pem_certificates([cert]))
    r = jgw("certs", "install", str(config), str(issued))
    assert r.returncode == 0, r.stderr
    before = cd.pointer("live")
    r = jgw("certs", "rotate", str(config), "--check-brokers")
    assert r.returncode == 69, (r.stdout, r.stderr)
    assert "rabbitmqctl add_user" in r.stderr and "Traceback" not in r.stderr
    assert cd.pointer("live") == before and cd.staging.is_dir()
    env.node.add_external_user("city-a-renamed")  # once the broker knows the new name ...
    r = jgw("certs", "rotate", str(config), "--check-brokers")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "accepts the new TLS certificate" in r.stdout and cd.pointer("live") != before
