"""Properties of the 個人番号 detector, checked by hypothesis.

* a valid number, in any written form, in any encoding, inside any digit-free filler, is found
  exactly where it was put;
* a 12-digit string with a wrong check digit is never reported, whatever surrounds it;
* any bytes at all: the scanner returns sorted in-range offsets and never raises.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.policy.detector import check_digit_ok, find_personal_numbers, known_encodings
from tests.lab import synth

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def placed_number(draw: st.DrawFn) -> tuple[str, str, bool, int]:
    encoding = draw(st.sampled_from(synth.ALL_ENCODINGS))
    style = draw(st.sampled_from(synth.formats_for(encoding)))
    return encoding, style, draw(st.booleans()), draw(st.integers(0, 2**32 - 1))


@SETTINGS
@given(placed_number(), st.integers(0, 400))
def test_valid_numbers_are_found_and_invalid_never(case: tuple[str, str, bool, int], size: int) -> None:
    encoding, style, valid, seed = case
    rng = random.Random(seed)
    number = synth.valid_personal_number(rng) if valid else synth.invalid_check_digit(rng)
    p = synth.payload(rng, encoding, [synth.format_number(number, style)], size=size)
    found = find_personal_numbers(p.data, encoding)
    assert found == (list(p.offsets) if valid else [])


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=40),
       st.integers(0, 2**32 - 1), st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=40))
def test_wrong_check_digit_never_reported_in_any_utf8_context(before: str, seed: int, after: str) -> None:
    number = synth.invalid_check_digit(random.Random(seed))
    data = (before + number + after).encode("utf-8", "surrogatepass")
    assert find_personal_numbers(data, "utf-8") == []


@SETTINGS
@given(st.binary(max_size=2048), st.sampled_from(known_encodings()))
def test_any_bytes_give_sorted_offsets_in_range(data: bytes, encoding: str) -> None:
    found = find_personal_numbers(data, encoding)
    assert found == sorted(set(found))
    assert all(0 <= off < len(data) for off in found)


@SETTINGS
@given(st.lists(st.integers(0, 9), min_size=11, max_size=11))
def test_check_digit_matches_the_reference_formula(first11: list[int]) -> None:
    # 総務省令第85号 §5 as written: Pn counted from the right, Qn = n+1 (n ≤ 6), n-5 (n ≥ 7).
    total = sum(first11[11 - n] * (n + 1 if n <= 6 else n - 5) for n in range(1, 12))
    good = 0 if total % 11 <= 1 else 11 - total % 11
    assert synth.check_digit("".join(map(str, first11))) == good
    assert check_digit_ok([*first11, good])
    assert not any(check_digit_ok([*first11, d]) for d in range(10) if d != good)
