"""check-config says what ``jgw run`` will say (issue 9 item 4).

Each case was accepted by check-config on main and refused (or lost messages) only once jgw ran.
Now both refuse it in the same words, naming the key path, and check-config echoes sizes and
durations as written and shows the seed catalog's advice that ``jgw routes`` gives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from tests.opcli.conftest import write_config

URL = "amqp://guest:guest@127.0.0.1:1/%2F"


def route(**extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"personal_number": "allowed", "source": {"broker": "local", "queue": "q.src"},
                         "sink": {"broker": "local", "exchange": "x.out", "routing_key": "k"}}
    r.update(extra)
    return r


def both_refuse(cfg: Path, capsys: pytest.CaptureFixture[str], key: str, reason: str) -> None:
    assert main(["check-config", str(cfg)]) == 78
    checked = capsys.readouterr().err
    assert checked.startswith(f"jgw: {cfg}: {key}: ") and reason in checked, checked
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "run", str(cfg)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 78
    assert run.stderr.splitlines()[-1] + "\n" == checked, "run says exactly what check-config said"


def test_metrics_beyond_loopback_without_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, {"r1": route()}, {"local": {"urls": [URL]}}, metrics_listen="0.0.0.0:9469")
    both_refuse(cfg, capsys, "node.metrics_listen", "0.0.0.0 is not a loopback address")


def test_state_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "statefile").write_text("")
    cfg = write_config(tmp_path, {"r1": route()}, {"local": {"urls": [URL]}}, state_dir=str(tmp_path / "statefile"))
    both_refuse(cfg, capsys, "node.state_dir", "exists and is not a directory")


def test_unknown_encoding_on_a_forbidden_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, {"r1": route(personal_number="forbidden", payload_encoding="iso-2022-jp")},
                       {"local": {"urls": [URL]}})
    both_refuse(cfg, capsys, "routes.r1.payload_encoding", "encoding-unknown")


def test_undeclared_encoding_on_a_forbidden_route_is_warned(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, {"r1": route(personal_number="forbidden")}, {"local": {"urls": [URL]}})
    assert main(["check-config", str(cfg)]) == 0
    assert "warning: route r1: personal_number is 'forbidden' but" in capsys.readouterr().out


@pytest.mark.parametrize("sink,bind,brokers", [
    ({"broker": "local", "exchange": "", "routing_key": "q.src"}, [], None),
    ({"broker": "local", "exchange": "x.in", "routing_key": "k"}, [{"exchange": "x.in", "routing_key": "k"}], None),
    ({"broker": "local", "exchange": "x.in", "routing_key": "a.b", "exchange_type": "topic"},
     [{"exchange": "x.in", "routing_key": "a.*", "exchange_type": "topic"}], None),
    ({"broker": "local", "exchange": "x.in", "exchange_type": "fanout"},
     [{"exchange": "x.in", "exchange_type": "fanout"}], None),
    ({"broker": "alias", "exchange": "", "routing_key": "q.src"}, [],
     {"local": {"urls": [URL]}, "alias": {"urls": ["amqp://guest:guest@localhost:1/%2F"]}}),
    ({"broker": "local", "exchange": "x.out", "routing_key": "k", "queue": "q.src"}, [], None),
])
def test_a_sink_that_feeds_its_own_source_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     sink: dict[str, Any], bind: list[dict[str, Any]],
                                                     brokers: dict[str, Any] | None) -> None:
    """On main every message of such a route vanished: delivered, back in the source, suppressed."""
    r = route(sink=sink, source={"broker": "local", "queue": "q.src", "bind": bind})
    cfg = write_config(tmp_path, {"r1": r}, brokers or {"local": {"urls": [URL]}})
    both_refuse(cfg, capsys, "routes.r1.sink", "the route's own source queue 'q.src'")


def test_same_names_on_another_vhost_are_fine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = route(sink={"broker": "other", "exchange": "", "routing_key": "q.src"})
    cfg = write_config(tmp_path, {"r1": r}, {"local": {"urls": [URL]},
                                             "other": {"urls": ["amqp://guest:guest@127.0.0.1:1/juki"]}})
    assert main(["check-config", str(cfg)]) == 0


def test_sizes_and_durations_are_echoed_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, {"r1": route(max_size="1024KiB", dedup_window="36h", retry=["2s", "90s"])},
                       {"local": {"urls": [URL]}})
    assert main(["check-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "max_size=1024KiB " in out and "dedup_window=36h " in out and "retry=2s,90s " in out
    assert "ack_interval=50ms (default)" in out
    cfg2 = write_config(tmp_path / "d", {"r1": route()}, {"local": {"urls": [URL]}})
    assert main(["check-config", str(cfg2)]) == 0
    out = capsys.readouterr().out
    assert "max_size=8MiB (default)" in out and "dedup_window=7d (default)" in out


def test_the_catalogs_advice_is_shown_as_jgw_routes_shows_it(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    r = route(seed="jimu:1-⑥", personal_number="allowed", payload_encoding="cp932")
    cfg = write_config(tmp_path, {"honnin-update": r}, {"local": {"urls": [URL]}})
    assert main(["routes", str(cfg)]) == 0
    advice = [line.split("advice: ", 1)[1] for line in capsys.readouterr().out.splitlines() if "advice: " in line]
    assert advice, "this route lacks the per-person ordering its seed flow needs"
    assert main(["check-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for text in advice:
        assert f"warning: {text}" in out
