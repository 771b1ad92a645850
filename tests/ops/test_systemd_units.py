"""The shipped systemd units: exposure <= 1.0 offline, `verify` clean, sysusers/tmpfiles work.

No systemd runs in CI's container, so this checks what can be checked without one:
``systemd-analyze security --offline=yes`` scores the unit file as written; ``systemd-analyze
verify`` loads it and checks that every Exec binary exists (so the test points ExecStart at this
virtualenv's ``jgw``, installed by ``pip install -e``); sysusers and tmpfiles run for real into a
throw-away root. What the sandbox does to a running daemon is not covered here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
INSTALLED_JGW = "/opt/jgw/venv/bin/jgw"
THRESHOLD = 1.0
OVERALL = re.compile(r"^→ Overall exposure level for (?P<unit>\S+): (?P<score>\d+\.\d) (?P<word>\w+)")


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd (Debian 12 ships 252)")
    return path


def local_jgw() -> Path:
    jgw = Path(sys.executable).parent / "jgw"
    if not jgw.exists():
        pytest.fail(f"{jgw} missing: install the package into this venv (pip install -e .)")
    return jgw


def unit_copy(tmp_path: Path, source: str, name: str, *, extra_service: str = "") -> Path:
    """The unit with ExecStart pointing at this venv's jgw (verify needs the binary to exist)."""
    text = (UNITS / source).read_text()
    assert INSTALLED_JGW in text
    text = text.replace(INSTALLED_JGW, str(local_jgw()))
    if extra_service:
        text = text.replace("\n[Install]", f"\n{extra_service}\n\n[Install]")
    path = tmp_path / name
    path.write_text(text)
    return path


def exposure(unit: Path) -> tuple[float, int, str]:
    """Score, exit status and full output of the offline security check at threshold 1.0.

    systemd 252 takes the threshold in tenths (10 = 1.0). Parse warnings come before the table,
    so anything above the NAME header is a failure in itself.
    """
    threshold = f"--threshold={int(THRESHOLD * 10)}"
    cmd = [systemd_analyze(), "security", "--offline=yes", threshold, "--no-pager", str(unit)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=unit.parent, timeout=60)
    out = proc.stderr + proc.stdout  # warnings go to stderr, before the table
    lines = proc.stdout.splitlines()
    assert proc.stderr == "" and lines and re.match(r"^\s+NAME\s+DESCRIPTION\s+EXPOSURE", lines[0]), \
        f"output before the table (parse warnings?):\n{out[:2000]}"
    scores = [m for line in lines if (m := OVERALL.match(line))]
    assert len(scores) == 1, out[-2000:]
    return float(scores[0]["score"]), proc.returncode, out


@pytest.mark.parametrize(("source", "name"), [("jgw.service", "jgw.service"),
                                              ("jgw@.service", "jgw@site-a.service")])
def test_exposure_at_most_one(tmp_path: Path, source: str, name: str) -> None:
    """Both units score <= 1.0 and systemd-analyze itself agrees (exit 0 at --threshold)."""
    score, rc, out = exposure(unit_copy(tmp_path, source, name))
    assert score <= THRESHOLD, out
    assert rc == 0, out


def test_exposure_with_broker_addresses_allowed(tmp_path: Path) -> None:
    """The documented drop-in that allows remote brokers keeps the unit at <= 1.0."""
    unit = unit_copy(tmp_path, "jgw.service", "jgw.service",
                     extra_service="IPAddressAllow=10.20.30.40 10.20.31.0/24")
    score, rc, out = exposure(unit)
    assert score <= THRESHOLD and rc == 0, out


def test_parse_warnings_fail_the_check(tmp_path: Path) -> None:
    """A misspelt directive prints a warning above the table, which the check refuses."""
    unit = unit_copy(tmp_path, "jgw.service", "jgw.service", extra_service="ProtectSystm=strict")
    with pytest.raises(AssertionError, match="output before the table"):
        exposure(unit)


def test_the_check_can_fail(tmp_path: Path) -> None:
    """A unit without hardening is scored far above 1.0 and systemd-analyze exits non-zero."""
    unit = tmp_path / "plain.service"
    unit.write_text(f"[Service]\nType=notify\nExecStart={local_jgw()} run /etc/jgw/jgw.toml\n")
    score, rc, _ = exposure(unit)
    assert score > 9.0 and rc != 0


@pytest.mark.parametrize(("source", "name"), [("jgw.service", "jgw.service"),
                                              ("jgw@.service", "jgw@site-a.service")])
