"""The dedup store and the audit trail never disagree about what was delivered (issue 15 item 2).

A real full disk (a tmpfs for the audit directory), then ``kill -9`` and a restart before space
returns: every message that reached the sink must have its ``deliver`` record in the trail, and no
message may have been suppressed as a duplicate of a delivery the trail does not hold.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.audit import per_message, records
from tests.lab.harness import Amqp, JgwProcess, Names, NodeFactory, running, wait_for
from tests.lab.tmpfs import tmpfs

pytestmark = pytest.mark.slow


@pytest.fixture
def audit_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "auditfs", "4m") as mnt:
        yield mnt


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"x" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_kill_while_the_audit_disk_is_full_leaves_no_delivery_without_its_record(
        audit_fs: Path, names: Names, node_config: NodeFactory, amqp: Amqp) -> None:
    src, dst = f"{names.prefix}.src", f"{names.prefix}.dst"
    route = {"personal_number": "allowed", "prefetch": 200, "source": {"broker": "local", "queue": src},
             "sink": {"broker": "local", "exchange": "", "routing_key": dst}}
    cfg = node_config({names.route("r"): route})
    trail = audit_fs / "trail"
    cfg.write_text(cfg.read_text() + f'\n[audit]\ndir = "{trail}"\nsegment_size = "64KiB"\n')
    names.queues.append(dst)
    amqp.declare_queue(dst)
    amqp.declare_source(cfg, names.route("r"))
    # ids with no 12-digit run: none is masked in the trail, so each can be looked up
    sent = amqp.publish(src, [f"m-{i}".encode() * 10 for i in range(3000)], ids=[f"ev-{i:05d}" for i in range(3000)])

    proc = JgwProcess(cfg).start()
    try:
        wait_for(lambda: (amqp.depth(dst) or 0) >= 300, what="some delivered")
        filler = _fill(audit_fs)  # the audit disk is full: commits fail, nothing more is acknowledged
        wait_for(lambda: "cannot make evidence durable" in proc.log(), timeout=30,
                 what="the daemon to notice the full disk")
    finally:
        proc.kill()
    # restarted before space returns: it refuses to start or pauses; either way it takes the
    # redeliveries without the trail accepting anything, and is killed again
    again = JgwProcess(cfg).start(wait=False)
    try:
        wait_for(lambda: (again.proc is not None and again.proc.poll() is not None)
                 or "cannot make evidence durable" in again.log() or "audit log" in again.log(), timeout=30,
                 what="the restarted daemon to meet the full disk")
    finally:
        again.kill()
    filler.unlink()
    with running(cfg):
        got = amqp.drain(dst, expect=len(sent), timeout=120, idle=2.0)

    arrived = {m.message_id for m in got}
    assert arrived == set(sent)
    delivered: set[str] = set()
    suppressed: set[str] = set()
    for _file, _line, group in records(trail):
        for rec in per_message(group):
            if rec["ev"] == "deliver":
                delivered.add(rec["msg"])
            elif rec["ev"] == "duplicate":
                suppressed.add(rec["msg"])
    missing = arrived - delivered
    assert missing == set(), "messages at the sink without their deliver record"
    assert suppressed - delivered == set(), "suppressed as duplicates of deliveries the trail does not hold"
    check = subprocess.run([sys.executable, "-m", "gateway.cli", "audit", "verify", str(trail), "--dedup",
                            str(cfg.parent / "state" / "dedup.sqlite3")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "every delivered id has its deliver record" in check.stdout
