"""The command line behaves as staff's other tools do (issue 9 items 3 and 10).

Usage errors exit 64, not argparse's 2 (a unit drop-in with a typo must not restart forever);
options stand anywhere; ``--debug`` is accepted after the verb; a closed output pipe ends quietly;
``jgw --help`` lists each command once without reST markup; the config file defaults to
``$JGW_CONFIG`` or /etc/jgw/jgw.toml.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import cli
from gateway.cli import main
from tests.opcli.conftest import write_config

JGW = [sys.executable, "-m", "gateway.cli"]


def config(tmp_path: Path) -> Path:
    return write_config(tmp_path, {"r1": {"personal_number": "allowed",
                                          "source": {"broker": "local", "queue": "q.src"},
                                          "sink": {"broker": "local", "exchange": "x.out"}}},
                        {"local": {"urls": ["amqp://guest:guest@127.0.0.1:1/%2F"]}})


@pytest.mark.parametrize("argv", [["nosuch"], ["dlq", "bogus"], ["status", "--nope"], ["dlq", "list", "a", "b"],
                                  ["scan"], ["dlq"]])
def test_usage_errors_exit_64(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 64
    assert "usage: jgw" in capsys.readouterr().err


def test_no_command_is_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 64


def test_options_may_follow_positionals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``jgw dlq replay CONFIG --dry-run ID`` parses (it said 'unrecognized arguments' before)."""
    parser = cli.build_parser()
    args = parser.parse_args(["dlq", "replay", "c.toml", "--dry-run", "id-1", "id-2", "--route", "r1"])
    assert (args.config, args.ids, args.dry_run, args.route) == ("c.toml", ["id-1", "id-2"], True, "r1")
    args = parser.parse_args(["quarantine", "delete", "--reason", "drill", "c.toml", "id-1"])
    assert (args.config, args.ids, args.reason) == ("c.toml", ["id-1"], "drill")


def test_debug_after_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    assert main(["status", str(cfg), "--debug", "--json"]) == 1  # no daemon, broker unreachable: a report
    assert "unrecognized" not in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``jgw routes --catalog | head -0``: no traceback, no 'unexpected error', exit 141 as for SIGPIPE."""
    r, w = os.pipe()
    os.close(r)
    proc = subprocess.run([*JGW, "routes", "--catalog"], stdout=w, stderr=subprocess.PIPE, timeout=60)
    os.close(w)
    assert proc.stderr == b""
    assert proc.returncode == 141


def test_help_lists_each_command_once_without_markup() -> None:
    out = subprocess.run([*JGW, "--help"], capture_output=True, text=True, timeout=60).stdout
    names = [a.split()[0] for a in re.findall(r"^  ([a-z][a-z-]+) ", out, re.M)]
    parser = cli.build_parser()
    registered = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(names) == sorted(registered), "each command listed once, none missing"
    assert "``" not in out and "{run," not in out


@pytest.mark.parametrize("verb", ["dlq", "quarantine", "routes", "audit", "scan", "status"])
def test_verb_help_has_no_rest_markup(verb: str) -> None:
    out = subprocess.run([*JGW, verb, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "``" not in out and ":func:" not in out


@pytest.mark.parametrize("verb", ["dlq", "quarantine"])
def test_set_aside_actions_are_described(verb: str) -> None:
    top = subprocess.run([*JGW, verb, "--help"], capture_output=True, text=True, timeout=60).stdout
    assert "exit status:" in top
    actions = ["list", "show", "export", "delete"] + (["replay"] if verb == "dlq" else [])
    for action in actions:
        out = subprocess.run([*JGW, verb, action, "--help"], capture_output=True, text=True, timeout=60).stdout
        assert "exit status" in out.replace("\n", " ").lower() or "Exit 0" in out, action
        assert re.search(r"\n\S.*\n\n", out), f"{action} has a description"
    lst = subprocess.run([*JGW, verb, "list", "--help"], capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"--json\s+machine-readable: a JSON array", lst)


def test_config_defaults_to_jgw_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    monkeypatch.setenv("JGW_CONFIG", str(cfg))
    assert main(["check-config"]) == 0
    assert f"config {cfg}: OK" in capsys.readouterr().out
    monkeypatch.setenv("JGW_CONFIG", str(tmp_path / "missing.toml"))
    assert main(["status"]) == 66
    assert "missing.toml: config file not found" in capsys.readouterr().err


def test_default_config_is_etc_jgw(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("JGW_CONFIG", raising=False)
    if Path("/etc/jgw/jgw.toml").exists():
        pytest.skip("this machine has a real /etc/jgw/jgw.toml")
    assert main(["status"]) == 66
    assert capsys.readouterr().err == "jgw: /etc/jgw/jgw.toml: config file not found\n"


def test_ids_without_config_use_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``jgw dlq replay ID`` (no CONFIG): the first positional is an id, the config the default."""
    from gateway.commands import config_path

    monkeypatch.setenv("JGW_CONFIG", "/x/jgw.toml")
    args = cli.build_parser().parse_args(["dlq", "replay", "--dry-run", "0a1b2c", "3d4e"])
    assert config_path(args, ids="ids") == "/x/jgw.toml" and args.ids == ["0a1b2c", "3d4e"]
