"""The first-installation runbook, run line by line on an empty certs directory.

``ops/runbooks/first-certificates.en.md`` is what staff follow on a new node. Each ``jgw`` line of
its code blocks runs here in the order written, with the config and the media replaced by scratch
paths: the CA (a development CA) is on the "media" as ``ca/ca.pem`` and ``ca/ca-latest.crl``, the
peer site's export as ``datacenter/``, and the CA issues the requests of step 3 when the runbook
comes to installing what it issued. The Japanese runbook must give the same command lines.
"""

from __future__ import annotations

import datetime as dt
import glob
import http.server
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.pki.devinit import DevPki, init_dev
from gateway.pki.layout import CertsDir
from tests.ops.test_docs_match_code import command_lines
from tests.pki.jgwcli import run as jgw

REPO = Path(__file__).resolve().parents[2]
RUNBOOK = REPO / "ops" / "runbooks" / "first-certificates.en.md"
HELPER = REPO / "ops" / "bundle" / "jgw-crl-fetch"


@pytest.fixture
def ca_and_peer(tmp_path: Path) -> DevPki:
    """The 団体's CA (its certificate, CRL and issuing) and a peer site under it."""
    return init_dev(tmp_path / "ca-side", ["datacenter"], dt.datetime.now(dt.UTC), pq_hybrid=False)


def node_config(tmp_path: Path, certs: Path) -> Path:
    """The shipped city hall example with the node's directories moved into scratch space."""
    text = (REPO / "config" / "examples" / "cityhall.toml").read_text(encoding="utf-8")
    text = text.replace('certs_dir = "/etc/jgw/certs"', f'certs_dir = "{certs}"')
    text = text.replace('state_dir = "/var/lib/jgw"', f'state_dir = "{tmp_path / "state"}"')
    config = tmp_path / "jgw.toml"
    config.write_text(text, encoding="utf-8")
    return config


def test_the_runbook_works_on_an_empty_directory(tmp_path: Path, ca_and_peer: DevPki) -> None:
    """Every jgw line of the runbook exits 0 in order; at the end the node has a live gen-0001 and
    `certs status` is clean. No output claims that a live generation carried over."""
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o700)  # as install.sh leaves it: present and empty
    config = node_config(tmp_path, certs)
    usb = tmp_path / "usb"
    (usb / "ca").mkdir(parents=True)
    shutil.copyfile(ca_and_peer.ca.cert_path, usb / "ca" / "ca.pem")
    shutil.copyfile(ca_and_peer.ca.crl_path, usb / "ca" / "ca-latest.crl")
    peer_live = CertsDir(ca_and_peer.nodes["datacenter"]).live_dir()
    (usb / "datacenter").mkdir()
    for name in ("signing.pem", "encryption.pem"):
        shutil.copyfile(peer_live / name, usb / "datacenter" / name)

    lines = command_lines(RUNBOOK)
    assert len(lines) >= 10, lines
    outputs: list[str] = []
    for line in lines:
        line = line.replace("/etc/jgw/jgw.toml", str(config)).replace("/media/usb", str(usb))
        if "from-ca" in line:  # step 4: the CA issues every request of step 3
            (usb / "from-ca").mkdir()
            for csr in sorted((certs / "staging").glob("*.csr")):
                r = jgw("pki", "issue-dev", str(ca_and_peer.ca.directory), str(csr), "--purpose", csr.stem,
                        "--node", "cityhall", "--out", str(usb / "from-ca" / f"{csr.stem}.pem"))
                assert r.returncode == 0, r.stderr
        words = [w for word in shlex.split(line)[1:] for w in (sorted(glob.glob(word)) if "*" in word else [word])]
        r = jgw(*words)
        assert r.returncode == 0, f"{line}\n{r.stdout}{r.stderr}"
        outputs.append(r.stdout)
        if words[:2] == ["pki", "csr"]:
            assert "carry over" not in r.stdout.replace("carries over", "") and "from the live" not in r.stdout
    first_csr = next(o for line, o in zip(lines, outputs, strict=True) if " csr " in line)
    assert "no live generation yet" in first_csr and "nothing carries over" in first_csr
    assert any("live: (none) -> gen-0001" in o for o in outputs)
    assert CertsDir(certs).pointer("live") == "gen-0001"
    assert (usb / "cityhall" / "signing.pem").exists()  # step 8 wrote the export for the peers


def test_japanese_runbook_gives_the_same_commands() -> None:
    """Staff reading the Japanese page type exactly what the English page says, in the same order."""
    assert command_lines(RUNBOOK.with_name("first-certificates.ja.md")) == command_lines(RUNBOOK)


def test_a_later_csr_says_what_carries_over(tmp_path: Path) -> None:
    """With a live generation, the first csr says it copied that generation (the other slots carry over)."""
    pki = init_dev(tmp_path / "pki", ["city-a"], dt.datetime.now(dt.UTC), pq_hybrid=False)
    r = jgw("pki", "csr", "--certs-dir", str(pki.nodes["city-a"]), "--node", "city-a", "--purpose", "signing")
    assert r.returncode == 0 and "from the live generation gen-0001 (the other slots carry over)" in r.stdout


# ---- the CRL fetch helper of step 2 ---------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def crl_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a directory, as the CA's distribution point would."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **kw: _Quiet(*a, directory=str(root), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def fetch(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8", "JGW": str(bin_dir / "jgw"),
           "JGW_PYTHON": sys.executable}
    return subprocess.run([str(HELPER), "--config", str(config), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_crl_fetch_helper_installs_the_published_crl(tmp_path: Path, crl_server: tuple[str, Path]) -> None:
    """jgw-crl-fetch: a newer CRL published by the CA is fetched and installed (exit 0); a URL that
    does not answer is exit 69 with nothing installed; a CRL from another CA is refused (78)."""
    base, www = crl_server
    pki = init_dev(tmp_path / "pki", ["cityhall"], dt.datetime.now(dt.UTC), pq_hybrid=False)
    certs = pki.nodes["cityhall"]
    config = node_config(tmp_path, certs)
    ca = pki.ca
    ca.revoke(0x1234, "key_compromise")
    newer = ca.write_crl(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5),
                         next_update=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    shutil.copyfile(newer, www / "ca.crl")
    urls = tmp_path / "crl-urls"
    urls.write_text(f"# the dev CA\n{base}/ca.crl\n")

    r = fetch(config, "--urls", str(urls), "--no-reload")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 installed, 0 failed" in r.stdout and "1 revoked" in r.stdout
    installed = next((certs / "trust" / "crls").glob("*.pem")).read_bytes()

    r = fetch(config, f"{base}/missing.crl", "--no-reload")
    assert r.returncode == 69 and "missing.crl" in r.stderr and "nothing installed" in r.stderr
    assert next((certs / "trust" / "crls").glob("*.pem")).read_bytes() == installed

    other = init_dev(tmp_path / "other", ["x-1"], dt.datetime.now(dt.UTC), pq_hybrid=False)
    shutil.copyfile(other.ca.crl_path, www / "other.crl")
    r = fetch(config, f"{base}/other.crl", "--no-reload")
    assert r.returncode == 78, r.stdout + r.stderr

    r = fetch(config, "--urls", str(tmp_path / "no-such-file"))
    assert r.returncode == 66 and "crl-urls" not in r.stdout
