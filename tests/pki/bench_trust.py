"""Benchmark: what certificate trust costs per message, and what a reload costs.

    .venv/bin/python tests/pki/bench_trust.py [--seconds 2]

Prints µs per check for the keyring trust hook backed by the CRL-checked TrustStore (first check:
pyOpenSSL chain + CRL; later checks: the cached path) with the pure-Python ``keyring.CaTrust`` as the
baseline in the same run, and the wall time of ``load_node_material`` and of a rotation. Not a test:
it asserts nothing and is not collected by pytest.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway import keyring
from gateway.pki.devinit import init_dev, stage_generation
from gateway.pki.files import read_certificate
from gateway.pki.generation import load_generation
from gateway.pki.keyring_trust import StoreTrust
from gateway.pki.material import load_node_material
from gateway.pki.purpose import Purpose
from gateway.pki.rotation import rotate
from gateway.pki.trust import TrustStore


def per_op(fn: Callable[[], object], seconds: float) -> float:
    """Mean µs per call over about ``seconds``."""
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            fn()
        n += 100
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        pki = init_dev(Path(tmp) / "pki", ["city-a", "dc-b"], now)
        root = pki.nodes["city-a"]
        peer_cert = read_certificate(root / "peers" / "dc-b" / "signing.pem")
        store = TrustStore.load(root / "trust", now)
        crl = pki.ca.make_crl(now)
        baseline = keyring.CaTrust([pki.ca.cert], crls=[crl])
        hook = StoreTrust(store, clock=lambda: now)
        full = per_op(lambda: store.verify(peer_cert, Purpose.SIGNING, at=now), args.seconds)
        sign = keyring.PURPOSE_SIGNING
        hook.check_certificate(peer_cert, sign, now)
        cached = per_op(lambda: hook.check_certificate(peer_cert, sign, now), args.seconds)
        baseline.check_certificate(peer_cert, sign, now)
        base = per_op(lambda: baseline.check_certificate(peer_cert, sign, now), args.seconds)

        t = time.perf_counter()
        runs = 20
        for _ in range(runs):
            load_node_material(root, "city-a", now)
        load_ms = (time.perf_counter() - t) / runs * 1e3

        rot = []
        for _ in range(5):
            stage_generation(Path(root) / "staging", "city-a", pki.ca, now)
            trust = TrustStore.load(root / "trust", now)
            from gateway.pki.layout import CertsDir

            t = time.perf_counter()
            rotate(CertsDir(root), lambda d, tr=trust: load_generation(d, "city-a", tr, at=now))
            rot.append((time.perf_counter() - t) * 1e3)

    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} CPU, "
          f"Python {platform.python_version()}, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}Z")
    print(f"baseline keyring.CaTrust, cached check       {base:9.1f} µs/check")
    print(f"StoreTrust (pyOpenSSL + CRL), cached check   {cached:9.1f} µs/check  ratio {cached / base:5.2f}x")
    print(f"TrustStore.verify, chain + CRL_CHECK_ALL     {full:9.1f} µs/check  ratio {full / base:5.2f}x")
    print(f"load_node_material (2 nodes, pq-hybrid)      {load_ms:9.1f} ms")
    print(f"jgw certs rotate (validate, archive, swap)   {sorted(rot)[len(rot) // 2]:9.1f} ms (median of 5)")


if __name__ == "__main__":
    main()
