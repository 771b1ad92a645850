"""``jgw scan``: exit 0 clean, 1 found (offsets printed, never the number), 2 on error."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pytest

from gateway.commands import scan
from tests.lab import synth


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jgw")
    scan.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_clean_file_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "clean.txt"
    f.write_bytes(synth.payload(random.Random(1), "euc-jp", [synth.corporate_number(random.Random(2))]).data)
    assert run(["scan", str(f), "--encoding", "euc-jp"]) == 0
    assert capsys.readouterr().out == ""


def test_found_exits_1_and_prints_offsets_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(3)
    numbers = [synth.valid_personal_number(rng) for _ in range(2)]
    p = synth.payload(rng, "utf-16", [synth.format_number(n, "spaced") for n in numbers], size=200)
    f = tmp_path / "dirty.bin"
    f.write_bytes(p.data)
    assert run(["scan", str(f), "-e", "utf-16"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines() == [f"{f}: 個人番号 at byte offset {o}" for o in p.offsets]
    assert not any(n[:4] in out.replace(str(f), "") for n in numbers)


def test_one_dirty_file_among_clean_ones_exits_1(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"nothing here")
    b.write_bytes(synth.valid_personal_number(random.Random(4)).encode("cp037"))
    assert run(["scan", str(a), str(b), "--encoding", "cp037", "-q"]) == 1


def test_unknown_encoding_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"x")
    assert run(["scan", str(f), "--encoding", "latin-9"]) == 2
    assert "unknown payload encoding" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["scan", str(tmp_path / "nope"), "--encoding", "utf-8"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_missing_encoding_is_a_usage_error_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run(["scan", str(tmp_path)])
    assert exc.value.code == 2