def test_verify_clean(tmp_path: Path, source: str, name: str) -> None:
    """`systemd-analyze verify` prints nothing (unknown keys only warn, so any output fails)."""
    unit = unit_copy(tmp_path, source, name)
    proc = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """verify really reads the unit: a misspelt key and a missing binary are both reported."""
    unit = unit_copy(tmp_path, "jgw.service", "typo.service", extra_service="WatchdogSecs=30s")
    proc = subprocess.run([systemd_analyze(), "verify", str(unit)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert "Unknown key 'WatchdogSecs'" in proc.stderr
    missing = tmp_path / "missing.service"
    missing.write_text((UNITS / "jgw.service").read_text())
    proc = subprocess.run([systemd_analyze(), "verify", str(missing)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and INSTALLED_JGW in proc.stderr


def directives(path: Path) -> list[tuple[str, str, str]]:
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def test_template_matches_the_main_unit() -> None:
    """jgw@.service differs from jgw.service only where the instance name belongs."""
    main = directives(UNITS / "jgw.service")
    template = directives(UNITS / "jgw@.service")
    instance_keys = {"Description", "ExecStart", "ExecReload", "StateDirectory", "RuntimeDirectory"}
    assert ([d for d in main if d[1] not in instance_keys]
            == [d for d in template if d[1] not in instance_keys])
    tdict = {k: v for _, k, v in template}
    assert tdict["ExecStart"] == f"{INSTALLED_JGW} run /etc/jgw/%i.toml"
    assert tdict["ExecReload"] == f"{INSTALLED_JGW} reload /etc/jgw/%i.toml"
    assert tdict["StateDirectory"] == "jgw/%i" and tdict["RuntimeDirectory"] == "jgw/%i"


def test_service_contract() -> None:
    """What the daemon relies on: notify from the main PID, watchdog, a reload that waits for the
    daemon's answer (`jgw reload`, exit 1 when refused), W^X, no cores."""
    d = {k: v for _, k, v in directives(UNITS / "jgw.service")}
    assert d["Type"] == "notify" and d["NotifyAccess"] == "main"
    assert d["ExecStart"] == f"{INSTALLED_JGW} run /etc/jgw/jgw.toml"
    assert d["ExecReload"] == f"{INSTALLED_JGW} reload /etc/jgw/jgw.toml"
    assert d["WatchdogSec"] and d["Restart"] == "on-failure"
    assert d["MemoryDenyWriteExecute"] == "yes" and d["LimitCORE"] == "0"
    assert d["User"] == "jgw" and "DynamicUser" not in d


def test_sysusers_and_tmpfiles_into_a_scratch_root(tmp_path: Path) -> None:
    """sysusers creates the jgw account; tmpfiles then makes /etc/jgw root:jgw 0750 and /etc/jgw/certs
    jgw:jgw 0700 (the owner `jgw certs` switches to, so the daemon can read the keys it writes)."""
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: apt-get install systemd")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for kind in ("sysusers.d", "tmpfiles.d"):
        (root / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(UNITS / kind / "jgw.conf", root / "usr/lib" / kind / "jgw.conf")
    subprocess.run(["systemd-sysusers", f"--root={root}", "jgw.conf"], check=True, capture_output=True,
                   timeout=60)
    entry = next(line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("jgw:"))
    _, _, uid, gid, _, home, shell = entry.split(":")
    assert int(uid) > 0 and home == "/var/lib/jgw" and shell.endswith("nologin")
    subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", "jgw.conf"], check=True,
                   capture_output=True, timeout=60)
    expected = {"etc/jgw": (0o750, 0, int(gid)), "etc/jgw/certs": (0o700, int(uid), int(gid))}
    for d, want in expected.items():
        st = (root / d).stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == want, d


def test_crl_fetch_units_verify_clean(tmp_path: Path) -> None:
    """The CRL fetch example (service + timer): `systemd-analyze verify` prints nothing, with the
    helper where install.sh puts it (PREFIX/share/bin)."""
    helper = REPO / "ops" / "bundle" / "jgw-crl-fetch"
    text = (UNITS / "jgw-crl-fetch.service").read_text()
    assert "/opt/jgw/share/bin/jgw-crl-fetch" in text
    (tmp_path / "jgw-crl-fetch.service").write_text(text.replace("/opt/jgw/share/bin/jgw-crl-fetch", str(helper)))
    shutil.copyfile(UNITS / "jgw-crl-fetch.timer", tmp_path / "jgw-crl-fetch.timer")
    for unit in ("jgw-crl-fetch.service", "jgw-crl-fetch.timer"):
        proc = subprocess.run([systemd_analyze(), "verify", str(tmp_path / unit)], capture_output=True,
                              text=True, cwd=tmp_path, timeout=60)
        assert proc.returncode == 0 and proc.stdout + proc.stderr == "", unit + ": " + proc.stdout + proc.stderr
