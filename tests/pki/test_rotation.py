"""Rotation and rollback: atomic, reversible byte for byte, repaired after a crash, never concurrent."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gateway.errors import NoInputError, TempFailError
from gateway.pki.devinit import stage_generation
from gateway.pki.errors import CertificateError
from gateway.pki.generation import load_generation
from gateway.pki.layout import CertsDir
from gateway.pki.rotation import needs_repair, repair, rollback, rotate, signal_daemon
from gateway.pki.trust import TrustStore
from tests.pki.conftest import World, snapshot

REPO = Path(__file__).resolve().parents[2]


def validator(cd: CertsDir, node_id: str, now: dt.datetime):  # type: ignore[no-untyped-def]
    trust = TrustStore.load(cd.trust, now)
    return lambda d: load_generation(d, node_id, trust, at=now)


def stage_new(world: World, now: dt.datetime) -> None:
    stage_generation(world.a.cd.staging, "city-a", world.ca, now)


def test_rotate_then_rollback_restores_exactly(world: World, now: dt.datetime) -> None:
    """After rotate + rollback, live holds the same files, byte for byte and mode for mode; the
    rolled-away generation stays as previous (its decryption key is still needed)."""
    cd = world.a.cd
    before = snapshot(cd.live_dir())
    stage_new(world, now)
    staged = snapshot(cd.staging)
    out = rotate(cd, validator(cd, "city-a", now))
    assert (out.live, out.previous) == ("gen-0002", "gen-0001")
    assert snapshot(cd.live_dir()) == staged and not cd.staging.exists()
    out = rollback(cd, validator(cd, "city-a", now))
    assert cd.pointer("live") == "gen-0001" and cd.pointer("previous") == "gen-0002"
    assert snapshot(cd.live_dir()) == before
    assert os.readlink(cd.pointer_path("live")) == "archive/gen-0001"
    history = cd.history.read_text()
    assert "rotate: live gen-0001 -> gen-0002" in history and "rollback: live gen-0002 -> gen-0001" in history


def test_rotate_refuses_bad_staging_and_changes_nothing(world: World, now: dt.datetime) -> None:
    """A staged generation with an expired certificate is refused; live, previous and archive stay."""
    cd = world.a.cd
    stage_generation(cd.staging, "city-a", world.ca, now - dt.timedelta(days=200), days=100)

    def state() -> tuple[object, ...]:
        return cd.pointer("live"), cd.pointer("previous"), cd.generations(), snapshot(cd.root / "archive")

    before = state()
    with pytest.raises(CertificateError) as info:
        rotate(cd, validator(cd, "city-a", now))
    assert info.value.code == "expired" and "staging" in info.value.file
    assert state() == before
    assert cd.staging.is_dir() and not cd.journal.exists()


def test_dry_run_changes_nothing(world: World, now: dt.datetime) -> None:
    """--dry-run validates and describes, and every file stays as it was."""
    cd = world.a.cd
    stage_new(world, now)
    before = snapshot(cd.root)
    out = rotate(cd, validator(cd, "city-a", now), dry_run=True)
    assert out.simulated and any("would switch live from gen-0001 to gen-0002" in line for line in out.lines)
    after = snapshot(cd.root)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


def test_nothing_staged(world: World, now: dt.datetime) -> None:
    with pytest.raises(NoInputError) as info:
        rotate(world.a.cd, validator(world.a.cd, "city-a", now))
    assert info.value.exit_code == 66 and "jgw pki csr" in str(info.value)


def test_rollback_without_previous(world: World, now: dt.datetime) -> None:
    with pytest.raises(NoInputError):
        rollback(world.a.cd, validator(world.a.cd, "city-a", now))


def test_rollback_to_an_unusable_generation_is_refused(world: World, now: dt.datetime) -> None:
    """If the previous generation has expired meanwhile, rollback refuses and says so."""
    cd = world.a.cd
    stage_new(world, now)
    rotate(cd, validator(cd, "city-a", now))
    later = now + dt.timedelta(days=95)  # gen-0001 expired (90 days); gen-0002 too, so renew CRL only
    world.ca.write_crl(later)
    (cd.crls / "dev-ca.pem").write_bytes(world.ca.crl_path.read_bytes())
    with pytest.raises(CertificateError) as info:
        rollback(cd, validator(cd, "city-a", later))
    assert info.value.code == "expired" and "cannot roll back to gen-0001" in str(info.value)
    assert cd.pointer("live") == "gen-0002"


def test_exception_midway_leaves_the_old_state(world: World, now: dt.datetime) -> None:
    """An error after the previous pointer moved but before live did undoes everything at once."""
    cd = world.a.cd
    stage_new(world, now)
    staged = snapshot(cd.staging)

    def boom(step: str) -> None:
        if step == "previous":
            raise OSError("disk full")

    with pytest.raises(OSError):
        rotate(cd, validator(cd, "city-a", now), hook=boom)
    assert cd.pointer("live") == "gen-0001" and cd.pointer("previous") is None
    assert cd.generations() == ["gen-0001"] and not cd.journal.exists()
    assert snapshot(cd.staging) == staged


CRASH = textwrap.dedent("""
    import datetime as dt, os, sys
    from pathlib import Path
    from gateway.pki.layout import CertsDir
    from gateway.pki.generation import load_generation
    from gateway.pki.rotation import rotate, rollback
    from gateway.pki.trust import TrustStore
    cd = CertsDir(Path(sys.argv[1])); action, step = sys.argv[2], sys.argv[3]
    now = dt.datetime.now(dt.UTC)
    trust = TrustStore.load(cd.trust, now)
    def hook(s):
        if s == step:
            os._exit(9)   # a power cut: no cleanup, no finally
    (rotate if action == "rotate" else rollback)(cd, lambda d: load_generation(d, "city-a", trust, at=now),
                                                 hook=hook)
