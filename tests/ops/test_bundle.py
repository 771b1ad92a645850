"""The offline bundle: built with the package index, installed with the network switched off, and run.

What an operator does with it, in order: check the archive against its ``.sha256``, unpack it, run
``install.sh`` (here in a network namespace with no interfaces, into a scratch prefix and root), put
certificates in place (a development PKI made by the installed ``jgw pki init-dev``), run
``jgw check-config`` on each shipped example and ``jgw run`` on one until it tells systemd READY=1.

The examples are used as shipped except for the lines a site changes anyway, each replaced
textually (so every other line, comment and route is the shipped one):
  - ``node.state_dir`` and ``node.certs_dir``: scratch directories instead of /var/lib/jgw, /etc/jgw/certs;
  - the local broker's ``password_file``: a 0600 file beside the copy instead of /etc/jgw/;
  - for ``jgw run`` only: ``node.metrics_listen`` (a free port), the city hall's local broker URL
    (``amqp://guest@127.0.0.1:PORT/juki`` on a private RabbitMQ node instead of the shipped
    ``amqp://jgw@…``; the password comes from that file), and the data-centre link
    (``amqps://localhost:TLSPORT/ido`` on the same node's mTLS listener, ``server_hostname =
    "localhost"`` to match the development broker certificate).
On the broker, the sink exchanges are declared first, as the receiving systems would have them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import config as config_mod
from tests.lab.harness import Amqp
from tests.lab.rabbitnode import PrivateNode, TlsListener, free_port, rabbitmq_installed
from tests.lab.sitefiles import install_file_material
from tests.lab.sshd import PrivateSshd
from tests.ops.daemon import NotifyRecorder
from tests.ops.notify_socket import NotifySocket

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
NAME = f"jgw-{VERSION}"
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.toml"))


def no_network_prefix() -> list[str]:
    """`unshare -n` runs the installer in an empty network namespace, so any network use fails."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    pytest.fail("cannot create a network namespace (unshare -n); the offline claim would be untested")


def clean_env(home: Path) -> dict[str, str]:
    """No PIP_* from this machine (its pip.conf points at local indexes), no JGW_CATALOG: only what
    install.sh sets, as on a fresh host."""
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1"}


def build(out: Path) -> Path:
    proc = subprocess.run([str(REPO / "ops/bundle/build.sh"), "--out", str(out)], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tarball = Path(proc.stdout.strip().splitlines()[-1])
    assert tarball == out / f"{NAME}-bundle.tar.gz" and tarball.exists()
    return tarball


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("dist"))


