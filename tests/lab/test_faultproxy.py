"""The fault proxy against the real toxiproxy-python client and the real RabbitMQ at 127.0.0.1:5672.

Every test makes its own uniquely named proxies and queues and removes them afterwards. Timing
assertions are lower bounds (a toxic must slow things down by at least its setting), except where a
test checks that removing a toxic restores traffic, which uses a bound far above loopback round trips.

Security: test code; talks only to loopback services and uses the broker's default guest account.
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
import requests
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy

from tests.lab.faultproxy import VERSION, FaultProxyServer

RABBIT_HOST = "127.0.0.1"
RABBIT_PORT = 5672
RABBIT = f"{RABBIT_HOST}:{RABBIT_PORT}"
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _port(proxy: Proxy) -> int:
    return int(proxy.listen.rsplit(":", 1)[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _params(port: int, **extra: Any) -> pika.ConnectionParameters:
    """Fail fast: one attempt, short socket and handshake timeouts."""
    base: dict[str, Any] = {"connection_attempts": 1, "socket_timeout": 2, "stack_timeout": 3,
                            "blocked_connection_timeout": 5}
    base.update(extra)
    return pika.ConnectionParameters(host="127.0.0.1", port=port,
                                     credentials=pika.PlainCredentials("guest", "guest"), **base)


def _connect(port: int, **extra: Any) -> pika.BlockingConnection:
    return pika.BlockingConnection(_params(port, **extra))


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _rtt(channel: Any, queue: str, samples: int = 3) -> float:
    """Median time of a broker round trip (passive declare) on an open channel."""
    times = []
    for _ in range(samples):
        t0 = time.monotonic()
        channel.queue_declare(queue, passive=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def _hello(port: int, header: bytes = AMQP_HEADER) -> socket.socket:
    """A raw client that sends an AMQP protocol header; the broker answers with Connection.Start."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.sendall(header)
    return sock


def _drain(sock: socket.socket, within: float) -> tuple[bytes, str, float]:
    """Reads until EOF, reset or ``within`` seconds: (data, "eof" | "reset" | "open", elapsed)."""
    got = b""
    t0 = time.monotonic()
    deadline = t0 + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return got, "open", time.monotonic() - t0
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return got, "open", time.monotonic() - t0
        except ConnectionResetError:
            return got, "reset", time.monotonic() - t0
        if not data:
            return got, "eof", time.monotonic() - t0
        got += data


