"""promtool and a real Prometheus server for tests, from Debian's ``prometheus`` package.

The package is downloaded with ``apt-get download`` and unpacked with ``dpkg -x`` into a cache
directory, never installed: installing it would start a Prometheus service on :9090. The cache is
``$JGW_TOOLS_DIR`` or ``/var/cache/jgw-tools`` and is reused; binaries already on ``PATH`` win.
Research: tech-stack §6.3 (Debian 12 ships prometheus 2.42).

Security: test and CI use only. Runs apt-get (Debian's archive) once per machine; the server it
starts listens on 127.0.0.1 with its data in a temporary directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import UnavailableError
from tests.lab.rabbitnode import free_port

DEFAULT_CACHE = Path("/var/cache/jgw-tools")
PACKAGE = "prometheus"


@dataclass(frozen=True)
class PrometheusTools:
    promtool: Path
    prometheus: Path

    def version(self) -> str:
        out = subprocess.run([str(self.promtool), "--version"], capture_output=True, text=True, check=True)
        return out.stdout.splitlines()[0] if out.stdout else out.stderr.splitlines()[0]


def tools_dir() -> Path:
    return Path(os.environ.get("JGW_TOOLS_DIR") or DEFAULT_CACHE)


def _on_path() -> PrometheusTools | None:
    promtool, prometheus = shutil.which("promtool"), shutil.which("prometheus")
    if promtool and prometheus:
        return PrometheusTools(Path(promtool), Path(prometheus))
    return None


def _in_cache(cache: Path) -> PrometheusTools | None:
    root = cache / PACKAGE / "usr" / "bin"
    tools = PrometheusTools(root / "promtool", root / "prometheus")
    if os.access(tools.promtool, os.X_OK) and os.access(tools.prometheus, os.X_OK):
        return tools
    return None


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def _download(work: Path) -> Path:
    """``apt-get download prometheus``; refresh the package lists once if apt does not know it."""
    cmd = ["apt-get", "-q", "-o", "APT::Sandbox::User=root", "download", PACKAGE]
    proc = _run(cmd, work)
    if proc.returncode != 0:
        update = _run(["apt-get", "-q", "update"], work)
        if update.returncode != 0:
            raise UnavailableError(f"apt-get update failed: {update.stderr.strip()[-500:]}")
        proc = _run(cmd, work)
    debs = sorted(work.glob(f"{PACKAGE}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise UnavailableError(f"apt-get download {PACKAGE} failed: {proc.stderr.strip()[-500:]}")
    return debs[-1]


def find_prometheus_tools(cache: Path | None = None, *, fetch: bool = True) -> PrometheusTools:
    """promtool and prometheus: from PATH, else the cache, else fetched into the cache."""
    found = _on_path()
    if found:
        return found
    cache = cache or tools_dir()
    found = _in_cache(cache)
    if found or not fetch:
        if found:
            return found
        raise UnavailableError(f"promtool not on PATH nor in {cache}; run the tests once with network "
                               "access to Debian's archive")
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise UnavailableError("cannot fetch promtool: apt-get and dpkg are needed (Debian)")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnavailableError(f"cannot create the tools cache {cache}: {exc.strerror}; "
                               "set JGW_TOOLS_DIR to a writable directory") from exc
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be fetching right now
        found = _in_cache(cache)
        if found:
            return found
        with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
            work = Path(tmp)
            deb = _download(work)
            unpacked = work / "x"
            proc = _run(["dpkg", "-x", str(deb), str(unpacked)], work)
            if proc.returncode != 0:
                raise UnavailableError(f"dpkg -x {deb.name} failed: {proc.stderr.strip()[-500:]}")
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(cache / PACKAGE)
            os.rename(unpacked, cache / PACKAGE)
    found = _in_cache(cache)
    if not found:
        raise UnavailableError(f"{PACKAGE} package unpacked into {cache} holds no promtool/prometheus")
    return found


@dataclass
class PrometheusServer:
    """A private Prometheus: own data directory, 127.0.0.1 on a free port, stopped by ``stop()``."""

    binary: Path
    base: Path
    scrape_targets: list[str]
    rule_files: list[Path] = field(default_factory=list)
    scrape_interval: str = "1s"
    job: str = "jgw"
    scheme: str = "http"
    port: int = 0
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        targets = ", ".join(json.dumps(t) for t in self.scrape_targets)
        rules = ", ".join(json.dumps(str(r)) for r in self.rule_files)
        return (f"global:\n  scrape_interval: {self.scrape_interval}\n  evaluation_interval: "
                f"{self.scrape_interval}\n  scrape_timeout: {self.scrape_interval}\n"
                f"rule_files: [{rules}]\n"
                f"scrape_configs:\n  - job_name: {self.job}\n    scheme: {self.scheme}\n"
                f"    static_configs:\n      - targets: [{targets}]\n")

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.base / "prometheus.yml"
        config.write_text(self.config_text())
        log = (self.base / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [str(self.binary), f"--config.file={config}", f"--storage.tsdb.path={self.base / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.base)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise UnavailableError(f"prometheus exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise UnavailableError(f"prometheus not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        path = self.base / "prometheus.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` or raises with Prometheus' error text."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as exc:
            doc = json.load(exc)
        if doc.get("status") != "success":
            raise ValueError(f"{doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        if data["resultType"] in ("vector", "matrix"):
            result: list[dict[str, Any]] = data["result"]
            return result
        return [data]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._proc = None
