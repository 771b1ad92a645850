"""Hostile AMQP headers: every stage delivers or refuses each message with a reason, never raises,
never harms a neighbour; what ``seal`` accepts, ``open`` restores exactly (issue 15, item 1).

Headers are generated as pika and an AMQP codec hand them over: names as text or bytes (bytes when
not UTF-8), values of every type (text, bytes, bool, integers of any size, floats with NaN and -0.0,
Decimal, naive and UTC datetimes, None, values with an AMQP field type, lists, tables), nested up to
and past the depth limit, tables past the item limit; plus values no client delivers (tuples,
bytearrays, sets, zoned datetimes, objects), which must be refused, not crash.
"""

from __future__ import annotations

import datetime as dt
import decimal
import random
import zoneinfo
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.envelope import EnvelopeError, inner
from gateway.envelope.inner import Contents, Typed
from gateway.message import Message
from gateway.route.stages import Refusal, run_chain
from tests.lab import synth

from .conftest import Pki
from .hostile import NEIGHBOUR, build_stages, exact, message, nested, source_headers


@pytest.fixture(scope="module")
def stages(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_stages(pki, tmp_path_factory.mktemp("hostile"))


def restored(value: Any) -> Any:
    """What ``open`` gives back for a sealed value: a codec's typed value as ``Typed``, the rest as is."""
    if isinstance(value, dict):
        return {k: restored(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restored(v) for v in value]
    if hasattr(value, "amqp_type") and not isinstance(value, Typed):
        return Typed(value.amqp_type, inner.plain_value(value))
    return value


class Int8(int):
    """A typed value as an AMQP codec hands it over: a subclass that names its field type."""

    amqp_type = "b"


class Float32(float):
    amqp_type = "f"


# --- strategies --------------------------------------------------------------------------------

names = st.text(max_size=12) | st.binary(max_size=12) | st.sampled_from(
    [b"\xff\xfe", b"\x80", "x-jgw-route", "x-jgw-attempt", b"x-jgw-attempt", "", "\u3000名前"])
pika_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=True)
    | st.text(max_size=24) | st.binary(max_size=24)
    | st.builds(lambda raw, scale: decimal.Decimal(raw) * decimal.Decimal(10) ** -scale,
                st.integers(-(2**31), 2**31 - 1), st.integers(0, 10))
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.sampled_from([synth.valid_personal_number(random.Random(7)), "1234-5678-9018"])
)
typed_scalars = (
    st.builds(Typed, st.sampled_from("bBUuIil"), st.integers(-(2**40), 2**40))
    | st.builds(Typed, st.just("f"), st.floats(width=32) | st.floats())
    | st.builds(Typed, st.just("S"), st.binary(max_size=8) | st.text(max_size=8))
    | st.builds(Typed, st.just("T"), st.integers(-5, 2**40))
    | st.builds(Int8, st.integers(-200, 200)) | st.builds(Float32, st.floats(width=32))
)
foreign = st.sampled_from([(1, 2), bytearray(b"ab"), {1, 2}, object(), 2**64, -(2**70),
                           dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")),
                           dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=9), "JST")),
                           "\udc80 lone surrogate", decimal.Decimal("sNaN"), decimal.Decimal("-0E-7")])
values = st.recursive(pika_scalars | typed_scalars | foreign,
                      lambda kids: st.lists(kids, max_size=4) | st.dictionaries(names, kids, max_size=4),
                      max_leaves=24)


headers_strategy = st.one_of(
    st.dictionaries(names, values, max_size=8),
    st.builds(lambda d, leaf: {"deep": nested(d, leaf)}, st.integers(6, 11), pika_scalars),
    st.builds(lambda n: {f"k{i}".encode() if i % 3 else f"k{i}": i for i in range(n)},
              st.integers(1000, 1030)),
)


def test_typed_values_keep_their_field_type() -> None:
    """A value with an AMQP field type (a codec's Int8, Float32, or Typed) comes back with it."""
    headers = {"i8": Int8(-3), "f32": Float32(0.5), "T": Typed("T", 1_700_000_000), b"\xff": Typed("S", b"\xff"),
               "in-list": [Typed("u", 65535), {b"k": Typed("D", decimal.Decimal("1.50"))}]}
    back = inner.decode(inner.encode(Contents(b"", headers), bytes(16))).headers
    assert exact(back, {"i8": Typed("b", -3), "f32": Typed("f", 0.5), "T": Typed("T", 1_700_000_000),
                        b"\xff": Typed("S", b"\xff"),
                        "in-list": [Typed("u", 65535), {b"k": Typed("D", decimal.Decimal("1.50"))}]})
    assert exact(inner.decode(inner.encode(Contents(b"", back), bytes(16))).headers, back)