""")


def crash_at(cd: CertsDir, action: str, step: str) -> None:
    r = subprocess.run([sys.executable, "-c", CRASH, str(cd.root), action, step], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 9, r.stderr


@pytest.mark.parametrize("step", ["journal", "archived", "previous"])
def test_rotation_killed_before_the_switch_is_undone(world: World, now: dt.datetime, step: str) -> None:
    """Killed before live moved: the next command restores the old pointers, removes the half-made
    generation and keeps staging, so staff can simply run rotate again."""
    cd = world.a.cd
    stage_new(world, now)
    staged = snapshot(cd.staging)
    live_before = snapshot(cd.live_dir())
    crash_at(cd, "rotate", step)
    assert needs_repair(cd)
    with cd.locked():
        lines = repair(cd)
    assert any("undid an interrupted rotate" in line for line in lines)
    assert cd.pointer("live") == "gen-0001" and cd.pointer("previous") is None
    assert cd.generations() == ["gen-0001"] and not needs_repair(cd)
    assert snapshot(cd.live_dir()) == live_before and snapshot(cd.staging) == staged
    out = rotate(cd, validator(cd, "city-a", now))  # and the retry works
    assert out.live == "gen-0002"


@pytest.mark.parametrize("step", ["live", "staging-removed"])
def test_rotation_killed_after_the_switch_is_completed(world: World, now: dt.datetime, step: str) -> None:
    """Killed after live moved: the rotation had committed, so the next command finishes it."""
    cd = world.a.cd
    stage_new(world, now)
    staged = snapshot(cd.staging)
    crash_at(cd, "rotate", step)
    assert needs_repair(cd)
    with cd.locked():
        lines = repair(cd)
    assert any("completed an interrupted rotate: live is gen-0002" in line for line in lines)
    assert cd.pointer("live") == "gen-0002" and cd.pointer("previous") == "gen-0001"
    assert snapshot(cd.live_dir()) == staged and not cd.staging.exists() and not needs_repair(cd)


def test_rollback_killed_halfway_is_undone(world: World, now: dt.datetime) -> None:
    """A rollback killed after moving previous but before live is undone on the next run."""
    cd = world.a.cd
    stage_new(world, now)
    rotate(cd, validator(cd, "city-a", now))
    crash_at(cd, "rollback", "previous")
    assert os.readlink(cd.pointer_path("previous")) == "archive/gen-0002"  # the half-done state
    with cd.locked():
        repair(cd)
    assert (cd.pointer("live"), cd.pointer("previous")) == ("gen-0002", "gen-0001")


def test_leftover_temporary_files_are_removed(world: World, now: dt.datetime) -> None:
    """A temporary symlink or half-copied generation from a killed run is cleaned up."""
    cd = world.a.cd
    os.symlink("archive/gen-0001", cd.root / ".live.tmp4242")
    (cd.archive / ".gen-0002.tmp4242").mkdir()
    with cd.locked():
        lines = repair(cd)
    assert len(lines) == 2 and not cd.leftovers()


def test_two_rotations_cannot_race(world: World, now: dt.datetime) -> None:
    """While one command holds the lock, another fails at once with exit 75 naming the holder."""
    cd = world.a.cd
    stage_new(world, now)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from gateway.pki.layout import CertsDir
        with CertsDir(Path(sys.argv[1])).locked():
            print("locked", flush=True)
            time.sleep(30)
    """), str(cd.root)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(TempFailError) as info:
            rotate(cd, validator(cd, "city-a", now))
        assert info.value.exit_code == 75 and f"pid {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    assert rotate(cd, validator(cd, "city-a", now)).live == "gen-0002"  # the lock died with its holder


