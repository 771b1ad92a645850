"""Root runs `jgw certs install` / `jgw pki csr` from where the certs directory's owner cannot read.

The usual case on a node: staff are root (sudo), the issued certificates are root's files in /root
or on a USB copy, and jgw may run from a checkout or venv that only root can read. The command must
read staff's files and import what it needs while still root, then write as the owner of the certs
directory; anything that owner cannot read is refused in one line naming the user and the file.

The jgw package and its dependencies are copied into a root-only (0700) directory and run with
``python -S`` and that directory alone on sys.path, so a module imported after the switch fails as
it would on such a node (where Python itself lives under /root, as with pyenv, the standard library
is out of reach after the switch too). The certs directory belongs to ``nobody``.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.pki.devinit import DevPki, init_dev

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another user")

REPO = Path(__file__).resolve().parents[2]
#: what jgw imports from site-packages (run-time dependencies)
DEPENDENCIES = ("cryptography", "cffi", "_cffi_backend", "pycparser", "OpenSSL", "typing_extensions", "pika",
                "asyncssh", "prometheus_client")
NODE = "city-a"


@dataclass(frozen=True)
class RootOnlyInstall:
    """A copy of jgw and its dependencies that only root can read."""

    base: Path

    def run(self, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
        boot = ("import sys; sys.path[:0] = [sys.argv.pop(1), sys.argv.pop(1)]; from gateway.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-S", "-c", boot, str(self.base / "src"), str(self.base / "site"),
                               *args], capture_output=True, text=True, timeout=120, cwd="/", user=user,
                              env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})


@pytest.fixture(scope="module")
def root_only(tmp_path_factory: pytest.TempPathFactory) -> RootOnlyInstall:
    base = tmp_path_factory.mktemp("root-only")
    base.chmod(0o700)
    shutil.copytree(REPO / "gateway", base / "src" / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    import cryptography

    site = Path(cryptography.__file__).resolve().parents[1]
    (base / "site").mkdir()
    for entry in site.iterdir():
        if entry.name.split(".")[0] in DEPENDENCIES and not entry.name.endswith(".dist-info"):
            if entry.is_dir():
                shutil.copytree(entry, base / "site" / entry.name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(entry, base / "site" / entry.name)
    probe = RootOnlyInstall(base).run("--version")
    assert probe.returncode == 0, probe.stderr
    return RootOnlyInstall(base)


@dataclass(frozen=True)
class OwnedNode:
    pki: DevPki
    certs: Path
    private: Path  # root's 0700 directory holding staff's input files
    owner: pwd.struct_passwd

    @property
    def target(self) -> list[str]:
        return ["--certs-dir", str(self.certs), "--node", NODE]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[OwnedNode]:
    """A complete certs directory owned by nobody (the daemon's user here), under directories
    nobody can traverse; staff's files in root's private directory."""
    base = Path(tempfile.mkdtemp(prefix="jgw-root-inputs-"))
    try:
        base.chmod(0o711)
        pki = init_dev(base / "pki", [NODE], dt.datetime.now(dt.UTC), pq_hybrid=False)
        (base / "pki").chmod(0o711)
        nobody = pwd.getpwnam("nobody")
        certs = pki.nodes[NODE]
        for path in [certs, *certs.rglob("*")]:
            os.lchown(path, nobody.pw_uid, nobody.pw_gid)
        private = tmp_path / "root-only-inputs"
        private.mkdir(mode=0o700)
        yield OwnedNode(pki, certs, private, nobody)
    finally:
        shutil.rmtree(base)


def private_copy(node: OwnedNode, source: Path, name: str) -> Path:
    dest = node.private / name
    shutil.copyfile(source, dest)
    dest.chmod(0o600)
    return dest


def test_root_installs_root_only_files_from_a_root_only_venv(root_only: RootOnlyInstall, node: OwnedNode) -> None:
    """pki csr, then certs install of an issued certificate and a CRL that only root can read: all
    succeed, and what lands in the certs directory belongs to its owner."""
    r = root_only.run("pki", "csr", *node.target, "--purpose", "encryption")
    assert r.returncode == 0, r.stdout + r.stderr
    key = node.certs / "staging" / "encryption.key"
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (node.owner.pw_uid, 0o600)

    issued = node.private / "issued-encryption.pem"
    r = root_only.run("pki", "issue-dev", str(node.pki.ca.directory), str(node.certs / "staging/encryption.csr"),
                      "--purpose", "encryption", "--node", NODE, "--out", str(issued))
    assert r.returncode == 0, r.stderr
    issued.chmod(0o600)
    r = root_only.run("certs", "install", *node.target, str(issued))
    assert r.returncode == 0 and "1 installed, 0 failed" in r.stdout, r.stdout + r.stderr
    staged = node.certs / "staging" / "encryption.pem"
    assert staged.stat().st_uid == node.owner.pw_uid

    crl = private_copy(node, node.pki.ca.crl_path, "ca-latest.crl")
    r = root_only.run("certs", "install", *node.target, "--crl", str(crl))
    assert r.returncode == 0 and "1 installed, 0 failed" in r.stdout, r.stdout + r.stderr

    r = root_only.run("certs", "rotate", *node.target, "--no-signal")
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.readlink(node.certs / "live") == "archive/gen-0002"


def test_a_file_the_owner_cannot_read_is_refused_naming_user_and_file(root_only: RootOnlyInstall,
                                                                      node: OwnedNode) -> None:
    """A root-only file inside the certs directory (a staged key left by a run as root before the
    directory was handed to jgw) stops the install with one line: which user could not read which file."""
    assert root_only.run("pki", "csr", *node.target, "--purpose", "encryption").returncode == 0
    key = node.certs / "staging" / "encryption.key"
    os.chown(key, 0, 0)
    issued = node.private / "issued-encryption.pem"
    r = root_only.run("pki", "issue-dev", str(node.pki.ca.directory), str(node.certs / "staging/encryption.csr"),
                      "--purpose", "encryption", "--node", NODE, "--out", str(issued))
    assert r.returncode == 0, r.stderr
    r = root_only.run("certs", "install", *node.target, str(issued))
    assert r.returncode in (77, 78), r.stdout + r.stderr
    line = next(line for line in r.stderr.splitlines() if str(key) in line)
    assert f"nobody (uid {node.owner.pw_uid}) cannot read it" in line, r.stderr
    assert "Traceback" not in r.stderr and "1 failed" in r.stdout
