"""The audit trail: hash chain, tamper detection with location, torn tails, rotation, retention."""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import audit
from gateway import cli as cli_module
from gateway.audit import AuditLog, Period, Retention, payload_digest, per_message, verify
from gateway.audit import format as audit_format
from gateway.commands import audit as audit_cmd
from gateway.errors import DataError, NoInputError, TempFailError, UsageError
from gateway.policy.redact import IdKey
from gateway.route.dedup import DedupStore
from tests.lab import synth
from tests.lab.tmpfs import tmpfs

YEAR = 365.25 * 86400


class Clock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def fill(log: AuditLog, n: int, route: str = "honnin-update", start: int = 0) -> None:
    for i in range(start, start + n):
        body = f"payload {i}".encode()
        log.record("accept", msg=f"m-{i}", route=route, seed="jimu:1-⑥", peer="kizon-juki", size=len(body),
                   digest=payload_digest(body))
        log.record("deliver", msg=f"m-{i}", route=route, outcome="delivered")
    log.commit()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def logdir(tmp_path: Path, clock: Clock) -> Iterator[Path]:
    d = tmp_path / "audit"
    with AuditLog.open(d, "cityhall", clock=clock) as log:
        fill(log, 20)
    yield d


def segment(d: Path, index: int = -1) -> Path:
    return [p for _, p in audit.segment_files(d)][index]


def lines(p: Path) -> list[bytes]:
    return p.read_bytes().splitlines(keepends=True)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jgw")
    audit_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


# --- the format ----------------------------------------------------------------------------------

def test_intact_log_verifies_and_the_format_is_as_documented(logdir: Path) -> None:
    """Each line is BODY<TAB>sha256(BODY); BODY chains to the previous hash; seq counts from 0."""
    report = verify(logdir)
    assert report.intact and report.records == 1 + 1 + 40 + 1  # segment-open, log-open, 40, log-close
    prev = audit.GENESIS
    for seq, raw in enumerate(lines(segment(logdir))):
        body, _, digest = raw.rstrip(b"\n").rpartition(b"\t")
        assert hashlib.sha256(body).hexdigest() == digest.decode()
        rec = json.loads(body)
        assert (rec["seq"], rec["prev"]) == (seq, prev)
        assert body == json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        prev = digest.decode()
    first = json.loads(lines(segment(logdir))[0].split(b"\t")[0])
    assert first["ev"] == "segment-open" and first["anchor"] == audit.GENESIS and first["node"] == "cityhall"


def test_files_are_private(logdir: Path) -> None:
    assert stat.S_IMODE(logdir.stat().st_mode) == 0o700
    assert stat.S_IMODE(segment(logdir).stat().st_mode) == 0o600


def test_commit_is_durable_before_it_returns(tmp_path: Path, clock: Clock) -> None:
    """What commit() returned for is in the file (read back by another reader) before any ack."""
    with AuditLog.open(tmp_path / "a", "n", clock=clock) as log:
        log.record("accept", msg="m-1", route="r", size=1)
        assert b"m-1" not in segment(tmp_path / "a").read_bytes()  # buffered only
        assert log.commit() == 1
        assert b'"msg":"m-1"' in segment(tmp_path / "a").read_bytes()
        assert log.commit() == 0


def test_no_payload_and_no_personal_number_in_records(tmp_path: Path, clock: Clock) -> None:
    number = synth.valid_personal_number(random.Random(1))
    digest = "sha256:" + "0" * 40 + number * 2  # hex digests are evidence: never masked
    with AuditLog.open(tmp_path / "a", "n", clock=clock) as log:
        with pytest.raises(TypeError):
            log.record("accept", msg="m", size=b"bytes")
        for bad in ("payload", "body", "seq", "Bad-Name"):
            with pytest.raises(ValueError):
                log.record("accept", **{bad: "x"})
        with pytest.raises(ValueError):
            log.record("teleport", msg="m")
        log.record("accept", msg=f"ID-{number}", corr=number, digest=digest, route="r")
        log.commit()
    text = segment(tmp_path / "a").read_text()
    assert f"ID-{number}" not in text and f'"corr":"{number}"' not in text
    assert digest in text


def test_second_writer_is_refused(logdir: Path, clock: Clock) -> None:
    with AuditLog.open(logdir, "cityhall", clock=clock), pytest.raises(TempFailError):
        AuditLog.open(logdir, "cityhall", clock=clock)