def _read_frame(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Reads exactly one AMQP frame (7-byte header, payload, frame-end), e.g. Connection.Start."""
    sock.settimeout(timeout)
    got = b""
    while len(got) < 7 or len(got) < 8 + int.from_bytes(got[3:7], "big"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(got)} bytes"
        got += chunk
    return got


def _api(method: str, path: str, server: FaultProxyServer, **kwargs: Any) -> requests.Response:
    return requests.request(method, server.url + path, timeout=5, **kwargs)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[FaultProxyServer]:
    try:
        with socket.create_connection((RABBIT_HOST, RABBIT_PORT), timeout=2):
            pass
    except OSError:
        pytest.fail(f"these tests need the RabbitMQ broker at {RABBIT} (make broker)")
    with FaultProxyServer() as srv:
        yield srv


@pytest.fixture
def client(server: FaultProxyServer) -> Toxiproxy:
    """The client's address is class-level state, so set it for every test."""
    server.configure_client()
    return Toxiproxy()


@pytest.fixture
def make_proxy(client: Toxiproxy) -> Iterator[Callable[..., Proxy]]:
    names: list[str] = []

    def make(upstream: str = RABBIT, **kwargs: Any) -> Proxy:
        name = _unique("fp")
        names.append(name)
        return client.create(upstream=upstream, name=name, **kwargs)

    yield make
    for name in names:
        with contextlib.suppress(NotFound):
            APIConsumer.delete(f"/proxies/{name}")


@pytest.fixture
def queue() -> Iterator[str]:
    """A fresh queue declared directly on the broker (not through a proxy), deleted afterwards."""
    name = _unique("jgw.test.faultproxy")
    conn = _connect(RABBIT_PORT)
    conn.channel().queue_declare(name)
    conn.close()
    yield name
    conn = _connect(RABBIT_PORT)
    conn.channel().queue_delete(name)
    conn.close()


def _publish_direct(queue: str, body: bytes) -> None:
    conn = _connect(RABBIT_PORT)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", queue, body)
    conn.close()


# --------------------------------------------------------------------------- proxy lifecycle


def test_create_list_get_destroy(client: Toxiproxy, make_proxy: Callable[..., Proxy], queue: str) -> None:
    proxy = make_proxy()
    assert proxy.enabled is True
    assert proxy.listen.startswith("127.0.0.1:") and _port(proxy) != 0
    assert proxy.name in client.proxies()
    got = client.get_proxy(proxy.name)
    assert got is not None
    assert (got.listen, got.upstream, got.enabled) == (proxy.listen, RABBIT, True)

    conn = _connect(_port(proxy))  # traffic really reaches the broker through the proxy
    conn.channel().queue_declare(queue, passive=True)
    conn.close()

    assert proxy.destroy() is True
    assert client.get_proxy(proxy.name) is None
    assert _refused(_port(proxy))


def test_duplicate_proxy_is_proxy_exists(client: Toxiproxy, make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    with pytest.raises(ProxyExists):  # the client's own pre-check, via GET /proxies
        client.create(upstream=RABBIT, name=proxy.name)
    with pytest.raises(ProxyExists):  # the server's 409, which the client maps
        APIConsumer.post("/proxies", json={"name": proxy.name, "upstream": RABBIT})


def test_missing_proxy_is_not_found(client: Toxiproxy, make_proxy: Callable[..., Proxy]) -> None:
    ghost = Proxy(name=_unique("ghost"), upstream=RABBIT, enabled=True, listen="127.0.0.1:1")
    assert client.get_proxy(ghost.name) is None
    with pytest.raises(NotFound):
        APIConsumer.get(f"/proxies/{ghost.name}")
    with pytest.raises(NotFound):
        ghost.destroy()
    with pytest.raises(NotFound):
        ghost.disable()
    with pytest.raises(NotFound):
        ghost.toxics()
    with pytest.raises(NotFound):
        ghost.add_toxic(type="latency", attributes={"latency": 1})
    real = make_proxy()
    with pytest.raises(NotFound):
        real.destroy_toxic("no_such_toxic")


def test_api_status_codes_and_error_bodies(server: FaultProxyServer, client: Toxiproxy) -> None:
    name = _unique("api")
    r = _api("POST", "/proxies", server, json={"upstream": RABBIT})
    assert (r.status_code, r.json()) == (400, {"error": "missing required field: name", "status": 400})
    r = _api("POST", "/proxies", server, json={"name": name})
    assert (r.status_code, r.json()["error"]) == (400, "missing required field: upstream")
    assert _api("POST", "/proxies", server, data=b"{not json").status_code == 400
    r = _api("POST", "/proxies", server, json={"name": name, "upstream": RABBIT, "listen": "0.0.0.0:0"})
    assert r.status_code == 400  # loopback only
    r = _api("POST", "/proxies", server, json={"name": name, "upstream": RABBIT, "enabled": False})
    assert r.status_code == 201
    assert r.json() == {"name": name, "listen": "127.0.0.1:0", "upstream": RABBIT, "enabled": False,
                        "toxics": []}
    try:
        r = _api("POST", f"/proxies/{name}/toxics", server, json={"type": "latency"})
        assert r.status_code == 200
        assert r.json() == {"name": "latency_downstream", "type": "latency", "stream": "downstream",
                            "toxicity": 1.0, "attributes": {"latency": 0, "jitter": 0}}
        r = _api("POST", f"/proxies/{name}/toxics", server, json={"type": "latency"})
        assert (r.status_code, r.json()["error"]) == (409, "toxic already exists")
        r = _api("POST", f"/proxies/{name}/toxics", server, json={"type": "nope"})
        assert (r.status_code, r.json()["error"]) == (400, "invalid toxic type")
        r = _api("POST", f"/proxies/{name}/toxics", server, json={"type": "latency", "stream": "sideways"})
        assert r.status_code == 400
        r = _api("POST", f"/proxies/{name}/toxics", server,
                 json={"type": "bandwidth", "attributes": {"rate": -1}})
        assert r.status_code == 400
        with pytest.raises(InvalidToxic):
            client.get_proxy(name).add_toxic(type="no_such_type")

        r = _api("PATCH", f"/proxies/{name}/toxics/latency_downstream", server,
                 json={"attributes": {"jitter": 5}, "toxicity": 0.5})
        assert r.status_code == 200
        assert r.json()["attributes"] == {"latency": 0, "jitter": 5} and r.json()["toxicity"] == 0.5
        assert _api("GET", f"/proxies/{name}/toxics/latency_downstream", server).json() == r.json()
        assert _api("GET", f"/proxies/{name}/toxics/other", server).status_code == 404
        r = _api("DELETE", f"/proxies/{name}/toxics/latency_downstream", server)
        assert (r.status_code, r.content) == (204, b"")
        assert _api("GET", f"/proxies/{name}/toxics", server).json() == []
    finally:
        assert _api("DELETE", f"/proxies/{name}", server).status_code == 204
    r = _api("GET", f"/proxies/{name}", server)
    assert (r.status_code, r.json()) == (404, {"error": "proxy not found", "status": 404})

    assert _api("GET", "/version", server).json() == {"version": VERSION}
    assert client.version() is not None and b"version" in client.version()
    browser = _api("GET", "/proxies", server, headers={"User-Agent": "Mozilla/5.0"})
    assert browser.status_code == 403
    assert _api("GET", "/nowhere", server).status_code == 404
    assert _api("DELETE", "/proxies", server).status_code == 405


def test_populate_creates_keeps_and_replaces(server: FaultProxyServer, client: Toxiproxy) -> None:
    a, b = _unique("pop"), _unique("pop")
    try:
        r = _api("POST", "/populate", server, json=[{"name": a, "upstream": RABBIT},
                                                     {"name": b, "upstream": RABBIT, "enabled": False}])
        assert r.status_code == 201
        first = {p["name"]: p for p in r.json()["proxies"]}
        assert first[a]["enabled"] is True and first[b]["enabled"] is False
        assert not _refused(int(first[a]["listen"].rsplit(":", 1)[1]))

        # Same listen and upstream: left as is. Different upstream: replaced.
        r = _api("POST", "/populate", server, json=[
            {"name": a, "upstream": RABBIT, "listen": first[a]["listen"]},
            {"name": b, "upstream": "127.0.0.1:1"}])
        second = {p["name"]: p for p in r.json()["proxies"]}
        assert r.status_code == 201
        assert second[a]["listen"] == first[a]["listen"]
        assert second[b]["upstream"] == "127.0.0.1:1" and second[b]["enabled"] is True

        r = _api("POST", "/populate", server, json=[{"name": _unique("pop")}])
        assert r.status_code == 400
        assert set(client.proxies()) >= {a, b}
    finally:
        for name in (a, b):
            _api("DELETE", f"/proxies/{name}", server)


def test_upstream_down_closes_client(make_proxy: Callable[..., Proxy]) -> None:
    with socket.socket() as dead:  # bound but not listening: connects are refused, the port stays ours
        dead.bind(("127.0.0.1", 0))
        proxy = make_proxy(upstream=f"127.0.0.1:{dead.getsockname()[1]}")
        with _hello(_port(proxy)) as sock:  # the listener accepts ...
            data, outcome, _ = _drain(sock, 3)
    assert (data, outcome) == (b"", "eof")  # ... then closes the client because the dial failed


def test_disable_drops_connections_refuses_and_enable_restores(
        client: Toxiproxy, make_proxy: Callable[..., Proxy], queue: str) -> None:
    proxy = make_proxy()
    port = _port(proxy)
    conn = _connect(port)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", queue, b"survives the outage")

    proxy.disable()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        conn.process_data_events(time_limit=2)
    assert _refused(port)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        _connect(port)
    assert client.get_proxy(proxy.name).enabled is False

    proxy.enable()
    assert _port(client.get_proxy(proxy.name)) == port  # rebinds the same address
    conn = _connect(port)
    _, _, body = conn.channel().basic_get(queue, auto_ack=True)
    assert body == b"survives the outage"

    with proxy.down():
        assert _refused(port)
    assert not _refused(port)
    with contextlib.suppress(pika.exceptions.AMQPError):
        conn.close()  # already dropped by proxy.down(); closing must not raise out of the test


# --------------------------------------------------------------------------- toxics


def test_latency_slows_existing_connection_and_removal_restores(
        make_proxy: Callable[..., Proxy], queue: str) -> None:
    proxy = make_proxy()
    conn = _connect(_port(proxy))  # opened before the toxics: they must apply to live links
    ch = conn.channel()
    try:
        proxy.add_toxic(type="latency", attributes={"latency": 250})
        assert _rtt(ch, queue) >= 0.24
        proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 150})
        assert _rtt(ch, queue) >= 0.39

        assert proxy.destroy_toxic("latency_downstream") is True
        assert proxy.destroy_toxic("latency_upstream") is True
        assert proxy.toxics() == {}
        assert _rtt(ch, queue) < 0.15
    finally:
        conn.close()


