"""Rotation, rollback and repair of a node's generations: validate, archive, swap one pointer.

Write-ahead rule: before any pointer moves, ``rotation.pending`` records the pointers before and
after. Renaming the ``live`` symlink is the commit point. Whoever finds the journal next (the
next ``jgw certs`` command, under the lock) finishes the work when ``live`` already shows the new
value, and otherwise restores the old pointers and removes the half-made generation; staging is
kept until a rotation has committed. A Python exception during a rotation takes the same repair
path at once, so a crash and an error leave the same state.

    rotate:   journal -> archive/.gen-N.tmp -> archive/gen-N -> previous := live -> live := gen-N (commit)
              -> staging removed -> journal removed
    rollback: journal -> previous := live -> live := old previous (commit) -> journal removed

Rollback swaps ``live`` and ``previous``: the generation rolled away from stays ``previous``, so its
decryption key keeps working for messages peers already encrypted to it.

Security: changes only the certs directory, under its lock; signals only a process whose pid file
and command line say it is jgw.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import NoInputError, PermissionError_
from gateway.pki.errors import CertificateError
from gateway.pki.files import fsync_dir, write_atomic
from gateway.pki.generation import GENERATION_FILES
from gateway.pki.layout import CertsDir

Validate = Callable[[Path], object]
Hook = Callable[[str], None]


@dataclass
class Outcome:
    """What a rotation, rollback or repair did (or would do, when ``simulated``)."""

    action: str
    simulated: bool = False
    lines: list[str] = field(default_factory=list)
    live: str | None = None
    previous: str | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def record(cd: CertsDir, line: str) -> None:
    """Append one line to rotations.log (who changed what, when)."""
    with open(cd.history, "a", encoding="utf-8") as log:
        log.write(f"{_now()} pid={os.getpid()} {line}\n")
        log.flush()
        os.fsync(log.fileno())


def _no_hook(step: str) -> None:
    return None


def _read_journal(cd: CertsDir) -> dict[str, Any] | None:
    try:
        raw = cd.journal.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw)
        for part in ("before", "after"):
            if not isinstance(data[part], dict):
                raise TypeError(part)
        if data["action"] not in ("rotate", "rollback"):
            raise ValueError(data["action"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CertificateError(str(cd.journal), "journal", "layout",
                               "damaged rotation journal; compare live/previous with archive/ and remove "
                               "this file by hand") from exc
    return dict(data)


def needs_repair(cd: CertsDir) -> list[str]:
    """Read-only: what an interrupted command left behind (for ``jgw certs status``)."""
    found = [f"leftover temporary file {p.name}" for p in cd.leftovers()]
    if cd.journal.exists():
        found.append("an interrupted rotation or rollback (rotation.pending)")
    return found


def repair(cd: CertsDir) -> list[str]:
    """Finish or undo whatever an interrupted command left. Call only under ``cd.locked()``."""
    lines: list[str] = []
    journal = _read_journal(cd)
    if journal is not None:
        before, after = journal["before"], journal["after"]
        new_gen = journal.get("generation")
        live = _pointer_or_none(cd, "live")
        if live == after["live"] and live is not None:
            if _pointer_or_none(cd, "previous") != after["previous"]:
                cd.set_pointer("previous", after["previous"])
            if journal["action"] == "rotate":
                shutil.rmtree(cd.staging, ignore_errors=True)
            lines.append(f"completed an interrupted {journal['action']}: live is {live} "
                         f"(it had been switched before the interruption)")
        else:
            if live != before["live"]:
                cd.set_pointer("live", before["live"])
            if _pointer_or_none(cd, "previous") != before["previous"]:
                cd.set_pointer("previous", before["previous"])
            if new_gen and new_gen not in (before["live"], before["previous"]):
                shutil.rmtree(cd.generation_dir(new_gen), ignore_errors=True)
            lines.append(f"undid an interrupted {journal['action']}: live stays {before['live'] or '(none)'}"
                         + ("; staging is unchanged, run jgw certs rotate again"
                            if journal["action"] == "rotate" else ""))
        cd.journal.unlink()
        fsync_dir(cd.root)
    for path in cd.leftovers():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        lines.append(f"removed leftover {path.relative_to(cd.root)}")
    for line in lines:
        record(cd, f"repair: {line}")
    return lines


@contextlib.contextmanager
def changing(cd: CertsDir, *, dry_run: bool = False) -> Iterator[list[str]]:
    """Hold the lock and repair first: how every command that changes the directory starts.
    Yields what the repair did (to show the operator); a dry run only says what it would repair."""
    with cd.locked():
        yield [f"would repair: {what}" for what in needs_repair(cd)] if dry_run else repair(cd)


def _pointer_or_none(cd: CertsDir, name: str) -> str | None:
    try:
        return cd.pointer(name)
    except CertificateError:
        return None


def _write_journal(cd: CertsDir, action: str, before: dict[str, str | None], after: dict[str, str | None],
                   generation: str | None) -> None:
    body = {"action": action, "generation": generation, "before": before, "after": after, "started": _now(),
            "pid": os.getpid()}
    write_atomic(cd.journal, json.dumps(body, indent=1).encode(), 0o600)


def _archive(cd: CertsDir, gen: str) -> None:
    """Copy the staged files into archive/gen, byte for byte, keys 0600, in one directory rename."""
    cd.archive.mkdir(exist_ok=True)
    tmp = cd.archive / f".{gen}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    for name in GENERATION_FILES:
        src = cd.staging / name
        if not src.is_file():
            continue
        mode = 0o600 if name.endswith(".key") else 0o644
        fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, src.read_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(tmp)
    os.rename(tmp, cd.generation_dir(gen))
    fsync_dir(cd.archive)


def live_generation(cd: CertsDir) -> str | None:
    """The generation ``live`` points at, or None (a first installation, or a damaged pointer)."""
    return _pointer_or_none(cd, "live")


def ensure_staging(cd: CertsDir) -> tuple[Path, bool]:
    """The staging directory, created as a copy of the live generation when absent (so purposes
    that are not being renewed carry over). Returns (path, created). Call under the lock."""
    if cd.staging.is_dir():
        return cd.staging, False
    tmp = cd.root / f".staging.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    live = _pointer_or_none(cd, "live")
    if live is not None:
        for name in GENERATION_FILES:
            src = cd.generation_dir(live) / name
            if src.is_file():
                write_atomic(tmp / name, src.read_bytes(), 0o600 if name.endswith(".key") else 0o644)
    os.rename(tmp, cd.staging)
    fsync_dir(cd.root)
    return cd.staging, True


def rotate(cd: CertsDir, validate: Validate, *, dry_run: bool = False, hook: Hook = _no_hook) -> Outcome:
    """Make the staged generation live, keeping the current one as ``previous``."""
    with changing(cd, dry_run=dry_run) as repaired:
        out = Outcome("rotate", simulated=dry_run, lines=repaired)
        if not cd.staging.is_dir():
            raise NoInputError(f"{cd.staging}: nothing staged; create keys and CSRs with jgw pki csr and "
                               f"install the issued certificates with jgw certs install first")
        validate(cd.staging)
        live_before, prev_before = _pointer_or_none(cd, "live"), _pointer_or_none(cd, "previous")
        gen = cd.next_generation()
        out.live, out.previous = gen, live_before or prev_before
        if dry_run:
            out.lines += [f"staging passed every check; would archive it as {gen}",
                          f"would switch live from {live_before or '(none)'} to {gen}"]
            if live_before:
                out.lines.append(f"would keep {live_before} as previous (rollback, decryption overlap)")
            return out
        before = {"live": live_before, "previous": prev_before}
        after = {"live": gen, "previous": live_before or prev_before}
        try:
            _write_journal(cd, "rotate", before, after, gen)
            hook("journal")
            _archive(cd, gen)
            hook("archived")
            if live_before is not None:
                cd.set_pointer("previous", live_before)
            hook("previous")
            cd.set_pointer("live", gen)  # the commit point
            hook("live")
            shutil.rmtree(cd.staging)
            fsync_dir(cd.root)
            hook("staging-removed")
            cd.journal.unlink()
            fsync_dir(cd.root)
        except BaseException:
            with contextlib.suppress(Exception):
                repair(cd)
            raise
        record(cd, f"rotate: live {live_before or '(none)'} -> {gen}")
        out.lines.append(f"archived staging as {gen}")
        out.lines.append(f"live: {live_before or '(none)'} -> {gen}")
        if live_before:
            out.lines.append(f"previous: {live_before} (jgw certs rollback returns to it)")
        return out


def rollback(cd: CertsDir, validate: Validate, *, dry_run: bool = False, hook: Hook = _no_hook) -> Outcome:
    """Swap ``live`` and ``previous`` after checking the previous generation is still usable."""
    with changing(cd, dry_run=dry_run) as repaired:
        out = Outcome("rollback", simulated=dry_run, lines=repaired)
        live, prev = _pointer_or_none(cd, "live"), _pointer_or_none(cd, "previous")
        if prev is None or prev == live:
            raise NoInputError(f"{cd.pointer_path('previous')}: no previous generation to roll back to")
        try:
            validate(cd.generation_dir(prev))
        except CertificateError as err:
            raise CertificateError(err.file, err.key, err.code,
                                   f"cannot roll back to {prev}: {err.reason}") from err
        out.live, out.previous = prev, live
        if dry_run:
            out.lines.append(f"{prev} passed every check; would switch live from {live} to {prev} "
                             f"and keep {live} as previous")
            return out
        try:
            _write_journal(cd, "rollback", {"live": live, "previous": prev}, {"live": prev, "previous": live},
                           None)
            hook("journal")
            cd.set_pointer("previous", live)
            hook("previous")
            cd.set_pointer("live", prev)  # the commit point
            hook("live")
            cd.journal.unlink()
            fsync_dir(cd.root)
        except BaseException:
            with contextlib.suppress(Exception):
                repair(cd)
            raise
        record(cd, f"rollback: live {live} -> {prev}")
        out.lines.append(f"live: {live} -> {prev}")
        out.lines.append(f"previous: {live} (jgw certs rollback again returns to it)")
        return out


def find_daemon(pid_file: Path) -> tuple[int | None, str]:
    """The pid of the running jgw named by ``pid_file``, or None and why not (one line)."""
    try:
        text = pid_file.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None, (f"no daemon pid file at {pid_file}: nothing signalled; a jgw started later loads the "
                      f"new live generation")
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read {pid_file} ({exc}): nothing signalled; reload jgw by hand"
    if not text.isdigit() or int(text) <= 1:
        return None, f"{pid_file} holds {text[:20]!r}, not a pid: nothing signalled; reload jgw by hand"
    pid = int(text)
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None, f"{pid_file} names pid {pid}, which is not running (stale pid file): nothing signalled"
    except OSError as exc:
        return None, f"cannot inspect pid {pid} ({exc.strerror}): nothing signalled; reload jgw by hand"
    if not any(b"jgw" in os.path.basename(arg) or arg.startswith(b"gateway") for arg in argv):
        return None, (f"{pid_file} names pid {pid}, which is not a jgw process (stale pid file?): "
                      f"nothing signalled")
    return pid, ""


def check_daemon_can_read(pid_file: Path, key_owners: set[int]) -> None:
    """Refuse to switch to keys the running daemon could not read (0600 and another owner): it would
    refuse the reload. Says which user to run the command as."""
    pid, _ = find_daemon(pid_file)
    if pid is None:
        return
    try:
        uid = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return
    strangers = key_owners - {uid}
    if uid != 0 and strangers:
        owners = ", ".join(map(str, sorted(strangers)))
        raise PermissionError_(f"the running jgw (pid {pid}) runs as uid {uid}, but the keys it would switch "
                               f"to belong to uid {owners}: it could not read them. Run this command as that "
                               f"user, or make it own the certs directory (chown -R; commands run as root "
                               f"then switch to it)")


def signal_daemon(pid_file: Path) -> str:
    """Send SIGHUP to the jgw daemon named by ``pid_file``; say what was done, in one line."""
    pid, why = find_daemon(pid_file)
    if pid is None:
        return why
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"{pid_file} names pid {pid}, which is not running (stale pid file): nothing signalled"
    except PermissionError as exc:
        raise PermissionError_(f"{pid_file}: not allowed to signal pid {pid}; run as the jgw user or root, "
                               f"or: systemctl reload jgw") from exc
    return (f"sent SIGHUP to jgw (pid {pid}): it validates the new material off to the side and switches "
            f"over, or keeps the old one and logs why (see jgw_reloads_total)")