# --- tampering, each kind, with its location ------------------------------------------------------

def rewrite(p: Path, new_lines: list[bytes]) -> None:
    os.chmod(p, 0o600)
    p.write_bytes(b"".join(new_lines))


def rehash(raw: bytes, **changes: object) -> bytes:
    rec = json.loads(raw.split(b"\t")[0])
    rec.update(changes)
    body = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return body + b"\t" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def problems(d: Path) -> list[str]:
    return [str(f) for f in verify(d).problems]


def test_edited_record_is_found_at_its_line(logdir: Path) -> None:
    p = segment(logdir)
    ls = lines(p)
    ls[11] = ls[11].replace(b'"outcome":"delivered"', b'"outcome":"quarantined"')
    rewrite(p, ls)
    found = problems(logdir)
    assert found == [f"{p.name}: record 12: content does not match its hash: the record was edited"]


def test_edited_and_rehashed_record_breaks_the_chain_after_it(logdir: Path) -> None:
    p = segment(logdir)
    ls = lines(p)
    ls[11] = rehash(ls[11], outcome="quarantined")
    rewrite(p, ls)
    assert problems(logdir) == [f"{p.name}: record 13 (seq 12): the record before this one was altered or "
                                "replaced (hash chain broken)"]


def test_removed_record_is_found(logdir: Path) -> None:
    p = segment(logdir)
    ls = lines(p)
    del ls[7]
    rewrite(p, ls)
    assert problems(logdir) == [f"{p.name}: record 8 (seq 8): seq jumps from 6 to 8: "
                                "record(s) removed or moved"]


def test_reordered_records_are_found(logdir: Path) -> None:
    p = segment(logdir)
    ls = lines(p)
    ls[5], ls[6] = ls[6], ls[5]
    rewrite(p, ls)
    found = problems(logdir)
    assert found[0].startswith(f"{p.name}: record 6 (seq 6): seq jumps from 4 to 6")
    assert any("record 7 (seq 5): seq 5 after 6: record moved or duplicated" in f for f in found)


def test_duplicated_record_is_found(logdir: Path) -> None:
    p = segment(logdir)
    ls = lines(p)
    ls.insert(9, ls[8])
    rewrite(p, ls)
    assert problems(logdir) == [f"{p.name}: record 10 (seq 8): seq 8 after 8: record moved or duplicated"]


def test_removed_tail_is_caught_by_an_exported_anchor(logdir: Path) -> None:
    """Dropping the last complete records is invisible to the chain alone; an exported head sees it."""
    seq, head = verify(logdir).last_seq, verify(logdir).head
    assert seq is not None and head is not None
    p = segment(logdir)
    rewrite(p, lines(p)[:-3])
    assert verify(logdir).intact
    assert verify(logdir, {seq: head}).problems[0].what == "anchored record not found (removed or expired)"


# --- the CLI says where, with the documented exit codes --------------------------------------------

def test_verify_cli_exit_codes_and_messages(logdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["audit", "verify", str(logdir)]) == 0
    assert "intact" in capsys.readouterr().out
    assert cli(["audit", "head", str(logdir)]) == 0
    seq, head = capsys.readouterr().out.split()
    assert cli(["audit", "verify", str(logdir), "--anchor", f"{seq}:{head}"]) == 0
    p = segment(logdir)
    ls = lines(p)
    ls[3] = ls[3].replace(b"m-0", b"m-X")
    rewrite(p, ls)
    capsys.readouterr()
    assert cli(["audit", "verify", str(logdir)]) == 1
    out = capsys.readouterr().out
    assert f"TAMPERED {p.name}: record 4: content does not match its hash" in out
    with pytest.raises(NoInputError):
        cli(["audit", "verify", str(logdir / "nope")])
    with pytest.raises(UsageError):
        cli(["audit", "verify", str(logdir), "--anchor", "12:xyz"])


@pytest.mark.skipif("gateway.commands.audit" not in cli_module.COMMAND_MODULES,
                    reason="gateway.cli does not register the audit verb yet (integration step for the lead)")
