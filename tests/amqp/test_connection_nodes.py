"""The lean connection against a private RabbitMQ node: TLS with EXTERNAL, refused handshakes,
connection.blocked under a memory alarm, and a killed node.

One node for the module (mTLS listener with verify_peer and fail_if_no_peer_cert, certificates from
a throw-away CA); the kill comes last and the fixture destroys what is left.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.amqp.connection import ConnectError, Connection, ConnectParams
from gateway.amqp.properties import Properties
from tests.amqp.conftest import aio
from tests.lab.rabbitnode import PrivateNode, TlsListener, rabbitmq_installed
from tests.lab.testca import Issued, TlsCa

pytestmark = pytest.mark.skipif(not rabbitmq_installed(), reason="rabbitmq-server is not installed")

CLIENT_CN = "jgw-codec-client"


@dataclass
class Env:
    node: PrivateNode
    ca: TlsCa
    client: Issued
    other_ca: TlsCa

    @property
    def tls_port(self) -> int:
        assert self.node.tls is not None
        return self.node.tls.port

    def context(self, *, cert: bool = True, trust: TlsCa | None = None, tls12: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str((trust or self.ca).cert_path))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if tls12:
            # TLS 1.2 settles the client certificate inside the handshake, so the refusal is seen there
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if cert:
            ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        return ctx

    def tls_params(self, ctx: ssl.SSLContext, **kw: object) -> ConnectParams:
        return ConnectParams("127.0.0.1", self.tls_port, external=True, ssl_context=ctx, server_hostname="localhost",
                             connect_timeout=15, **kw)  # type: ignore[arg-type]

    def plain_params(self, **kw: object) -> ConnectParams:
        return ConnectParams("127.0.0.1", self.node.amqp_port, connect_timeout=15, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("codec-node")
    ca = TlsCa(tmp / "ca")
    server = ca.issue("localhost", server=True)
    client = ca.issue(CLIENT_CN, server=False)
    node = PrivateNode(base=tmp / "nodes", tls=TlsListener(ca.cert_path, server.cert, server.key))
    node.start()
    try:
        node.ctl("add_user", CLIENT_CN, "unused-password-cleared-below")
        node.ctl("clear_password", CLIENT_CN)
        node.ctl("set_permissions", "-p", "/", CLIENT_CN, ".*", ".*", ".*")
        yield Env(node, ca, client, TlsCa(tmp / "other", cn="jgw-untrusted-ca"))
    finally:
        node.destroy()


@aio()
async def test_tls_with_external_login_and_client_certificate(env: Env) -> None:
    """Over mTLS, EXTERNAL logs in as the certificate's CN; publish and get work through TLS."""
    conn = await Connection.open(env.tls_params(env.context()))
    ch = await conn.channel()
    q, _, _ = await ch.queue_declare("", exclusive=True, durable=False)
    ch.publish("", q, b"over tls" * 20000, Properties(message_id="tls-1"))
    await ch.queue_declare(q, passive=True)
    got = await ch.get(q)
    assert got is not None and got.body == b"over tls" * 20000
    listed = await asyncio.to_thread(env.node.ctl, "list_connections", "user", "auth_mechanism", "ssl")
    assert f"{CLIENT_CN}\tEXTERNAL\ttrue" in listed.stdout
    conn.close()
    await conn.wait_closed()


@aio()
async def test_server_certificate_from_an_untrusted_ca_is_a_connect_error_with_ssl_cause(env: Env) -> None:
    """Our side refuses the broker's certificate: ConnectError, cause an ssl.SSLError (verification)."""
    with pytest.raises(ConnectError) as info:
        await Connection.open(env.tls_params(env.context(trust=env.other_ca)))
    assert isinstance(info.value.cause, ssl.SSLCertVerificationError)
    assert "TLS" in str(info.value)


@aio()
async def test_broker_refusing_a_client_without_certificate_gives_the_ssl_error(env: Env) -> None:
    """The broker refuses a client with no certificate (fail_if_no_peer_cert): ConnectError, cause ssl.SSLError."""
    with pytest.raises(ConnectError) as info:
        await Connection.open(env.tls_params(env.context(cert=False, tls12=True)))
    assert isinstance(info.value.cause, ssl.SSLError)


@aio()
async def test_wrong_hostname_is_refused(env: Env) -> None:
    """The hostname is checked against the broker's certificate (SNI and verification)."""
    params = env.tls_params(env.context())
    params.server_hostname = "broker.example"
    with pytest.raises(ConnectError) as info:
        await Connection.open(params)
    assert isinstance(info.value.cause, ssl.SSLCertVerificationError)


@aio()
async def test_external_on_the_plain_listener_is_refused(env: Env) -> None:
    """EXTERNAL without TLS is not offered by the broker: a ConnectError that says so."""
    with pytest.raises(ConnectError, match="EXTERNAL"):
        await Connection.open(env.plain_params(external=True))


@aio(timeout=90)
async def test_memory_alarm_blocks_then_unblocks(env: Env) -> None:
    """A memory alarm: on the next publish the broker sends connection.blocked (reason given to
    on_blocked and kept in ``blocked``); clearing it sends connection.unblocked (None)."""
    conn = await Connection.open(env.plain_params())
    seen: list[str | None] = []
    changed = asyncio.Event()

    def on_blocked(reason: str | None) -> None:
        seen.append(reason)
        changed.set()

    conn.on_blocked = on_blocked
    ch = await conn.channel()
    q, _, _ = await ch.queue_declare("", exclusive=True, durable=False)
    await asyncio.to_thread(env.node.ctl, "set_vm_memory_high_watermark", "0.0000001")
    try:
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            ch.publish("", q, b"during the alarm", Properties())
            try:
                await asyncio.wait_for(changed.wait(), 1)
            except TimeoutError:
                continue
        assert seen and seen[0] and "memory" in seen[0]
        assert conn.blocked == seen[0]
        changed.clear()
    finally:
        await asyncio.to_thread(env.node.ctl, "set_vm_memory_high_watermark", "0.4")
    await asyncio.wait_for(changed.wait(), 30)
    assert seen[-1] is None and conn.blocked is None
    assert conn.is_open
    conn.close()
    await conn.wait_closed()


@aio(timeout=60)
async def test_killed_node_resolves_closed_promptly(env: Env) -> None:
    """SIGKILL of the broker: ``closed`` resolves within a few seconds (code 0, connection lost),
    and every channel and pending RPC with it. Runs last: the node is gone afterwards."""
    conn = await Connection.open(env.plain_params(heartbeat=30))
    ch = await conn.channel()
    await asyncio.to_thread(env.node.kill)
    t0 = time.monotonic()
    reason = await asyncio.wait_for(conn.closed, 10)
    assert time.monotonic() - t0 < 5
    assert reason.code == 0 and not reason.by_broker and "connection lost" in reason.text
    assert (await ch.closed).code == 0
    assert not Path(env.node.base / "pid").exists()
