"""The metrics endpoint on real sockets: formats, limits, idle clients, mTLS and certificate swap."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import ConfigError, DataError, NoInputError, UnavailableError
from gateway.metrics import Metrics
from gateway.service.metrics_http import Limits, MetricsServer, is_loopback, serve_metrics, server_tls_context
from tests.lab.testca import TlsCa
from tests.ops.loop_thread import LoopThread

FAST = Limits(handshake_timeout=1.0, header_timeout=1.0, write_timeout=2.0, max_connections=4)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics("test-node")
    m.init_route("juki-out")
    m.messages.labels("juki-out", "delivered").inc(3)
    return m


def get(server: MetricsServer, path: str = "/metrics", headers: dict[str, str] | None = None,
        method: str = "GET", context: ssl.SSLContext | None = None) -> tuple[int, dict[str, str], bytes]:
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_text_format_by_default(loop: LoopThread, metrics: Metrics) -> None:
    """A plain scrape gets text format 0.0.4 with the registry's series."""
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    try:
        status, headers, body = get(server)
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b'jgw_messages_total{outcome="delivered",route="juki-out"} 3.0' in body
        assert headers["connection"] == "close"
    finally:
        loop.run(server.close())


def test_openmetrics_by_accept_header(loop: LoopThread, metrics: Metrics) -> None:
    """Prometheus' own Accept header gets OpenMetrics, ending in # EOF."""
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    accept = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
              "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    try:
        status, headers, body = get(server, headers={"Accept": accept, "Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        assert headers["content-encoding"] == "gzip"
        text = gzip.decompress(body)
        assert text.endswith(b"# EOF\n")
        assert b'jgw_messages_total{outcome="delivered",route="juki-out"} 3.0' in text
    finally:
        loop.run(server.close())


def test_healthz_paths_and_methods(loop: LoopThread, metrics: Metrics) -> None:
    """/healthz follows the health callback; unknown paths are 404, other methods 405; nothing is echoed."""
    healthy = [True]
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, health=lambda: healthy[0], limits=FAST))
    try:
        assert get(server, "/healthz")[0] == 200
        healthy[0] = False
        status, _, body = get(server, "/healthz")
        assert (status, body) == (503, b"unhealthy\n")
        status, _, body = get(server, "/<script>123456789018")
        assert status == 404 and b"script" not in body and b"1234" not in body
        status, headers, _ = get(server, "/metrics", method="POST")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, body = get(server, "/metrics", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0
        assert raw(server.port, b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
        assert raw(server.port, b"GET /metrics SPDY/3\r\n\r\n").startswith(b"HTTP/1.1 505 ")
    finally:
        loop.run(server.close())


def test_idle_client_does_not_block_scrapes(loop: LoopThread, metrics: Metrics) -> None:
    """A client that connects and sends nothing (or half a request) costs one slot until it is timed out."""
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    try:
        idle = socket.create_connection(("127.0.0.1", server.port))
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        time.sleep(0.1)
        t0 = time.monotonic()
        assert get(server)[0] == 200
        assert time.monotonic() - t0 < 0.5
        # the stragglers are answered 408 and closed once the header timeout passes
        for s in (idle, slow):
            s.settimeout(5)
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408 "), reply
            s.close()
        deadline = time.monotonic() + 2
        while server.connections and time.monotonic() < deadline:  # the server's close may lag the client's
            time.sleep(0.01)
        assert server.connections == 0
    finally:
        loop.run(server.close())


def test_oversized_request_head(loop: LoopThread, metrics: Metrics) -> None:
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    try:
        reply = raw(server.port, b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 431 ")
    finally:
        loop.run(server.close())


def test_connection_cap(loop: LoopThread, metrics: Metrics) -> None:
    """Past max_connections a client is told 503 at once instead of queueing behind the others."""
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    hogs = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(FAST.max_connections)]
    try:
        time.sleep(0.2)
        assert get(server)[0] == 503
        assert server.rejected == 1
    finally:
        for h in hogs:
            h.close()
        loop.run(server.close())


def test_non_loopback_needs_client_certificates(loop: LoopThread, metrics: Metrics, tmp_path: Path) -> None:
    """Listening beyond loopback without mTLS is a configuration error naming file and key."""
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("gw.example")
    with pytest.raises(ConfigError) as err:
        loop.run(serve_metrics(metrics.registry, "0.0.0.0", 0, config_file="/etc/jgw/jgw.toml"))
    assert err.value.file == "/etc/jgw/jgw.toml" and err.value.key == "node.metrics_listen"
    ca = TlsCa(tmp_path / "ca")
    srv = ca.issue("metrics-server", server=True)
    no_client_auth = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    no_client_auth.load_cert_chain(srv.cert, srv.key)
    with pytest.raises(ConfigError):
        loop.run(serve_metrics(metrics.registry, "0.0.0.0", 0, ssl_context=no_client_auth))
    ctx = server_tls_context(srv.cert, srv.key, ca.cert_path)
    server = loop.run(serve_metrics(metrics.registry, "0.0.0.0", 0, ssl_context=ctx, limits=FAST))
    loop.run(server.close())


def test_port_in_use_is_unavailable(loop: LoopThread, metrics: Metrics) -> None:
    first = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    try:
        with pytest.raises(UnavailableError, match=r"cannot listen on 127\.0\.0\.1"):
            loop.run(serve_metrics(metrics.registry, "127.0.0.1", first.port))
    finally:
        loop.run(first.close())


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
    return ctx


def peer_cn(port: int, ctx: ssl.SSLContext) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname="localhost") as tls:
        cert = tls.getpeercert()
        assert cert is not None
        subject = dict(x[0] for x in cert["subject"])  # type: ignore[misc]
        return str(subject["commonName"])


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = TlsCa(tmp_path / "ca")
    srv = ca.issue("metrics-server", server=True)
    cli = ca.issue("prometheus", server=False)
    return {"ca": ca.cert_path, "server": srv.cert, "server_key": srv.key, "client": cli.cert,
            "client_key": cli.key}


def test_tls_requires_client_certificate(loop: LoopThread, metrics: Metrics, pki: dict[str, Path]) -> None:
    """With mTLS, a scraper without a certificate is refused; one with a certificate from our CA scrapes."""
    ctx = server_tls_context(pki["server"], pki["server_key"], pki["ca"])
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, ssl_context=ctx, limits=FAST))
    try:
        assert server.url.startswith("https://")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            get(server, context=client_context(pki["ca"]))
        status, _, body = get(server, context=client_context(pki["ca"], pki["client"], pki["client_key"]))
        assert status == 200 and b"jgw_messages_total" in body
    finally:
        loop.run(server.close())


