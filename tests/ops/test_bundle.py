"""The offline bundle: built with the package index, installed with the network switched off."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def no_network_prefix() -> list[str]:
    """`unshare -n` runs the installer in an empty network namespace, so any network use fails."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    pytest.fail("cannot create a network namespace (unshare -n); the offline claim would be untested")


def clean_env(home: Path) -> dict[str, str]:
    """No PIP_* from this machine (its pip.conf points at local indexes): only what install.sh sets."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([str(REPO / "ops/bundle/build.sh"), "--out", str(out)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tarball = Path(proc.stdout.strip().splitlines()[-1])
    assert tarball == out / f"jgw-{VERSION}-bundle.tar.gz" and tarball.exists()
    return tarball


def extract(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / f"jgw-{VERSION}"


@pytest.mark.slow
def test_bundle_contents(bundle: Path) -> None:
    """Wheels for jgw and its dependencies, units, ops files, runbooks, installer, checksums."""
    with tarfile.open(bundle) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        assert all(m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    for required in ("install.sh", "SHA256SUMS", "VERSION", "systemd/jgw.service", "systemd/jgw@.service",
                     "systemd/sysusers.d/jgw.conf", "systemd/tmpfiles.d/jgw.conf",
                     "share/prometheus/rules.yml", "share/grafana/jgw-dashboard.json",
                     "share/runbooks/alerts.en.md", "share/runbooks/alerts.ja.md"):
        assert required in names, required
    wheels = {n.split("/")[1].split("-")[0].lower() for n in names if n.startswith("wheels/")}
    assert {"jgw", "pika", "asyncssh", "cryptography", "pyopenssl", "prometheus_client", "cffi"} <= wheels
    assert not any(n.endswith((".key", ".p12", ".pfx")) for n in names), "a private key in the bundle"


@pytest.mark.slow
def test_installs_without_network(bundle: Path, tmp_path: Path) -> None:
    """install.sh in a network namespace with no interfaces: venv, pip --no-index, units, account."""
    src = extract(bundle, tmp_path / "unpacked")
    prefix, root = tmp_path / "opt-jgw", tmp_path / "root"
    root.mkdir()
    cmd = [*no_network_prefix(), str(src / "install.sh"), "--prefix", str(prefix), "--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.strip() == f"jgw {VERSION}"

    version = subprocess.run([str(prefix / "venv/bin/jgw"), "--version"], capture_output=True, text=True,
                             env=clean_env(tmp_path), timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, f"jgw {VERSION}")
    unit = (root / "etc/systemd/system/jgw.service").read_text()
    assert f"ExecStart={prefix}/venv/bin/jgw run /etc/jgw/jgw.toml" in unit
    assert any(line.startswith("jgw:") for line in (root / "etc/passwd").read_text().splitlines())
    assert (root / "etc/jgw/certs").is_dir() and not (root / "etc/jgw/jgw.toml").exists()
    assert (prefix / "share/runbooks/alerts.ja.md").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(tmp_path), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]  # re-running upgrades in place


@pytest.mark.slow
def test_damaged_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    """One changed byte in a wheel: install.sh stops with 65 before touching anything."""
    src = extract(bundle, tmp_path / "unpacked")
    wheel = next((src / "wheels").glob("pika-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0xFF
    wheel.write_bytes(bytes(data))
    prefix = tmp_path / "opt-jgw"
    proc = subprocess.run([str(src / "install.sh"), "--prefix", str(prefix), "--no-systemd"],
                          capture_output=True, text=True, env=clean_env(tmp_path), timeout=120)
    assert proc.returncode == 65 and "SHA256SUMS" in proc.stderr
    assert not prefix.exists()


def test_install_script_usage_errors(tmp_path: Path) -> None:
    proc = subprocess.run([str(REPO / "ops/bundle/install.sh"), "--frobnicate"], capture_output=True,
                          text=True, env=clean_env(tmp_path), timeout=60)
    assert proc.returncode == 64 and "unknown argument" in proc.stderr
    assert os.access(REPO / "ops/bundle/build.sh", os.X_OK)
