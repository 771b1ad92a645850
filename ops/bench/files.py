"""File benchmark: jgw's file path against OpenSSH ``sftp`` copying the same files between the same servers.

Two private OpenSSH sshd (``tests/lab/sshd.py``): A holds the business system's outbox, B is the
destination. Two ``jgw run`` processes form the path of the OCR flow: the first takes files from A
over SFTP and seals each frame (ECDSA P-256 + HPKE P-256/AES-256-GCM) into a queue of the local
RabbitMQ (127.0.0.1:5672, the "LGWAN" hop), the second opens them and writes the files to B over
SFTP. The contender is the OpenSSH ``sftp`` client doing the plain copy: ``get`` every file from A
into a local directory, then ``put`` them to B (what staff would script), timed from start to end.

Two workloads, run in alternating rounds in the same run (the machine is shared and noisy: medians
count, only ratios within one run mean anything):

  small   --small-files files of 10 KiB: files/s
  large   --large-files files of --large-mib MiB: MB/s (10^6 bytes per second)

For jgw a round is timed from the moment the files appear complete in A's directory (renamed from a
temporary name, the ``rename`` completion rule) until the last one is under its final name at B.
Each jgw process's peak resident memory (VmHWM) is printed after the large rounds (memory flat:
it must not grow with the file size). The last line is the median large-file ratio jgw/sftp.

    python ops/bench/files.py [--rounds 3] [--small-files 300] [--large-files 2] [--large-mib 256]
                              [--verify size|readback] [--chunk-mib 4]

Not a test: run as root (the private sshd needs it) with a RabbitMQ on 127.0.0.1:5672.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.pki.devinit import init_dev  # noqa: E402
from tests.lab.harness import Amqp, JgwProcess, render_config  # noqa: E402
from tests.lab.rabbitnode import free_port  # noqa: E402
from tests.lab.sshd import PrivateSshd, keygen, known_hosts_line, openssh_sftp, usable  # noqa: E402

MAIN_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def final_files(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if not n.startswith(".") and (directory / n).is_file()]


def wait_count(directory: Path, n: int, timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    while len(final_files(directory)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(final_files(directory))} of {n} files at {directory}")
        time.sleep(0.02)


def make_files(directory: Path, count: int, size: int, tag: str) -> list[str]:
    """Write ``count`` files of ``size`` random bytes under temporary names (``.tmp``)."""
    names = []
    block = os.urandom(min(size, 1 << 20))
    for i in range(count):
        name = f"{tag}_{i:05d}.dat"
        with open(directory / f"{name}.tmp", "wb") as f:
            left = size
            while left > 0:
                piece = block[:left]
                f.write(piece)
                left -= len(piece)
        names.append(name)
    return names


def clear(*dirs: Path) -> None:
    for d in dirs:
        for entry in d.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


class Bench:
    def __init__(self, base: Path, verify: str, chunk_mib: int) -> None:
        self.base = base
        self.chunk_mib = chunk_mib
        self.a, self.b = PrivateSshd().start(), PrivateSshd().start()
        self.src, self.dst = self.a.upload / "outbox", self.b.upload / "store"
        # the plain copy uses its own directories on the same servers (jgw watches outbox)
        self.plain_src, self.plain_dst = self.a.upload / "plain", self.b.upload / "plain"
        for d in (self.src, self.dst, self.plain_src, self.plain_dst):
            d.mkdir()
        self.pki = init_dev(base / "pki", ["cityhall", "datacenter"], dt.datetime.now(dt.UTC))
        self.queue = f"bench.files.{uuid.uuid4().hex[:8]}"
        self.client = keygen(base / "client_ed25519", "bench")
        self.a.authorize(self.client)
        self.b.authorize(self.client)
        self.known = {"a": base / "a.known_hosts", "b": base / "b.known_hosts"}
        self.known["a"].write_text(known_hosts_line("127.0.0.1", self.a.port, self.a.host_key))
        self.known["b"].write_text(known_hosts_line("127.0.0.1", self.b.port, self.b.host_key))
        self.procs = [JgwProcess(self._config("datacenter", verify)), JgwProcess(self._config("cityhall", verify))]
        for proc in self.procs:
            proc.start(timeout=90)

    def _server(self, sshd: PrivateSshd, known: Path) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": sshd.port, "user": "root", "client_key": str(self.client),
                "known_hosts": str(known)}

    def _config(self, site: str, verify: str) -> Path:
        d = self.base / site
        d.mkdir()
        node = {"id": site, "state_dir": str(d / "state"), "certs_dir": str(self.pki.nodes[site]),
                "metrics_listen": f"127.0.0.1:{free_port()}", "control_socket": str(d / "ctl.sock")}
        if site == "cityhall":
            route = {"personal_number": "allowed", "max_size": f"{self.chunk_mib + 1}MiB",
                     "prefetch": max(2, 32 // self.chunk_mib),
                     "source": {"kind": "sftp", "server": "a", "directory": "/upload/outbox", "scan_interval": "100ms",
                                "completion": {"rule": "rename"}, "after": "remove",
                                "chunk_size": f"{self.chunk_mib}MiB"},
                     "sink": {"broker": "lgwan", "exchange": "", "routing_key": self.queue},
                     "seal": {"recipients": ["datacenter"], "route_name": "bench-files"}}
            tables = {"sftp": {"a": self._server(self.a, self.known["a"])}}
        else:
            route = {"personal_number": "allowed", "max_size": f"{self.chunk_mib + 1}MiB",
                     "prefetch": max(2, 32 // self.chunk_mib), "source": {"broker": "lgwan", "queue": self.queue},
                     "sink": {"kind": "sftp", "server": "b", "directory": "/upload/store", "verify": verify},
                     "open": {"senders": ["cityhall"], "routes": ["bench-files"]}}
            tables = {"sftp": {"b": self._server(self.b, self.known["b"])}}
        path = d / "jgw.toml"
        path.write_text(render_config(node, {"lgwan": {"urls": [MAIN_URL]}}, {"bench-files": route},
                                      tables=tables))
        return path

    def jgw_round(self, count: int, size: int, tag: str) -> float:
        names = make_files(self.src, count, size, tag)
        started = time.monotonic()
        for name in names:
            os.rename(self.src / f"{name}.tmp", self.src / name)
        wait_count(self.dst, count)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 120
        while final_files(self.src) and time.monotonic() < deadline:  # the source side finishing
            time.sleep(0.05)
        clear(self.dst)
        return elapsed

    def sftp_round(self, count: int, size: int, tag: str) -> float:
        names = make_files(self.plain_src, count, size, tag)
        for name in names:
            os.rename(self.plain_src / f"{name}.tmp", self.plain_src / name)
        local = Path(tempfile.mkdtemp(prefix="bench-sftp-", dir=self.base))
        started = time.monotonic()
        r = openssh_sftp(self.a.port, self.client, self.known["a"], f"get -p /upload/plain/{tag}_* {local}/\n",
                         timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.decode(errors="replace"))
        r = openssh_sftp(self.b.port, self.client, self.known["b"], f"put -p {local}/* /upload/plain/\n", timeout=3600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr.decode(errors="replace"))
        elapsed = time.monotonic() - started
        assert len(final_files(self.plain_dst)) == count
        shutil.rmtree(local)
        clear(self.plain_src, self.plain_dst)
        return elapsed

    def peaks(self) -> list[int]:
        return [vm_hwm(p.proc.pid) for p in self.procs if p.proc is not None]

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for sshd in (self.a, self.b):
            sshd.destroy()
        with Amqp(MAIN_URL) as amqp:
            amqp.delete(self.queue)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--small-files", type=int, default=300)
    ap.add_argument("--large-files", type=int, default=2)
    ap.add_argument("--large-mib", type=int, default=256)
    ap.add_argument("--verify", choices=("size", "readback"), default="size",
                    help="how jgw's SFTP sink checks a file before its rename (default size)")
    ap.add_argument("--chunk-mib", type=int, default=4, help="the source's chunk_size in MiB (default 4); "
                                                              "prefetch is 32 MiB worth of frames")
    args = ap.parse_args()
    reason = usable()
    if reason:
        print(f"bench: {reason}", file=sys.stderr)
        return 69
    base = Path(tempfile.mkdtemp(prefix="jgw-bench-files-"))
    print(f"# {dt.date.today()} {platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{subprocess.run(['ssh', '-V'], capture_output=True, text=True).stderr.strip()}; jgw sink verify="
          f"{args.verify}, chunk_size={args.chunk_mib}MiB", flush=True)
    bench = Bench(base, args.verify, args.chunk_mib)
    small = args.small_files, 10 * 1024
    large = args.large_files, args.large_mib * 1024 * 1024
    results: dict[str, list[float]] = {k: [] for k in ("jgw-small", "sftp-small", "jgw-large", "sftp-large")}
    try:
        bench.jgw_round(5, 10 * 1024, "warm")  # sessions and channels up
        for r in range(args.rounds):
            for who in (("jgw", "sftp") if r % 2 == 0 else ("sftp", "jgw")):
                for kind, (n, size) in (("small", small), ("large", large)):
                    run = bench.jgw_round if who == "jgw" else bench.sftp_round
                    seconds = run(n, size, f"r{r}{kind}")
                    rate = n / seconds if kind == "small" else n * size / seconds / 1e6
                    results[f"{who}-{kind}"].append(rate)
                    unit = "files/s" if kind == "small" else "MB/s"
                    print(f"round {r + 1} {who:<4} {kind:<5} {n} × {size // 1024} KiB: {seconds:7.2f} s  "
                          f"{rate:8.1f} {unit}", flush=True)
        peaks = bench.peaks()
    finally:
        bench.close()
        shutil.rmtree(base, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"median small: jgw {med['jgw-small']:.1f} files/s, sftp {med['sftp-small']:.1f} files/s, "
          f"ratio {med['jgw-small'] / med['sftp-small']:.2f}")
    print(f"median large: jgw {med['jgw-large']:.1f} MB/s, sftp {med['sftp-large']:.1f} MB/s")
    print(f"jgw peak RSS after {args.large_mib} MiB files: city hall {peaks[1] / 2**20:.0f} MiB, "
          f"data centre {peaks[0] / 2**20:.0f} MiB")
    print(f"ratio jgw/sftp (large files): {med['jgw-large'] / med['sftp-large']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