def test_signal_daemon_sends_sighup(tmp_path: Path) -> None:
    """rotate's signal reaches a process that calls itself jgw through its pid file."""
    marker = tmp_path / "got-hup"
    daemon = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import signal, sys, time, pathlib
        signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).write_text("hup"))
        print("ready", flush=True)
        time.sleep(30)
    """), "jgw", "run"], stdout=subprocess.PIPE, text=True)
    try:
        assert daemon.stdout is not None and daemon.stdout.readline().strip() == "ready"
        (tmp_path / "jgw.pid").write_text(f"{daemon.pid}\n")
        message = signal_daemon(tmp_path / "jgw.pid")
        assert f"sent SIGHUP to jgw (pid {daemon.pid})" in message
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "hup"
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()


def test_signal_daemon_never_signals_a_stranger(tmp_path: Path) -> None:
    """A pid file naming a process that is not jgw (pid reuse) or no process is reported, not signalled."""
    pid_file = tmp_path / "jgw.pid"
    assert "nothing signalled" in signal_daemon(pid_file)
    stranger = subprocess.Popen(["sleep", "30"])
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{stranger.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until the child has exec'd
    try:
        pid_file.write_text(str(stranger.pid))
        assert "not a jgw process" in signal_daemon(pid_file)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
    pid_file.write_text(str(stranger.pid))
    assert "not running" in signal_daemon(pid_file)
    pid_file.write_text("garbage")
    assert "not a pid" in signal_daemon(pid_file)


def test_every_changing_command_repairs_first_but_a_dry_run_does_not(world: World, now: dt.datetime) -> None:
    """After a crash past the switch, a dry run only reports the pending repair; the next real command
    (here jgw pki csr) completes the rotation before it touches staging."""
    from tests.pki.jgwcli import run as jgw

    cd = world.a.cd
    stage_new(world, now)
    crash_at(cd, "rotate", "live")
    args = ["--certs-dir", str(cd.root), "--node", "city-a"]
    r = jgw("certs", "rollback", *args, "--dry-run")
    assert "would repair: an interrupted rotation" in r.stdout, r.stdout + r.stderr
    assert cd.journal.exists()
    r = jgw("pki", "csr", *args, "--purpose", "signing")
    assert r.returncode == 0, r.stderr
    assert "repaired: completed an interrupted rotate: live is gen-0002" in r.stdout
    assert not cd.journal.exists() and cd.pointer("live") == "gen-0002"
    assert (cd.staging / "tls-client.pem").read_bytes() == (cd.live_dir() / "tls-client.pem").read_bytes()
