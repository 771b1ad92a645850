"""No 個人番号-shaped value reaches a log line, whatever the input."""

from __future__ import annotations

import io
import json
import logging
import random
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.detector import find_personal_numbers
from gateway.policy.redact import (
    RedactingFilter,
    contains_personal_number,
    install_redaction,
    redact_text,
    redact_value,
)
from tests.lab import synth


def _inside_a_word(text: str, byte_offset: int) -> bool:
    """Is the number the detector found at ``byte_offset`` flanked by ASCII letters on both sides?"""
    start = len(text.encode("utf-8", "surrogatepass")[:byte_offset].decode("utf-8", "surrogatepass"))
    end, digits = start, 0
    while digits < 12:
        digits += text[end].isdecimal()
        end += 1
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    return before.isascii() and before.isalpha() and after.isascii() and after.isalpha()


def leaks(text: str) -> bool:
    """A leak by either definition: the redactor's own (the text rule of docs/policy.md §6), or the
    payload detector's (UTF-8 bytes), except where the rule says on purpose that a 個人番号 cannot be:
    twelve digits with an ASCII letter right before and right after them (inside a word, a hex id)."""
    hits = find_personal_numbers(text.encode("utf-8", "surrogatepass"), "utf-8")
    return contains_personal_number(text) or any(not _inside_a_word(text, h) for h in hits)


@st.composite
def text_with_numbers(draw: st.DrawFn) -> str:
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        parts.append(draw(st.text(max_size=20)))
        style = draw(st.sampled_from(synth.FORMATS))
        parts.append(synth.format_number(synth.valid_personal_number(rng), style))
    parts.append(draw(st.text(max_size=20)))
    return "".join(parts)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), text_with_numbers(),
                 st.text(alphabet=st.sampled_from("0123456789０１２３４５６７８９ -－\u3000x"), max_size=80)))
def test_redacted_text_never_holds_a_personal_number(text: str) -> None:
    """Property: after redact_text, neither definition finds a 個人番号, for any text at all."""
    out = redact_text(text)
    assert not leaks(out)
    assert len(out) == len(text)  # digits are masked one for one; nothing else moves


@settings(max_examples=200, deadline=None)
@given(text_with_numbers())
def test_redaction_is_idempotent_and_keeps_clean_text(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once
    if not leaks(text):
        assert once == text


def test_clean_text_is_returned_as_is() -> None:
    """Ids, counts, dates, phone numbers and 法人番号 with no valid 12-digit window are untouched."""
    line = "msg=0191f2a4-77c1 route=kojin-bango size=1024 at 2026-11-25 tel 03-1234-5678"
    assert redact_text(line) is line


@pytest.mark.parametrize("text", [
    "ord-757491-186252", "3f2a757491186252bc9e", "KB-7574911862521", "audit-0000757491186252.log",
    "tel +757491186252", "7574-9118-6252-1234", "12 7574 9118 6252", "jgw-bcdfghjk-mnpqrstv-bcdfghjk-mnpqrstv",
])
def test_digits_that_cannot_be_a_personal_number_are_kept(text: str) -> None:
    """The text rule: 6-6 groups, twelve digits inside a hex word, a longer number (13 digits, a
    segment name's 16, a 4-4-4-4 run, a group before 4-4-4 with the same separator), a phone number."""
    assert redact_text(text) is text and not contains_personal_number(text)


@pytest.mark.parametrize(("text", "masked"), [
    ("757491186252", "************"), ("shori-7574-9118-6252", "shori-****-****-****"),
    ("A757491186252", "A************"), ("番号757491186252です", "番号************です"),
    ("id=75749118-6252;", "id=********-****;"), ("757491186252-7574-9118-6252", "************-****-****-****"),
])
def test_where_a_personal_number_can_be_it_is_masked(text: str, masked: str) -> None:
    """Alone, separator-delimited, after one letter or Japanese text, in every written form; a run
    that stands alone once its neighbour is masked is masked too."""
    assert redact_text(text) == masked


def test_every_form_is_masked() -> None:
    rng = random.Random(1)
    for style in synth.FORMATS:
        number = synth.format_number(synth.valid_personal_number(rng), style)
        out = redact_text(f"番号={number}。")
        assert out.startswith("番号=") and out.endswith("。") and not leaks(out)
        assert "*" * 4 in out


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s %(detail)s"))
    logger = logging.getLogger(f"jgw.test.{random.random()}")
    logger.propagate = False
    logger.addHandler(handler)
    install_redaction(logger)
    install_redaction(logger)  # twice: still one filter
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
    yield logger, stream
    logger.removeHandler(handler)


def test_filter_masks_message_args_extra_and_exception(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    rng = random.Random(2)
    n = [synth.valid_personal_number(rng) for _ in range(5)]
    logger.warning("refused %s for %r", n[0][:6], {"id": n[1]}, extra={"detail": [int(n[2])]})
    logger.warning("%s%s", n[0][:6], n[0][6:], extra={"detail": n[3]})  # split across two args
    try:
        raise ValueError(f"bad record {synth.format_number(n[4], 'fullwidth-spaced')}")
    except ValueError:
        logger.exception("failed", extra={"detail": "x"})
    out = stream.getvalue()
    assert not leaks(out)
    assert all(x not in out for x in n)
    assert "Traceback" in out and "ValueError" in out


def test_filter_handles_bad_format_arguments(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    number = synth.valid_personal_number(random.Random(3))
    logger.error("%d items " + number, "not-a-number", extra={"detail": None})
    assert "unformattable" in stream.getvalue() and not leaks(stream.getvalue())


def test_json_style_extra_fields_stay_structured() -> None:
    """Containers keep their shape so a JSON formatter can still serialise them."""
    number = synth.valid_personal_number(random.Random(4))
    value = redact_value({"count": 3, "ids": [number, "m-1"], "n": int(number), "ok": True})
    assert value["count"] == 3 and value["ok"] is True and value["ids"][1] == "m-1"
    assert not leaks(json.dumps(value, ensure_ascii=False))


def test_a_digit_of_another_script_does_not_hide_twelve_digits_before_it() -> None:
    """Hypothesis found it: '660480640594' then TANGSA DIGIT ZERO (U+16AC0). The detector reads
    twelve digits (it knows ASCII and full-width digits only); so must the redactor."""
    text = "660480640594\U00016ac0"
    assert not leaks(redact_text(text))
    assert redact_text(text) == "*" * 12 + "\U00016ac0"
