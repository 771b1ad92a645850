"""File names are bytes exactly as listed: what is refused, what is kept, and how one is shown."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.files import NameRefused
from gateway.files.names import MAX_NAME_BYTES, check_entry, check_name, fingerprint, render

SJIS = "異動対象者情報_ソ表.csv".encode("shift_jis")  # synthetic; ソ and 表 end in 0x5C

REFUSED = [
    ("empty", b"", "empty"),
    ("dot", b".", "'.' or '..'"),
    ("dotdot", b"..", "'.' or '..'"),
    ("traversal", b"../etc/passwd", "'/'"),
    ("absolute", b"/etc/passwd", "'/'"),
    ("inner slash", b"a/b.csv", "'/'"),
    ("trailing slash", b"a.csv/", "'/'"),
    ("nul", b"a\x00.csv", "NUL"),
    ("nul truncation", b"ok.csv\x00../../x", "'/'"),
    ("too long", b"a" * (MAX_NAME_BYTES + 1), "more than 255"),
]

KEPT = [
    ("ascii", b"IDOU_20240401_001.csv"),
    ("shift_jis with 0x5c bytes", SJIS),
    ("utf-8", "異動対象者情報.csv".encode()),
    ("invalid utf-8", b"\xff\xfe\x80.dat"),
    ("backslash", b"a\\b"),
    ("dots inside", b"..a..b.."),
    ("leading dot", b".hidden"),
    ("spaces and newline", b" a b \n"),
    ("255 bytes", b"x" * MAX_NAME_BYTES),
]


@pytest.mark.parametrize(("case", "name", "detail"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused(case: str, name: bytes, detail: str) -> None:
    """Each unsafe name is refused as name-unsafe; the detail says why and never holds the name."""
    with pytest.raises(NameRefused) as info:
        check_name(name)
    assert info.value.reason == "name-unsafe"
    assert info.value.disposition == "quarantine" and not info.value.transient
    assert detail in info.value.detail
    if len(name) > 3:
        assert name.decode("latin-1") not in str(info.value)


@pytest.mark.parametrize(("case", "name"), KEPT, ids=[c[0] for c in KEPT])
def test_kept_exactly(case: str, name: bytes) -> None:
    """A safe name comes back as the very same bytes: never decoded, normalised or transcoded."""
    assert check_name(name) is name


def test_str_is_not_a_name() -> None:
    """A str is a programming error, not a name to guess the encoding of."""
    with pytest.raises(TypeError):
        check_name("a.csv")  # type: ignore[arg-type]


def test_render_is_printable_and_bounded() -> None:
    """render shows ASCII as is and every other byte as \\xNN, doubling backslashes, truncated."""
    assert render(b"a.csv") == "a.csv"
    assert render(SJIS).startswith("\\x88\\xd9")
    assert "\\x83\\\\" in render(SJIS)  # ソ = 83 5C
    assert render(b"a\nb") == "a\\x0ab"
    long = render(b"\xff" * 300, limit=40)
    assert long.isascii() and long.isprintable() and long.endswith("bytes)") and len(long) < 60


@given(st.binary(max_size=400))
def test_render_never_fails(name: bytes) -> None:
    """Any bytes render to printable ASCII; distinct short names render distinctly."""
    text = render(name, limit=10_000)
    assert text.isascii() and text.isprintable()


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_render_is_injective(a: bytes, b: bytes) -> None:
    assert (render(a, limit=10_000) == render(b, limit=10_000)) == (a == b)


@given(st.binary(max_size=300))
def test_check_name_invariant(name: bytes) -> None:
    """Any bytes either come back unchanged or are refused as name-unsafe, nothing else."""
    try:
        assert check_name(name) == name
        assert b"/" not in name and b"\0" not in name and name not in (b"", b".", b"..")
    except NameRefused as exc:
        assert exc.reason == "name-unsafe"


def test_fingerprint_is_stable_and_short() -> None:
    assert fingerprint(SJIS) == fingerprint(bytes(SJIS))
    assert fingerprint(SJIS) != fingerprint(SJIS + b"x")
    assert fingerprint(SJIS).startswith("n:") and len(fingerprint(SJIS)) == 14


def test_symlinks_are_refused(tmp_path: Path) -> None:
    """A link out of the directory, a link inside it and a dangling link are all refused (name-symlink),
    each with a detail saying which; a regular file with a Shift_JIS name is kept."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "secret").write_bytes(b"outside")
    (spool / "inside.csv").write_bytes(b"inside")
    base = os.fsencode(spool)
    os.symlink(b"../secret", os.path.join(base, b"out"))
    os.symlink(b"/etc/passwd", os.path.join(base, b"abs"))
    os.symlink(b"inside.csv", os.path.join(base, b"in"))
    os.symlink(b"nowhere", os.path.join(base, b"dangling"))
    with open(os.path.join(base, SJIS), "wb") as f:
        f.write(b"data")
    expected = {b"out": "out of the directory", b"abs": "out of the directory", b"in": "inside the directory",
                b"dangling": "dangling"}
    for name, detail in expected.items():
        with pytest.raises(NameRefused) as info:
            check_entry(spool, name)
        assert info.value.reason == "name-symlink" and detail in info.value.detail
    assert check_entry(spool, SJIS).st_size == 4
