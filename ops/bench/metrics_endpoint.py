"""Benchmark: jgw's asyncio metrics endpoint vs prometheus_client.start_http_server (the baseline).

    .venv/bin/python ops/bench/metrics_endpoint.py [--routes 50] [--scrapes 300]

Prints scrape latency (p50/p99) for a registry with N routes for both servers in the same run, the
ratio to the baseline, and the latency of a TLS scrape while one client holds a connection open
without sending a ClientHello (the baseline's accept thread blocks on it; research tech-stack §6.1).

Security: loopback only; throw-away certificates in a temporary directory.
"""

from __future__ import annotations

import argparse
import http.client
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client import start_http_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.metrics import Metrics
from gateway.service.metrics_http import Limits, serve_metrics, server_tls_context
from tests.lab.rabbitnode import free_port
from tests.lab.testca import TlsCa
from tests.ops.loop_thread import LoopThread


def busy_registry(routes: int) -> Metrics:
    m = Metrics("bench")
    for i in range(routes):
        r = f"route-{i:03d}"
        m.init_route(r)
        m.messages.labels(r, "delivered").inc(1000 + i)
        for v in (0.002, 0.02, 0.2):
            m.e2e_latency.labels(r).observe(v)
        for stage in ("open", "policy", "seal", "confirm"):
            m.stage_latency.labels(r, stage).observe(0.0005)
    return m


def scrape(port: int, ctx: ssl.SSLContext | None = None, timeout: float = 10.0) -> float:
    t0 = time.perf_counter()
    conn: http.client.HTTPConnection
    if ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
    finally:
        conn.close()
    return time.perf_counter() - t0


def latencies(port: int, n: int) -> list[float]:
    scrape(port)
    return sorted(scrape(port) for _ in range(n))


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def stalled_scrape(port: int, ctx: ssl.SSLContext) -> str:
    idle = socket.create_connection(("127.0.0.1", port))
    time.sleep(0.2)
    try:
        return f"{scrape(port, ctx, timeout=5.0) * 1000:.1f} ms"
    except (TimeoutError, OSError) as exc:
        return f"FAILED ({type(exc).__name__} after 5 s)"
    finally:
        idle.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=50)
    ap.add_argument("--scrapes", type=int, default=300)
    args = ap.parse_args()
    m = busy_registry(args.routes)
    loop = LoopThread()
    ours = loop.run(serve_metrics(m.registry, "127.0.0.1", 0))
    base_port = free_port()
    base, _thread = start_http_server(base_port, addr="127.0.0.1", registry=m.registry)
    ours_l = latencies(ours.port, args.scrapes)
    base_l = latencies(base_port, args.scrapes)
    print(f"registry: {args.routes} routes; {args.scrapes} sequential plain-HTTP scrapes each")
    print(f"  baseline start_http_server: p50 {pct(base_l, .5):.2f} ms  p99 {pct(base_l, .99):.2f} ms")
    print(f"  jgw metrics_http:           p50 {pct(ours_l, .5):.2f} ms  p99 {pct(ours_l, .99):.2f} ms")
    print(f"  ratio jgw/baseline (p50):   {statistics.median(ours_l) / statistics.median(base_l):.2f}")
    base.shutdown()
    loop.run(ours.close())

    with tempfile.TemporaryDirectory() as tmp:
        ca = TlsCa(Path(tmp) / "ca")
        srv = ca.issue("bench-server", server=True)
        cli = ca.issue("bench-client", server=False)
        client = ssl.create_default_context(cafile=str(ca.cert_path))
        client.load_cert_chain(str(cli.cert), str(cli.key))
        client.check_hostname = False
        tls_ours = loop.run(serve_metrics(m.registry, "127.0.0.1", 0,
                                          ssl_context=server_tls_context(srv.cert, srv.key, ca.cert_path),
                                          limits=Limits()))
        tls_base_port = free_port()
        tls_base, _t = start_http_server(tls_base_port, addr="127.0.0.1", registry=m.registry,
                                         certfile=str(srv.cert), keyfile=str(srv.key),
                                         client_cafile=str(ca.cert_path), client_auth_required=True)
        print("one client connected to the TLS port, sending nothing; one mTLS scrape meanwhile:")
        print(f"  baseline start_http_server: {stalled_scrape(tls_base_port, client)}")
        print(f"  jgw metrics_http:           {stalled_scrape(tls_ours.port, client)}")
        tls_base.shutdown()
        loop.run(tls_ours.close())
    loop.stop()


if __name__ == "__main__":
    main()