@pytest.mark.parametrize(("value", "why"), [
    (Typed("b", 128), "field type 'b'"), (Typed("f", 0.1), "field type 'f'"), (Typed("?", 1), "unknown AMQP"),
    (Typed("D", decimal.Decimal("1E+3")), "field type 'D'"), (bytearray(b"x"), "bytearray"),
    (dt.datetime(2026, 1, 1, tzinfo=zoneinfo.ZoneInfo("Asia/Tokyo")), "zone"),
    (dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=9), "JST")), "zone name"),
    (dt.datetime(2026, 1, 1, fold=1), "fold"), (Int8(300), "field type 'b'"),
])
def test_values_that_would_change_are_refused(value: Any, why: str) -> None:
    """What the record could only carry altered (a wider type, another zone, a lost fold) is
    unsealable, with a reason naming the problem and not the value."""
    with pytest.raises(EnvelopeError) as info:
        inner.encode(Contents(b"", {"h": value}), bytes(16))
    assert info.value.reason == "unsealable" and why in info.value.detail


# --- the fuzz ----------------------------------------------------------------------------------

SEAL_REFUSALS = {"unsealable", "header-invalid"}
POLICY_REFUSALS = {"personal-number", "header-invalid"}


#: AMQP properties as a client library hands them over: text, bytes when not UTF-8 (pika), or absent.
property_text = st.none() | st.text(max_size=40) | st.binary(max_size=40) | st.just("\udc80")
properties = st.fixed_dictionaries({}, optional={
    "content_type": property_text, "content_encoding": property_text, "correlation_id": property_text,
    "type": property_text, "app_id": property_text,
    "timestamp": st.none() | st.integers(-(2**64), 2**64) | st.just(True),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(poison=headers_strategy, props=properties)
def test_fuzz_seal_open_round_trip_never_harms_a_neighbour(stages: dict[str, Any], poison: Any,
                                                           props: dict[str, Any]) -> None:
    """Invariant: seal delivers or refuses each message with a reason (never stage-error); what it
    delivers, open restores exactly, properties too; the neighbours are always delivered intact."""
    batch = [message(0, dict(NEIGHBOUR)), message(1, poison).replace(**props), message(2, dict(NEIGHBOUR))]
    sealed = run_chain([stages["seal"]], batch)
    assert isinstance(sealed[0], Message) and isinstance(sealed[2], Message)
    if isinstance(sealed[1], Refusal):
        assert sealed[1].reason in SEAL_REFUSALS, sealed[1]
    opened = run_chain([stages["open"]], [s for s in sealed if isinstance(s, Message)])
    assert all(isinstance(o, Message) for o in opened)
    originals = [m for m, s in zip(batch, sealed, strict=True) if isinstance(s, Message)]
    for orig, out in zip(originals, opened, strict=True):
        assert isinstance(out, Message)
        assert exact(source_headers(out), restored(source_headers(orig)))
        fields = ("message_id", "body", "content_type", "content_encoding", "correlation_id", "type", "app_id",
                  "timestamp")
        assert all(exact(getattr(out, f), getattr(orig, f)) for f in fields)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(poison=headers_strategy, props=properties)
def test_fuzz_policy_delivers_or_refuses_with_a_reason(stages: dict[str, Any], poison: Any,
                                                       props: dict[str, Any]) -> None:
    """Invariant on a forbidden route: each message is delivered unchanged or refused with
    personal-number / header-invalid; never stage-error; the neighbours are delivered."""
    batch = [message(0, dict(NEIGHBOUR)), message(1, poison).replace(**props), message(2, dict(NEIGHBOUR))]
    out = run_chain([stages["policy"]], batch)
    assert out[0] is batch[0] and out[2] is batch[2]
    assert out[1] is batch[1] or (isinstance(out[1], Refusal) and out[1].reason in POLICY_REFUSALS), out[1]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(clear=headers_strategy)
def test_fuzz_open_with_hostile_clear_headers(stages: dict[str, Any], clear: Any) -> None:
    """Whatever clear headers a valid envelope carries, it opens to exactly what was sealed."""
    (sealed,) = run_chain([stages["seal"]], [message(5, dict(NEIGHBOUR))])
    assert isinstance(sealed, Message)
    (out,) = run_chain([stages["open"]], [sealed.replace(headers=clear)])
    assert isinstance(out, Message)
    assert exact(source_headers(out), {"x-biz": "異動届", "x-count": 3})


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(headers=headers_strategy)
def test_fuzz_inner_record_carries_exactly_or_refuses(headers: Any) -> None:
    """The inner record alone: decode(encode(c)) is exactly c, or encode refuses (unsealable)."""
    c = Contents(b"\x00\xff", headers)
    try:
        raw = inner.encode(c, bytes(16))
    except EnvelopeError as exc:
        assert exc.reason == "unsealable"
        return
    assert exact(inner.decode(raw).headers, restored(dict(headers)))
