"""``jgw scan`` warns when the bytes are not valid in the declared encoding (issue 9 item 10).

A Shift_JIS file scanned as UTF-8 said "nothing found" and nothing else.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.cli import main
from tests.lab import synth


def test_shift_jis_scanned_as_utf8_is_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    number = synth.valid_personal_number(random.Random(9))
    wide = number.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    f = tmp_path / "ido.csv"
    f.write_bytes(f"氏名,個人番号\n山田,{wide}\n".encode("cp932"))
    assert main(["scan", "--encoding", "utf-8", str(f)]) == 0
    err = capsys.readouterr().err
    assert f"jgw scan: {f}: warning: not valid utf-8 (first bad byte at offset 0); it is valid cp932" in err
    assert number not in err and wide not in err
    assert main(["scan", "--encoding", "cp932", str(f)]) == 1
    out, err = capsys.readouterr()
    assert err == "" and "個人番号 at byte offset" in out


def test_valid_file_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "ok.txt"
    f.write_bytes("住民異動 ok".encode())
    assert main(["scan", "-e", "utf-8", str(f)]) == 0
    assert capsys.readouterr().err == ""