def test_jgw_binary_exit_codes(logdir: Path, tmp_path: Path) -> None:
    """Through the real entry point: 0 intact, 1 tampered, 66 nothing to verify, 64 bad usage."""
    def run(*argv: str) -> int:
        return subprocess.run([sys.executable, "-m", "gateway.cli", *argv], capture_output=True,
                              timeout=60).returncode
    assert run("audit", "verify", str(logdir)) == 0
    assert run("audit", "verify", str(tmp_path / "empty-nothing")) == 66
    assert run("audit", "verify", str(logdir), "--anchor", "bad") == 64
    p = segment(logdir)
    rewrite(p, lines(p)[:5] + lines(p)[6:])
    assert run("audit", "verify", str(logdir)) == 1


# --- crash safety ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [1, 17, 60])
def test_torn_tail_is_reported_then_set_aside_on_open(logdir: Path, clock: Clock, cut: int) -> None:
    """A crash mid-write (file cut inside the last record) is found by verify; reopening moves the
    torn bytes to a read-only side file, records that it did, and the log verifies again."""
    p = segment(logdir)
    data = p.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[:last + cut]
    rewrite(p, [torn])
    report = verify(logdir)
    assert not report.intact
    what = report.problems[0].what
    assert "incomplete record" in what and "consistent with a crash" in what
    with AuditLog.open(logdir, "cityhall", clock=clock) as log:
        fill(log, 2, start=100)
    asides = list(logdir.glob("*.torn-*"))
    assert len(asides) == 1 and asides[0].read_bytes() == torn[last:]
    assert stat.S_IMODE(asides[0].stat().st_mode) == 0o400
    report = verify(logdir)
    assert report.intact, report.problems
    assert any("set aside" in n.what for n in report.notices)
    recovered = [r for _, _, r in audit.records(logdir) if r["ev"] == "recovered"]
    assert recovered[0]["aside_sha256"] == hashlib.sha256(torn[last:]).hexdigest()


def test_nul_filled_blocks_after_a_crash_are_a_torn_tail(logdir: Path, clock: Clock) -> None:
    """Blocks allocated but never written read back as NUL bytes: treated as torn, not as tampering."""
    p = segment(logdir)
    rewrite(p, [p.read_bytes() + b"\x00" * 4096])
    with AuditLog.open(logdir, "cityhall", clock=clock):
        pass
    assert verify(logdir).intact


def test_damage_that_is_not_a_crash_refuses_to_open_until_recovered(logdir: Path, clock: Clock) -> None:
    """A complete record failing its hash is tampering: jgw will not write after it until an operator
    runs `jgw audit recover`, which keeps the damaged bytes and records who did it."""
    p = segment(logdir)
    ls = lines(p)
    ls[-2] = ls[-2].replace(b"delivered", b"forgotten")
    rewrite(p, ls)
    with pytest.raises(DataError) as exc:
        AuditLog.open(logdir, "cityhall", clock=clock)
    assert f"{p.name}: record {len(ls) - 1}" in str(exc.value)
    aside = audit.recover(logdir, "tanaka (情報政策課)", clock=clock)
    assert aside is not None and (logdir / aside).exists()
    report = verify(logdir)
    assert report.intact
    ops = [r for _, _, r in audit.records(logdir) if r["ev"] == "operator"]
    assert ops[-1]["actor"] == "tanaka (情報政策課)" and ops[-1]["action"] == "audit-recover"


# --- rotation and retention -----------------------------------------------------------------------

def rotated(tmp_path: Path, clock: Clock, retention: Retention, days: int = 5) -> Path:
    d = tmp_path / "rot"
    with AuditLog.open(d, "cityhall", clock=clock, retention=retention, segment_age=86400.0) as log:
        for day in range(days):
            fill(log, 5, route="honnin-update" if day % 2 == 0 else "fukuhon-update", start=day * 10)
            clock.now += 86400.0
    return d


def test_rotation_anchors_each_segment_to_the_last(tmp_path: Path, clock: Clock) -> None:
    d = rotated(tmp_path, clock, Retention())
    segs = [p for _, p in audit.segment_files(d)]
    assert len(segs) >= 5 and verify(d).intact
    for before, after in itertools.pairwise(segs):
        assert stat.S_IMODE(before.stat().st_mode) == 0o400
        last = before.read_bytes().splitlines()[-1]
        close = json.loads(last.split(b"\t")[0])
        header = json.loads(after.read_bytes().splitlines()[0].split(b"\t")[0])
        assert close["ev"] == "segment-close" and header["ev"] == "segment-open"
        assert header["anchor"] == header["prev"] == last.split(b"\t")[1].decode()
        assert header["predecessor"] == before.name