def test_timeout_toxic_stalls_live_connection_and_removal_closes_it(
        make_proxy: Callable[..., Proxy], queue: str) -> None:
    proxy = make_proxy()
    conn = _connect(_port(proxy))
    ch = conn.channel()
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})

    outcome: list[BaseException | None] = []

    def declare() -> None:
        try:
            ch.queue_declare(queue, passive=True)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=declare, daemon=True)
    worker.start()
    worker.join(0.8)
    assert worker.is_alive() and outcome == []  # stalled: no answer gets through

    proxy.destroy_toxic("timeout_downstream")  # removal closes the held connection
    worker.join(5)
    assert not worker.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], pika.exceptions.AMQPError)

    proxy.add_toxic(type="timeout", stream="upstream", attributes={"timeout": 0})
    t0 = time.monotonic()
    with pytest.raises(AMQPConnectorStackTimeout):  # a new connection can't handshake either
        _connect(_port(proxy), stack_timeout=1)
    assert time.monotonic() - t0 >= 0.9


def test_timeout_toxic_with_value_closes_after_it(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    proxy.add_toxic(type="timeout", attributes={"timeout": 400})
    t0 = time.monotonic()
    with _hello(_port(proxy)) as sock:
        data, outcome, _ = _drain(sock, 3)
    assert data == b"" and outcome == "eof"  # nothing passed, then closed
    assert time.monotonic() - t0 >= 0.38


def test_reset_peer_resets(make_proxy: Callable[..., Proxy], queue: str) -> None:
    proxy = make_proxy()
    conn = _connect(_port(proxy))
    ch = conn.channel()
    proxy.add_toxic(type="reset_peer", stream="upstream", attributes={"timeout": 0})
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        ch.queue_declare(queue, passive=True)

    with _hello(_port(proxy)) as sock:  # a raw client sees the RST itself
        data, outcome, _ = _drain(sock, 3)
    assert (data, outcome) == (b"", "reset")


def test_limit_data_closes_after_n_bytes_per_direction(
        server: FaultProxyServer, make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    with _hello(_port(proxy)) as sock:
        full = _read_frame(sock)  # Connection.Start, untouched
    assert full[0] == 1 and len(full) > 100

    proxy.add_toxic(type="limit_data", attributes={"bytes": 100})
    with _hello(_port(proxy)) as sock:
        data, outcome, _ = _drain(sock, 3)
    assert (data, outcome) == (full[:100], "eof")
    proxy.destroy_toxic("limit_data_downstream")

    # Upstream: only half the protocol header reaches the broker, so nothing comes back before the close.
    proxy.add_toxic(type="limit_data", stream="upstream", attributes={"bytes": 4})
    with _hello(_port(proxy)) as sock:
        data, outcome, _ = _drain(sock, 3)
    assert (data, outcome) == (b"", "eof")
    proxy.destroy_toxic("limit_data_upstream")

    # toxicity 0 makes the toxic a no-op; raising it via the update endpoint arms it for new links.
    proxy.add_toxic(type="limit_data", name="lim", toxicity=0.0, attributes={"bytes": 0})
    with _hello(_port(proxy)) as sock:
        assert _read_frame(sock) == full
    r = _api("POST", f"/proxies/{proxy.name}/toxics/lim", server, json={"toxicity": 1.0})
    assert r.status_code == 200 and r.json()["toxicity"] == 1.0
    with _hello(_port(proxy)) as sock:
        data, outcome, _ = _drain(sock, 3)
    assert (data, outcome) == (b"", "eof")


def test_bandwidth_slows_large_transfer(make_proxy: Callable[..., Proxy], queue: str) -> None:
    body = os.urandom(300_000)
    _publish_direct(queue, body)
    _publish_direct(queue, body)
    proxy = make_proxy()
    conn = _connect(_port(proxy))
    ch = conn.channel()
    try:
        proxy.add_toxic(type="bandwidth", attributes={"rate": 500})  # 500 KB/s: 300 kB takes ~0.6 s
        t0 = time.monotonic()
        _, _, got = ch.basic_get(queue, auto_ack=True)
        assert time.monotonic() - t0 >= 0.45
        assert got == body

        proxy.destroy_toxic("bandwidth_downstream")
        t0 = time.monotonic()
        _, _, got = ch.basic_get(queue, auto_ack=True)
        assert got == body and time.monotonic() - t0 < 0.45
    finally:
        conn.close()


def test_slicer_delays_pieces_and_keeps_the_stream_intact(
        make_proxy: Callable[..., Proxy], queue: str) -> None:
    proxy = make_proxy()
    proxy.add_toxic(type="slicer", attributes={"average_size": 100, "size_variation": 0, "delay": 50_000})
    with _hello(_port(proxy)) as sock:
        t0 = time.monotonic()
        got = _read_frame(sock)
        elapsed = time.monotonic() - t0
    pieces = -(-len(got) // 100)
    assert pieces >= 4 and elapsed >= (pieces - 1) * 0.05 * 0.95

    # Small uneven pieces both ways must not corrupt AMQP framing.
    proxy.destroy_toxic("slicer_downstream")
    for stream in ("upstream", "downstream"):
        proxy.add_toxic(type="slicer", stream=stream,
                        attributes={"average_size": 61, "size_variation": 40, "delay": 10})
    body = os.urandom(20_000)
    conn = _connect(_port(proxy))
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", queue, body)
    _, _, got_body = ch.basic_get(queue, auto_ack=True)
    conn.close()
    assert got_body == body


def test_slow_close_delays_the_close(make_proxy: Callable[..., Proxy]) -> None:
    proxy = make_proxy()
    bad = b"AMQP\x00\x00\x00\x00"  # the broker answers with its own header and hangs up
    with _hello(_port(proxy), bad) as sock:
        data, outcome, quick = _drain(sock, 3)
    assert (data, outcome) == (AMQP_HEADER, "eof")

    proxy.add_toxic(type="slow_close", attributes={"delay": 600})
    with _hello(_port(proxy), bad) as sock:
        data, outcome, slow = _drain(sock, 3)
    assert (data, outcome) == (AMQP_HEADER, "eof")
    assert slow >= 0.58 > quick


def test_reset_removes_toxics_reenables_and_keeps_connections(
        client: Toxiproxy, make_proxy: Callable[..., Proxy], queue: str) -> None:
    slow, down = make_proxy(), make_proxy()
    conn = _connect(_port(slow))
    ch = conn.channel()
    try:
        slow.add_toxic(type="latency", attributes={"latency": 300})
        down.add_toxic(type="limit_data", attributes={"bytes": 1})
        down.disable()
        assert _refused(_port(down))

        assert client.reset() is True
        assert slow.toxics() == {} and down.toxics() == {}
        assert client.get_proxy(down.name).enabled is True
        assert _rtt(ch, queue) < 0.2  # same connection, toxic gone
        other = _connect(_port(down))
        other.channel().queue_declare(queue, passive=True)
        other.close()
    finally:
        conn.close()


# --------------------------------------------------------------------------- process mode


def test_process_mode_serves_the_api(queue: str) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.lab.faultproxy", "--listen", f"127.0.0.1:{port}",
         "--log-level", "WARNING"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert f"listening on 127.0.0.1:{port}" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/version", timeout=5).json() == {"version": VERSION}
        r = requests.post(f"{base}/proxies", json={"name": "site", "upstream": RABBIT}, timeout=5)
        assert r.status_code == 201
        conn = _connect(int(r.json()["listen"].rsplit(":", 1)[1]))
        conn.channel().queue_declare(queue, passive=True)
        conn.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