def test_idle_tls_client_does_not_block_scrapes(loop: LoopThread, metrics: Metrics,
                                                pki: dict[str, Path]) -> None:
    """A client that opens TCP and never sends a ClientHello does not delay a concurrent TLS scrape."""
    ctx = server_tls_context(pki["server"], pki["server_key"], pki["ca"])
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, ssl_context=ctx, limits=FAST))
    good = client_context(pki["ca"], pki["client"], pki["client_key"])
    try:
        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        time.sleep(0.1)
        t0 = time.monotonic()
        assert get(server, context=good)[0] == 200
        assert time.monotonic() - t0 < 0.5
        for s in stalled:  # the handshake timeout closes them
            s.settimeout(5)
            assert s.recv(4096) == b""
            s.close()
    finally:
        loop.run(server.close())


def test_certificate_swap_without_restart(loop: LoopThread, metrics: Metrics, pki: dict[str, Path],
                                         tmp_path: Path) -> None:
    """set_ssl_context: new handshakes get the new certificate and the new client CA; the listener stays."""
    ctx = server_tls_context(pki["server"], pki["server_key"], pki["ca"])
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, ssl_context=ctx, limits=FAST))
    new_ca = TlsCa(tmp_path / "new-ca", cn="jgw-test-ca-2027")
    new_srv = new_ca.issue("metrics-server-2027", server=True)
    new_cli = new_ca.issue("prometheus-2027", server=False)
    old_client = client_context(pki["ca"], pki["client"], pki["client_key"])
    new_client = client_context(new_ca.cert_path, new_cli.cert, new_cli.key)
    try:
        port = server.port
        assert peer_cn(port, old_client) == "metrics-server"
        server.set_ssl_context(server_tls_context(new_srv.cert, new_srv.key, new_ca.cert_path))
        assert server.port == port
        assert peer_cn(port, new_client) == "metrics-server-2027"
        assert get(server, context=new_client)[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):  # old CA no longer trusted either way
            get(server, context=old_client)
        lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        lax.load_cert_chain(new_srv.cert, new_srv.key)
        with pytest.raises(ValueError, match="verify client certificates"):
            server.set_ssl_context(lax)
    finally:
        loop.run(server.close())