def test_removed_or_renamed_segment_is_found(tmp_path: Path, clock: Clock) -> None:
    d = rotated(tmp_path, clock, Retention())
    segs = [p for _, p in audit.segment_files(d)]
    os.chmod(segs[2], 0o600)
    segs[2].unlink()
    found = problems(d)
    assert found and segs[3].name in found[0] and "seq jumps" in found[0]


def test_deleting_the_oldest_segment_without_expiry_is_found(tmp_path: Path, clock: Clock) -> None:
    d = rotated(tmp_path, clock, Retention())
    oldest = segment(d, 0)
    os.chmod(oldest, 0o600)
    oldest.unlink()
    assert any("no expire record accounts for them" in f for f in problems(d))


def test_truncated_closed_segment_is_found(tmp_path: Path, clock: Clock) -> None:
    d = rotated(tmp_path, clock, Retention())
    p = segment(d, 1)
    rewrite(p, lines(p)[:-1])
    found = problems(d)
    assert any(p.name in f and "without segment-close" in f for f in found)


def test_retention_expires_whole_segments_and_the_rest_still_verifies(tmp_path: Path, clock: Clock) -> None:
    """General segments go after 30 days, segments with 特定個人情報 routes after 7 years; expiry is
    recorded first, and the remaining chain verifies from the recorded anchor."""
    retention = Retention(specific=Period(years=7), general=Period.parse("30d"),
                          specific_routes=frozenset({"honnin-update"}))
    d = rotated(tmp_path, clock, retention, days=6)
    before = [p.name for _, p in audit.segment_files(d)]
    with AuditLog.open(d, "cityhall", clock=clock, retention=retention) as log:
        assert log.expire(clock.now + 40 * 86400) == []  # the oldest holds honnin-update: kept
        removed = log.expire(clock.now + 7 * YEAR + 86400)
    assert removed == before[:len(removed)] and len(removed) >= 5
    report = verify(d)
    assert report.intact, report.problems
    assert any("expired with segment" in n.what for n in report.notices)
    expires = [r for _, _, r in audit.records(d) if r["ev"] == "expire"]
    assert [r["segment"] for r in expires] == removed


def test_general_only_segment_expires_early(tmp_path: Path, clock: Clock) -> None:
    retention = Retention(specific=Period(years=7), general=Period.parse("30d"),
                          specific_routes=frozenset({"honnin-update"}))
    d = tmp_path / "gen"
    with AuditLog.open(d, "n", clock=clock, retention=retention, segment_age=86400.0) as log:
        fill(log, 3, route="fukuhon-update")
        clock.now += 86400.0
        fill(log, 3, route="fukuhon-update")
        first = segment(d, 0).name
        assert log.expire(clock.now + 31 * 86400) == [first]
    assert verify(d).intact


def test_period_counts_calendar_years() -> None:
    leap = 1709164800.0  # 2024-02-29T00:00:00Z
    assert audit_format._utc(Period(years=7).after(leap)).startswith("2031-03-01")
    assert Period.parse("7y") == Period(years=7) and str(Period.parse("400d")) == "400d"
    with pytest.raises(ValueError):
        Period.parse("seven years")


# --- a full disk (a real one: a 256 KiB tmpfs) ------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tiny", "256k") as mnt:
        yield mnt


def test_full_disk_refuses_the_commit_and_leaves_no_half_record(tiny_fs: Path, clock: Clock) -> None:
    """ENOSPC: commit raises TempFailError (the relay must not ack), the segment is cut back to its
    last whole record, the records stay buffered, and they are written once space is back."""
    filler = tiny_fs / "filler"
    with AuditLog.open(tiny_fs / "audit", "n", clock=clock) as log:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        with pytest.raises(TempFailError):
            for i in range(10_000):
                log.record("accept", msg=f"m-{i:06d}", route="r", size=i)
                if i % 50 == 49:
                    log.commit()
        assert verify(tiny_fs / "audit").intact
        pending = len(log._pending)
        assert pending > 0
        filler.unlink()
        assert log.commit() == pending
    report = verify(tiny_fs / "audit")
    assert report.intact
    msgs = [r["msg"] for _, _, r in audit.records(tiny_fs / "audit") if r["ev"] == "accept"]
    assert msgs == sorted(set(msgs)) and len(msgs) == int(msgs[-1][2:]) + 1  # no gap, no duplicate


