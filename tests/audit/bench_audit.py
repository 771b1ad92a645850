"""Benchmark: audit record + commit cost per message, batches of 100 (run: python tests/audit/bench_audit.py).

Baseline in the same run: writing the same bytes with one os.write + os.fsync per batch and no
serialisation or hashing (the I/O floor). Prints µs per message for both and their ratio.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.audit import AuditLog, payload_digest

BATCH, BATCHES, ROUNDS = 100, 200, 5


def run_once(tmp: Path, ids: list[str], digest: str) -> tuple[float, float, float, int]:
    log = AuditLog.open(tmp / "audit", "cityhall")
    t0 = time.perf_counter()
    record_time = 0.0
    for b in range(BATCHES):
        r0 = time.perf_counter()
        for i in range(BATCH):
            log.record("deliver", msg=ids[b * BATCH + i], route="honnin-update", seed="jimu:1-⑥", peer="cs",
                       size=1024, digest=digest, outcome="delivered", attempt=0)
        record_time += time.perf_counter() - r0
        log.commit()
    ours = time.perf_counter() - t0
    per_batch = sorted((tmp / "audit").glob("audit-*.log"))[-1].stat().st_size // (BATCHES + 1)
    log.close()
    fd = os.open(tmp / "raw", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    blob = b"x" * per_batch
    t0 = time.perf_counter()
    for _ in range(BATCHES):
        os.write(fd, blob)
        os.fsync(fd)
    base = time.perf_counter() - t0
    os.close(fd)
    return ours, record_time, base, per_batch


def main() -> None:
    digest = payload_digest(b"x" * 1024)
    ids = [str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)) for i in range(BATCH * BATCHES)]
    rounds = []
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as tmp:
            rounds.append(run_once(Path(tmp), ids, digest))
    ours, record_time, _, per_batch = min(rounds)
    base = min(r[2] for r in rounds)
    n = BATCH * BATCHES
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cpu, python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M')}, best of {ROUNDS} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"audit record+commit: {ours / n * 1e6:7.2f} us/message  "
          f"(record only {record_time / n * 1e6:.2f} us, ~{per_batch // BATCH} bytes/record, {BATCH}/batch)")
    print(f"baseline write+fsync: {base / n * 1e6:7.2f} us/message  (same bytes, no JSON, no hashing)")
    print(f"ratio ours/baseline: {ours / base:.2f}")
    print(f"implied ceiling: {n / ours:,.0f} messages/s with one record each, one commit per {BATCH}")


if __name__ == "__main__":
    main()