def test_plain_server_refuses_tls_swap(loop: LoopThread, metrics: Metrics, pki: dict[str, Path]) -> None:
    server = loop.run(serve_metrics(metrics.registry, "127.0.0.1", 0, limits=FAST))
    try:
        with pytest.raises(ValueError, match="without TLS"):
            server.set_ssl_context(server_tls_context(pki["server"], pki["server_key"], pki["ca"]))
    finally:
        loop.run(server.close())


def test_bad_tls_material_is_a_clear_error(pki: dict[str, Path], tmp_path: Path) -> None:
    """A key that does not match the certificate names the files instead of raising ssl.SSLError."""
    other = TlsCa(tmp_path / "other").issue("other", server=True)
    with pytest.raises(DataError, match=r"metrics-server\.pem"):
        server_tls_context(pki["server"], other.key, pki["ca"])
    with pytest.raises(NoInputError):
        server_tls_context(tmp_path / "missing.pem", pki["server_key"], pki["ca"])


def big_registry(routes: int = 50) -> Metrics:
    m = Metrics("big")
    for i in range(routes):
        r = f"route-{i:03d}"
        m.init_route(r)
        m.e2e_latency.labels(r).observe(0.01)
        for stage in ("open", "policy", "seal", "confirm"):
            m.stage_latency.labels(r, stage).observe(0.0005)
    return m


def test_encoding_a_large_registry_does_not_stall_the_loop(loop: LoopThread) -> None:
    """A 50-route scrape takes tens of ms to encode; the event loop (the relay) keeps ticking meanwhile."""
    from prometheus_client import generate_latest

    m = big_registry()
    t0 = time.perf_counter()
    generate_latest(m.registry)
    encode_time = time.perf_counter() - t0
    server = loop.run(serve_metrics(m.registry, "127.0.0.1", 0, limits=FAST))
    gaps: list[float] = []

    async def ticker(stop: float) -> None:
        last = time.perf_counter()
        while last < stop:
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    try:
        fut = asyncio.run_coroutine_threadsafe(ticker(time.perf_counter() + 1.5), loop.loop)
        for _ in range(5):
            assert get(server)[0] == 200
        fut.result(10)
    finally:
        loop.run(server.close())
    assert encode_time > 0.02, "registry too small to show anything"
    # encoded on the loop, each of the 5 scrapes would stall it for about encode_time; on a shared
    # machine a stray stall of that size can happen anyway, so one or two are tolerated
    stalls = [gap for gap in gaps if gap >= encode_time / 2]
    assert len(stalls) <= 2, (stalls, encode_time)


def test_concurrent_scrapes_share_one_encoding(loop: LoopThread) -> None:
    """A burst of simultaneous scrapes all get the same complete body."""
    import concurrent.futures

    m = big_registry(20)
    server = loop.run(serve_metrics(m.registry, "127.0.0.1", 0, limits=FAST))
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: get(server), range(4)))
        assert {r[0] for r in results} == {200}
        assert len({r[2] for r in results}) == 1 and results[0][2].count(b"jgw_route_up{") == 20
    finally:
        loop.run(server.close())
