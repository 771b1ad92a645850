"""The 個人番号 corpus: every written form in every declared encoding, and the look-alikes.

Numbers come from tests.lab.synth (random, valid check digit, never real). Each case puts
numbers at known byte offsets in filler text and checks the scanner reports exactly those offsets.
"""

from __future__ import annotations

import random

import pytest

from gateway.policy.detector import EncodingError, find_personal_numbers, scanner
from tests.lab import synth

SEEDS = range(6)


@pytest.mark.parametrize("encoding", synth.ALL_ENCODINGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_form_is_found_at_its_offset(encoding: str, seed: int) -> None:
    """Each written form of a valid number is found, at the byte offset where it starts."""
    rng = random.Random(f"{encoding}-{seed}")
    for style in synth.formats_for(encoding):
        number = synth.format_number(synth.valid_personal_number(rng), style)
        p = synth.payload(rng, encoding, [number], size=rng.randrange(16, 600))
        assert find_personal_numbers(p.data, encoding) == list(p.offsets), style


@pytest.mark.parametrize("encoding", synth.ALL_ENCODINGS)
def test_several_numbers_in_one_payload(encoding: str) -> None:
    """All numbers in a payload are reported, in order, and nothing else."""
    rng = random.Random(encoding)
    styles = synth.formats_for(encoding)
    texts = [synth.format_number(synth.valid_personal_number(rng), rng.choice(styles)) for _ in range(6)]
    p = synth.payload(rng, encoding, texts, size=2000)
    assert find_personal_numbers(p.data, encoding) == list(p.offsets)


LOOKALIKES = {
    "wrong check digit": lambda rng: synth.invalid_check_digit(rng),
    "13-digit 法人番号": synth.corporate_number,
    "phone number": synth.phone_number,
    "date": synth.date_string,
    "valid number inside a 13-digit run (prefix)": lambda rng: "7" + synth.valid_personal_number(rng),
    "valid number inside a 13-digit run (suffix)": lambda rng: synth.valid_personal_number(rng) + "3",
    "valid number inside a 24-digit run": lambda rng: synth.valid_personal_number(rng) * 2,
    "4-4-4-4 card-like number": lambda rng: synth.format_number(synth.valid_personal_number(rng),
                                                                 "hyphenated") + "-1234",
    "leading group of a 4-4-4-4 run": lambda rng: "1234 " + synth.format_number(
        synth.valid_personal_number(rng), "spaced"),
    "E.164 phone number": lambda rng: "+" + synth.valid_personal_number(rng),
    "11-digit 住民票コード-like run": lambda rng: synth.valid_personal_number(rng)[:11],
    "groups of 3": lambda rng: "-".join(synth.valid_personal_number(rng)[i:i + 3] for i in range(0, 12, 3)),
    "two separators between groups": lambda rng: synth.valid_personal_number(rng)[:4] + "  " +
    synth.valid_personal_number(rng)[4:8] + "-0000",
}


@pytest.mark.parametrize("encoding", synth.ALL_ENCODINGS)
@pytest.mark.parametrize("kind", sorted(LOOKALIKES))
def test_lookalikes_are_not_reported(encoding: str, kind: str) -> None:
    """No false positive on look-alikes, whatever their check digit happens to be."""
    rng = random.Random(f"{encoding}-{kind}")
    make = LOOKALIKES[kind]
    for _ in range(40):
        p = synth.payload(rng, encoding, [make(rng) for _ in range(5)], size=400)
        assert find_personal_numbers(p.data, encoding) == []


KNOWN_VALID = ("123456789018", "983205673214", "123456789000")  # domain-japan §4.2 worked examples


@pytest.mark.parametrize("number", KNOWN_VALID)
def test_published_examples_are_valid(number: str) -> None:
    """The worked examples of the check-digit rule (including remainder ≤ 1 → 0) are found."""
    assert synth.is_valid(number)
    assert find_personal_numbers(f"番号 {number} です".encode(), "utf-8") == [len("番号 ".encode())]


@pytest.mark.parametrize("last", [d for d in "0123456789" if d != "8"])
def test_every_wrong_check_digit_is_ignored(last: str) -> None:
    """123456789018 is valid; the nine other last digits are not."""
    assert find_personal_numbers(f"x 12345678901{last} y".encode(), "utf-8") == []


def test_shift_jis_trail_byte_is_not_read_as_a_digit() -> None:
    """A kanji whose second byte is 0x82, followed by the ASCII letter 'O' (0x4F), is not '０'.

    The number after it is still found: the misreading would have hidden it as a 13th digit.
    """
    number = synth.valid_personal_number(random.Random(5))
    kanji = bytes((0x88, 0x82))  # a double-byte character with 0x82 as its trail byte
    data = b"abc" + kanji + b"O" + number.encode()
    assert find_personal_numbers(data, "cp932") == [len(b"abc") + 3]


def test_shift_jis_misaligned_fullwidth_run_is_not_a_number() -> None:
    """Eleven full-width digits after a kanji ending in 0x82 and an 'O' are not twelve digits."""
    number = synth.valid_personal_number(random.Random(6))
    fw = number.translate(str.maketrans("0123456789", "０１２３４５６７８９")).encode("cp932")
    data = bytes((0x88,)) + fw[:-1]  # 0x88 0x82 | 0x4F 0x82 ... : misaligned from the start
    assert find_personal_numbers(data, "cp932") == []


def test_utf16_odd_offset_is_not_a_digit() -> None:
    """In UTF-16LE, bytes '1' 0x00 at an odd offset belong to two different characters."""
    number = synth.valid_personal_number(random.Random(7))
    aligned = ("あ " + number).encode("utf-16-le")
    assert find_personal_numbers(aligned, "utf-16le") == [4]
    assert find_personal_numbers(b"\x00" + aligned[:-1], "utf-16le") == []


@pytest.mark.parametrize("bom,codec", [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")])
def test_utf16_bom_selects_the_byte_order(bom: bytes, codec: str) -> None:
    """With a BOM, 'utf-16' scans in the announced order only; offsets count the BOM."""
    number = synth.valid_personal_number(random.Random(8))
    data = bom + ("番号：" + number).encode(codec)
    assert find_personal_numbers(data, "utf-16") == [2 + 2 * 3]


def test_utf16_without_bom_scans_both_orders() -> None:
    """Without a BOM, 'utf-16' finds the number in either byte order."""
    number = synth.valid_personal_number(random.Random(9))
    for codec in ("utf-16-le", "utf-16-be"):
        assert find_personal_numbers(("番号 " + number).encode(codec), "utf-16") == [6]


def test_ebcdic_zoned_digits() -> None:
    """EBCDIC zoned digits 0xF0-0xF9 (hand-built, as a host file has them) are found."""
    number = synth.valid_personal_number(random.Random(10))
    data = b"\xc1\xc2\x40" + bytes(0xF0 + int(d) for d in number) + b"\x40\xc3"
    for enc in ("ebcdic", "cp037", "cp930", "cp939", "jef", "keis"):
        assert find_personal_numbers(data, enc) == [3], enc


def test_ibm_dbcs_digits_count_only_inside_shift_out() -> None:
    """IBM host full-width digits (0x42F0+d) count between SO and SI, not in single-byte text."""
    number = synth.valid_personal_number(random.Random(11))
    dbcs = b"".join(bytes((0x42, 0xF0 + int(d))) for d in number)
    assert find_personal_numbers(b"\xc1\x0e" + dbcs + b"\x0f", "cp930") == [2]
    assert find_personal_numbers(b"\xc1\x0e\x45\x41" + b"\x0f" + dbcs[1:] + b"\x40", "cp930") == []


@pytest.mark.parametrize("bad", [None, "", "  "])
def test_undeclared_encoding_fails_closed(bad: str | None) -> None:
    """No declared encoding raises encoding-undeclared: the caller refuses the message."""
    with pytest.raises(EncodingError) as exc:
        scanner(bad)
    assert exc.value.code == "encoding-undeclared"


@pytest.mark.parametrize("bad", ["latin-1", "iso-2022-jp", "shift-jsi", "utf-32"])
def test_unknown_encoding_fails_closed(bad: str) -> None:
    """An encoding we cannot scan raises encoding-unknown (and names the known ones)."""
    with pytest.raises(EncodingError) as exc:
        scanner(bad)
    assert exc.value.code == "encoding-unknown"
    assert "utf-8" in exc.value.message


def test_any_scans_every_view() -> None:
    """'any' finds numbers whatever the encoding of the payload."""
    rng = random.Random(12)
    for enc in ("utf-8", "cp932", "euc-jp", "utf-16-le", "utf-16-be", "cp930", "jef"):
        number = synth.format_number(synth.valid_personal_number(rng), "fullwidth")
        p = synth.payload(rng, enc, [number], size=100)
        assert p.offsets[0] in find_personal_numbers(p.data, "any"), enc


def test_limit_stops_early() -> None:
    """``limit`` returns the first offsets only (the stage needs one)."""
    rng = random.Random(13)
    p = synth.payload(rng, "utf-8", [synth.valid_personal_number(rng) for _ in range(5)], size=500)
    assert scanner("utf-8").find(p.data, limit=2) == list(p.offsets)[:2]
    assert scanner("utf-8").first(p.data) == p.offsets[0]


@pytest.mark.parametrize("encoding", [e for e in synth.ALL_ENCODINGS if e not in ("cp037", "utf-16")])
def test_digit_dense_records(encoding: str) -> None:
    """Fixed-length records full of 11-digit codes, dates and serials: only the 個人番号 field is found."""
    rng = random.Random(encoding)
    data, expected = b"", []
    for i in range(60):
        number = synth.valid_personal_number(rng) if i % 7 == 3 else None
        rec = synth.fixed_record(rng, encoding, number)
        expected += [len(data) + o for o in rec.offsets]
        data += rec.data
    assert expected and find_personal_numbers(data, encoding) == expected
