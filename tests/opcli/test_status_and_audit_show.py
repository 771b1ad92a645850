"""``jgw status`` shows version, uptime and the last reload (issue 9 item 10); ``jgw audit show`` refuses
an unknown event and shows times in the operator's zone (items 6 and 7)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway import __version__
from gateway.cli import main
from tests.lab.harness import JgwProcess, unique
from tests.opcli.conftest import Broker, write_config


def test_status_shows_version_uptime_and_last_reload(broker: Broker, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    q = unique("st")
    cfg = write_config(tmp_path, {"r1": {"personal_number": "allowed", "source": {"broker": "local", "queue": q},
                                         "sink": {"broker": "local", "exchange": "", "routing_key": q + ".out"}},
                                  "r2": {"personal_number": "allowed", "ordering": {"header": "x-person"},
                                         "source": {"broker": "local", "queue": q + ".o"},
                                         "sink": {"broker": "local", "exchange": "", "routing_key": q + ".out"}}},
                       {"local": {"urls": [broker.guest_url]}})
    with JgwProcess(cfg):
        assert main(["status", str(cfg)]) == 0
        out = capsys.readouterr().out
        assert "daemon running (pid " in out and f"jgw {__version__}, up 00:00:" in out
        # which part this instance plays: the ordered route has no standby by default
        assert "instance: shared (shared consumers)" in out
        assert "instance: active (the route's only instance)" in out
        assert "last reload: none since start" in out
        assert main(["reload", str(cfg)]) == 0
        capsys.readouterr()
        assert main(["status", str(cfg), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["version"] == __version__ and info["uptime_seconds"] > 0
        assert info["last_reload"]["ok"] is True
        assert info["last_reload"]["at"][-6] in "+-", "local time with its offset"
        assert main(["status", str(cfg)]) == 0
        assert ": ok, generation None" in capsys.readouterr().out


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    from gateway.audit import AuditLog

    directory = tmp_path / "audit"
    with AuditLog.open(directory, "n1") as log:
        log.record("operator", actor="tanaka(uid 1001) as root(uid 0)", action="delete", target="jgw.quarantine")
        log.commit()
    return directory


def test_audit_show_unknown_event_names_the_known_ones(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "show", str(trail), "--event", "replayed"]) == 64
    err = capsys.readouterr().err
    assert "--event 'replayed': no such event (events: " in err and "replay" in err and "operator" in err


def test_audit_show_says_when_nothing_matched(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "show", str(trail), "--event", "replay"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("jgw audit show: no records of event replay (")


def test_audit_show_times_in_local_zone_or_utc(trail: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert main(["audit", "show", str(trail), "--event", "operator"]) == 0
        line = capsys.readouterr().out.strip()
        assert "+09:00 operator" in line and "actor=tanaka(uid 1001) as root(uid 0)" in line
        assert main(["audit", "show", str(trail), "--event", "operator", "--utc"]) == 0
        assert "Z operator" in capsys.readouterr().out
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