def extract(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / NAME


@dataclass(frozen=True)
class Installed:
    src: Path
    prefix: Path
    root: Path
    home: Path
    install_cmd: list[str]

    @property
    def jgw(self) -> str:
        return str(self.prefix / "venv/bin/jgw")

    def run(self, *args: str, offline: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [*(no_network_prefix() if offline else []), self.jgw, *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=clean_env(self.home), cwd=self.home,
                              timeout=timeout)


@pytest.fixture(scope="module")
def installed(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """install.sh with no network, into a scratch prefix, its system files under a scratch root."""
    base = tmp_path_factory.mktemp("installed")
    src = extract(bundle, base / "unpacked")
    prefix, root, home = base / "opt-jgw", base / "root", base / "home"
    root.mkdir()
    home.mkdir()
    cmd = [*no_network_prefix(), str(src / "install.sh"), "--prefix", str(prefix), "--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(home), timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.strip() == f"jgw {VERSION}"
    return Installed(src, prefix, root, home, cmd)


def sums(tarball: Path) -> dict[str, str]:
    """The bundle's SHA256SUMS as {path: digest}."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile(f"{NAME}/SHA256SUMS")
        assert member is not None
        text = member.read().decode()
    return {line.split("  ", 1)[1].removeprefix("./"): line.split("  ", 1)[0] for line in text.splitlines()}


# ---- the archive ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bundle_contents(bundle: Path) -> None:
    """Wheels for jgw and its dependencies, units, ops files, runbooks and the READMEs they cite,
    completion and manual page, installer, checksums; no test lab, no private key."""
    with tarfile.open(bundle) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        assert all(m.uid == 0 and m.gid == 0 for m in tar.getmembers())
    for required in ("install.sh", "SHA256SUMS", "VERSION", "BUILDINFO", "systemd/jgw.service",
                     "systemd/jgw@.service", "systemd/jgw-crl-fetch.service", "systemd/jgw-crl-fetch.timer",
                     "systemd/sysusers.d/jgw.conf", "systemd/tmpfiles.d/jgw.conf",
                     "share/prometheus/rules.yml", "share/grafana/jgw-dashboard.json",
                     "share/runbooks/alerts.en.md", "share/runbooks/alerts.ja.md",
                     "share/runbooks/cert-rotation.en.md", "share/runbooks/cert-rotation.ja.md",
                     "share/certs/README.md", "share/systemd/README.md", "share/catalog/README.md",
                     "share/docs/configuration.md", "share/docs/operations.md",
                     "share/config-examples/cityhall.toml", "share/config-examples/datacenter.toml",
                     "share/completion/jgw.bash", "share/completion/_jgw", "share/man/man1/jgw.1",
                     "share/bin/jgw-crl-fetch"):
        assert required in names, required
    wheels = {n.split("/")[1].split("-")[0].lower() for n in names if n.startswith("wheels/")}
    assert {"jgw", "pika", "asyncssh", "cryptography", "pyopenssl", "prometheus_client", "cffi"} <= wheels
    assert not wheels & {"shtab", "argparse_manpage", "setuptools", "pytest"}, "a build/test tool shipped"
    assert not any(n.endswith((".key", ".p12", ".pfx")) for n in names), "a private key in the bundle"
    assert not any("/lab/" in n or n.startswith("tests/") for n in names), "the test lab in the bundle"


@pytest.mark.slow
def test_the_archive_has_its_sha256_beside_it(bundle: Path) -> None:
    """`sha256sum -c jgw-VERSION-bundle.tar.gz.sha256` next to the archive says OK (install runbook, step 1)."""
    sidecar = bundle.with_name(bundle.name + ".sha256")
    proc = subprocess.run(["sha256sum", "-c", sidecar.name], cwd=bundle.parent, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"{bundle.name}: OK", proc.stdout + proc.stderr
    assert sidecar.read_text().split()[0] == hashlib.sha256(bundle.read_bytes()).hexdigest()


@pytest.mark.slow
def test_two_builds_of_one_commit_are_identical(bundle: Path, tmp_path: Path) -> None:
    """The same wheel set (names and SHA-256) and the same archive bytes from a second build."""
    again = build(tmp_path / "dist2")
    first, second = sums(bundle), sums(again)
    assert {k: v for k, v in first.items() if k.startswith("wheels/")} == \
           {k: v for k, v in second.items() if k.startswith("wheels/")}
    assert first == second
    assert again.with_name(again.name + ".sha256").read_text() == bundle.with_name(bundle.name + ".sha256").read_text()


def test_the_locks_pin_every_dependency_with_hashes() -> None:
    """requirements.lock pins each dependency of pyproject.toml (and theirs) to one version with hashes,
    as build.sh's --require-hashes needs; the build tools are locked the same way."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for lock, wanted in (("requirements.lock", deps),
                         ("build-requirements.lock", ["setuptools", "shtab", "packaging"]),
                         ("build-sdist-requirements.lock", ["argparse-manpage"])):
        text = (REPO / "ops/bundle" / lock).read_text()
        pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", text, re.M))
        names = {n.lower().replace("_", "-") for n in pins}
        for dep in wanted:
            name = re.split(r"[=<>!~ ;\[]", dep, maxsplit=1)[0].lower().replace("_", "-")
            assert name in names, f"{lock}: {name} not locked (run ops/bundle/lock.sh)"
            pinned = re.match(r"^[A-Za-z0-9_.-]+==(\S+)$", dep.replace(" ", ""))
            if pinned:
                assert pins[next(n for n in pins if n.lower().replace("_", "-") == name)] == pinned.group(1)
        blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n\n", 1)[-1])
        assert all("--hash=sha256:" in b for b in blocks if re.match(r"[A-Za-z0-9_.-]+==", b)), lock


# ---- installing -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_installs_without_network(installed: Installed) -> None:
    """Venv, units (CRL timer included, not enabled), account, /etc/jgw, jgw on PATH, completion, manual."""
    version = installed.run("--version", offline=False)
    assert (version.returncode, version.stdout.strip()) == (0, f"jgw {VERSION}")
    root, prefix = installed.root, installed.prefix
    unit = (root / "etc/systemd/system/jgw.service").read_text()
    assert f"ExecStart={prefix}/venv/bin/jgw run /etc/jgw/jgw.toml" in unit
    fetch = (root / "etc/systemd/system/jgw-crl-fetch.service").read_text()
    assert f"ExecStart={prefix}/share/bin/jgw-crl-fetch --config /etc/jgw/jgw.toml" in fetch
    assert (root / "etc/systemd/system/jgw-crl-fetch.timer").exists()
    assert not (root / "etc/systemd/system/timers.target.wants").exists()
    assert any(line.startswith("jgw:") for line in (root / "etc/passwd").read_text().splitlines())
    assert (root / "etc/jgw/certs").is_dir() and not (root / "etc/jgw/jgw.toml").exists()
    for doc in ("runbooks/alerts.ja.md", "certs/README.md", "systemd/README.md", "catalog/README.md",
                "docs/operations.md"):
        assert (prefix / "share" / doc).exists(), doc
    # every README and doc a runbook cites is installed under share/ (config/catalog/ as catalog/)
    cited = {m for page in (REPO / "ops/runbooks").glob("*.md")
             for m in re.findall(r"`(?:/opt/jgw/share/)?((?:certs|systemd|config/catalog|docs)/[\w.-]+\.md)`",
                                 page.read_text(encoding="utf-8"))}
    assert "certs/README.md" in cited
    for doc in cited:
        assert (prefix / "share" / doc.replace("config/catalog/", "catalog/")).exists(), doc
    assert os.access(prefix / "share/bin/jgw-crl-fetch", os.X_OK)
    assert os.readlink(root / "usr/local/bin/jgw") == f"{prefix}/venv/bin/jgw"
    assert (root / "usr/local/share/zsh/site-functions/_jgw").read_text().startswith("#compdef jgw")
    assert (root / "usr/local/share/man/man1/jgw.1").read_text().startswith(".TH JGW")

    again = subprocess.run(installed.install_cmd, capture_output=True, text=True, env=clean_env(installed.home),
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]  # re-running upgrades in place


@pytest.mark.slow
def test_bash_completes_verbs(installed: Installed) -> None:
    """The installed bash completion: `jgw ce<TAB>` gives certs, `jgw certs <TAB>` its verbs."""
    script = installed.root / "usr/local/share/bash-completion/completions/jgw"
    probe = ('source "$1"; COMP_WORDS=(jgw ce); COMP_CWORD=1; _shtab_jgw; echo "${COMPREPLY[*]}"; '
             'COMP_WORDS=(jgw certs ""); COMP_CWORD=2; _shtab_jgw; echo "${COMPREPLY[*]}"')
    proc = subprocess.run(["bash", "-c", probe, "bash", str(script)], capture_output=True, text=True, timeout=60)
    first, second = proc.stdout.splitlines()
    assert first == "certs"
    assert set(second.split()) >= {"install", "status", "rotate", "rollback", "export"}


@pytest.mark.slow
def test_man_page_documents_the_commands(installed: Installed) -> None:
    """`man jgw` shows the commands, from the parser the installed jgw uses."""
    page = installed.root / "usr/local/share/man/man1/jgw.1"
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    proc = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                          env={**clean_env(installed.home), "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""})
    assert proc.returncode == 0, proc.stderr
    for word in ("check-config", "certs", "dlq", "audit", "exit codes"):
        assert word in proc.stdout, word


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


# ---- running the shipped examples ---------------------------------------------------------------------


@dataclass(frozen=True)
class DevPki:
    directory: Path

    def node(self, node_id: str) -> Path:
        return self.directory / node_id


@pytest.fixture(scope="module")
def dev_pki(installed: Installed) -> DevPki:
    """The certificates an operator would install, made by the installed jgw (offline)."""
    directory = installed.home / "pki"
    proc = installed.run("pki", "init-dev", str(directory), "--node", "cityhall", "--node", "datacenter")
    assert proc.returncode == 0, proc.stderr
    return DevPki(directory)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the shipped example no longer has exactly one {old!r}"
    return text.replace(old, new)


def site_copy(example: Path, dest: Path, certs: Path, state: Path, more: dict[str, str] | None = None,
              pin: Callable[[config_mod.Config, str], tuple[str, int, Path]] | None = None) -> Path:
    """The shipped example with only the named lines changed (see the module docstring)."""
    text = example.read_text(encoding="utf-8")
    text = replace_once(text, 'state_dir = "/var/lib/jgw"', f'state_dir = "{state}"')
    text = replace_once(text, 'certs_dir = "/etc/jgw/certs"', f'certs_dir = "{certs}"')
    # the file routes' directories (the systems' spools, the data centre's storage), as staff make them
    for prefix in ("/var/spool/jgw/", "/srv/jgw/"):
        for line in [ln for ln in text.splitlines() if f'"{prefix}' in ln]:
            for part in line.split('"'):
                if part.startswith(prefix):
                    (dest.parent / "dirs" / part.lstrip("/")).mkdir(parents=True, exist_ok=True)
        text = text.replace(f'"{prefix}', f'"{dest.parent / "dirs" / prefix.strip("/")}/')
    if 'password_file = "/etc/jgw/broker-local.password"' in text:  # the broker password, 0600, as staff keep it
        secret = dest.parent / "broker-local.password"
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text("guest\n")
        secret.chmod(0o600)
        text = replace_once(text, 'password_file = "/etc/jgw/broker-local.password"', f'password_file = "{secret}"')
    for old, new in (more or {}).items():
        text = replace_once(text, old, new)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    install_file_material(config_mod.load(dest), certs, pin)  # SFTP keys and pins, endpoint keys
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_installed_jgw_accepts_each_shipped_example(installed: Installed, dev_pki: DevPki,
                                                    example: Path) -> None:
    """`jgw check-config` from the installed bundle, no network, no JGW_CATALOG, exit 0, every route shown."""
    node_id = tomllib.loads(example.read_text(encoding="utf-8"))["node"]["id"]
    shipped = installed.prefix / "share/config-examples" / example.name
    assert shipped.read_bytes() == example.read_bytes()
    config = site_copy(shipped, installed.home / "etc" / example.name, dev_pki.node(node_id),
                       installed.home / "state" / node_id)
    proc = installed.run("check-config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for route in tomllib.loads(example.read_text(encoding="utf-8"))["routes"]:
        assert route in proc.stdout, route


@pytest.fixture(scope="module")
def site_broker(dev_pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNode]:
    """One private RabbitMQ node: plain AMQP with vhost juki (the city hall's own broker) and an mTLS
    listener with vhost ido and EXTERNAL users (the data centre's, over LGWAN)."""
    if not rabbitmq_installed():
        pytest.fail("rabbitmq-server is not installed (make test installs it)")
    broker = dev_pki.directory / "broker"
    node = PrivateNode(base=tmp_path_factory.mktemp("rabbit"),
                       tls=TlsListener(cacert=broker / "ca.pem", cert=broker / "server.pem",
                                       key=broker / "server.key"))
    node.start()
    try:
        node.add_vhost("juki")
        node.add_vhost("ido")
        for user in ("cityhall", "datacenter"):  # EXTERNAL login: the certificate's CN
            node.ctl("add_user", user, "unused-" + os.urandom(8).hex())
            node.ctl("clear_password", user)
            node.ctl("set_permissions", "-p", "ido", user, ".*", ".*", ".*")
        yield node
    finally:
        node.destroy()


@pytest.mark.slow
def test_installed_jgw_runs_the_cityhall_example_until_ready(installed: Installed, dev_pki: DevPki,
                                                             site_broker: PrivateNode, tmp_path: Path) -> None:
    """`jgw run` of the installed bundle on the city hall example: READY=1, every route running, then a
    clean stop on SIGTERM."""
    assert site_broker.tls is not None
    shipped = installed.prefix / "share/config-examples/cityhall.toml"
    # the OCR system's and 統合宛名's SFTP servers: one private OpenSSH sshd with their directories
    sftp = PrivateSshd().start()
    for directory in ("outbox", "inbox/juminhyo", "inbox/fukuhon"):
        (sftp.chroot / directory).mkdir(parents=True, exist_ok=True)

    def pin(_cfg: config_mod.Config, _server: str) -> tuple[str, int, Path]:
        return "127.0.0.1", sftp.port, sftp.host_key

    text = shipped.read_text(encoding="utf-8")
    servers = {'host = "ocr-sv.example.lg.jp"': f'host = "127.0.0.1"\nport = {sftp.port}',
               'host = "atena-sv.example.lg.jp"': f'host = "127.0.0.1"\nport = {sftp.port}'}
    assert text.count('user = "jgw"') == 2, "the shipped SFTP servers' user lines changed"
    edited = tmp_path / "shipped-edited.toml"
    edited.write_text(text.replace('user = "jgw"', 'user = "root"'), encoding="utf-8")
    config = site_copy(edited, tmp_path / "jgw.toml", dev_pki.node("cityhall"), tmp_path / "state", {
        'metrics_listen = "127.0.0.1:9469"': f'metrics_listen = "127.0.0.1:{free_port()}"',
        'urls = ["amqp://jgw@127.0.0.1:5672/juki"]':
            f'urls = ["amqp://guest@127.0.0.1:{site_broker.amqp_port}/juki"]',  # the password: its file
        'urls = ["amqps://dc-gw.example.lg.jp:5671/ido"]': f'urls = ["amqps://localhost:{site_broker.tls.port}/ido"]',
        'server_hostname = "dc-gw.example.lg.jp"': 'server_hostname = "localhost"',
        'listen = "0.0.0.0:2222"': f'listen = "127.0.0.1:{free_port()}"',
        **servers}, pin=pin)
    for server in config_mod.load(config).files.sftp.values():
        sftp.authorize(server.client_key)
    routes_table = tomllib.loads(config.read_text(encoding="utf-8"))["routes"]
    routes = len(routes_table)
    # the receiving systems' side: each sink exchange exists before jgw publishes to it (jgw declares
    # its source queues, never another system's exchange)
    for vhost, broker in (("juki", "local"), ("ido", "datacenter")):
        with Amqp(f"amqp://guest:guest@127.0.0.1:{site_broker.amqp_port}/{vhost}") as amqp:
            for route in routes_table.values():
                if route["sink"].get("broker") == broker and route["sink"].get("exchange"):
                    amqp.declare_exchange(route["sink"]["exchange"])
    recorder = NotifyRecorder(NotifySocket(tmp_path))
    log_path = tmp_path / "jgw.log"
    env = {**clean_env(installed.home), "NOTIFY_SOCKET": recorder.sock.env_value}
    with log_path.open("wb") as log:
        proc = subprocess.Popen([installed.jgw, "run", str(config)], env=env, cwd=installed.home, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        ready = recorder.wait_for(lambda n: n.fields.get("READY") == "1", timeout=90, what="READY=1")
        assert proc.poll() is None, log_path.read_text()
        # READY=1 comes at the latest after 60 s even with a broker down: every route must be running
        try:
            recorder.wait_for(lambda n: n.fields.get("STATUS") == f"{routes}/{routes} routes running",
                              timeout=30, what=f"STATUS={routes}/{routes} routes running")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log_path.read_text(errors='replace')[-4000:]}") from None
        assert ready.at - started < 55, "READY only by its time-out: a link never came up"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_path.read_text()[-3000:]
        recorder.wait_for(lambda n: n.fields.get("STOPPING") == "1", timeout=5, what="STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        recorder.close()
        sftp.destroy()