# --- the dedup store against the trail ----------------------------------------------------------------

def test_verify_with_dedup_names_a_delivered_id_without_its_deliver_record(tmp_path: Path, clock: Clock,
                                                                            capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    """`jgw audit verify --dedup` exits 1 and names each id the dedup store holds without a record."""
    with AuditLog.open(tmp_path / "audit", "n", clock=clock) as log:
        log.record("deliver", msg="ord-1", route="r", size=1, digest=payload_digest(b"a"), outcome="confirmed")
        log.commit()
    store = DedupStore(tmp_path / "state" / "dedup.sqlite3")
    store.record("r", "ord-1")
    store.commit()
    assert cli_module.main(["audit", "verify", str(tmp_path / "audit"), "--dedup", str(store.path)]) == 0
    store.record("r", "ord-2")
    store.close()
    capsys.readouterr()
    assert cli_module.main(["audit", "verify", str(tmp_path / "audit"), "--dedup", str(store.path)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREES" in out and "route r: id ord-2 is recorded as delivered" in out and "ord-1 is" not in out


def test_a_grouped_deliver_record_reads_as_one_record_per_message(tmp_path: Path, clock: Clock,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """One record per group commit; per_message, `audit show --id` and `verify --dedup` see each message."""
    with AuditLog.open(tmp_path / "audit", "n", clock=clock) as log:
        log.record("deliver", route="r", seed="s", peer="p", outcome="confirmed", n=2, msgs=["ord-1", "ord-2"],
                   sizes=[1, 2], digests=[payload_digest(b"a"), payload_digest(b"bb")], corrs=["c-1", None])
        log.record("deliver", msg="ord-0", route="r", size=3, digest=payload_digest(b"ccc"), outcome="confirmed")
        log.commit()
    ones = [one for _f, _n, rec in audit.records(tmp_path / "audit") for one in per_message(rec)
            if one["ev"] == "deliver"]
    assert [(o["msg"], o["size"], o.get("corr")) for o in ones] == [
        ("ord-1", 1, "c-1"), ("ord-2", 2, None), ("ord-0", 3, None)]
    assert all(o["route"] == "r" for o in ones)
    capsys.readouterr()
    assert cli_module.main(["audit", "show", str(tmp_path / "audit"), "--id", "ord-2", "--json"]) == 0
    (shown,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert shown["msgs"] == ["ord-1", "ord-2"]
    store = DedupStore(tmp_path / "state" / "dedup.sqlite3")
    for mid in ("ord-0", "ord-1", "ord-2"):
        store.record("r", mid)
    store.close()
    assert cli_module.main(["audit", "verify", str(tmp_path / "audit"), "--dedup", str(store.path)]) == 0


def test_verify_with_dedup_matches_an_id_recorded_as_its_digest(tmp_path: Path, clock: Clock,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An id holding a 個人番号-shaped digit run (a jgw file id is hex: twelve digits with a valid check
    digit happen) is recorded as its keyed digest; `verify --dedup` finds it under the node's key and
    never prints the id in clear (it failed, printing it, before)."""
    rng = random.Random(13)
    mid = f"{synth.valid_personal_number(rng)}abcdef0123.f.0011aabb"
    key = IdKey(tmp_path / "state" / "id-digest.key")
    with AuditLog.open(tmp_path / "audit", "n", clock=clock, id_key=key) as log:
        log.record("deliver", msg=mid, route="r", size=1, digest=payload_digest(b"a"), outcome="confirmed")
        log.commit()
    assert mid not in (tmp_path / "audit").joinpath(next(iter(os.listdir(tmp_path / "audit")))).read_text()
    store = DedupStore(tmp_path / "state" / "dedup.sqlite3")
    store.record("r", mid)
    store.commit()
    assert cli_module.main(["audit", "verify", str(tmp_path / "audit"), "--dedup", str(store.path)]) == 0
    store.record("r", mid.replace("abcdef", "fedcba"))
    store.close()
    capsys.readouterr()
    assert cli_module.main(["audit", "verify", str(tmp_path / "audit"), "--dedup", str(store.path)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREES" in out and mid[:12] not in out
