"""The parser's invariant (h11-style): any bytes, whole, truncated or mutated from a valid envelope,
either parse or raise EnvelopeError; nothing else, no hang, and a mutated envelope never opens."""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.envelope import Contents, EnvelopeError, Opener, OpenPolicy, Sealer, SealItem, codec, inner

from .conftest import Pki

FUZZ = settings(max_examples=400, deadline=dt.timedelta(seconds=2),
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def valid(pki: Pki) -> dict[str, bytes]:
    now = time.time()
    out: dict[str, bytes] = {}
    for suite in ("default", "pq-hybrid"):
        contents = Contents(b"\x00payload\xff", {"a": [1, 2.5, None, {"b": b"\x01"}]}, content_type="x/y",
                            correlation_id="処理通番-0001", timestamp=1700000000)
        three = [SealItem(f"id-{i}", contents, order_key=bytes(32)) for i in range(3)]
        sealer = Sealer(suite=suite, route="r1", recipients=["dc-b", "cs-c"])
        batch = sealer.seal(three, pki.keyrings["city-a"], now)
        out[suite] = batch[1]  # type: ignore[assignment]
        single = Sealer(suite=suite, route="r1", recipients=["dc-b"]).seal([SealItem("solo", contents)],
                                                                            pki.keyrings["city-a"], now)
        out[suite + "-single"] = single[0]  # type: ignore[assignment]
    return out


def _opener() -> Opener:
    return Opener(OpenPolicy(frozenset({"city-a"}), frozenset({"default", "pq-hybrid"}), frozenset({"r1"}),
                             3600.0, 300.0))


@FUZZ
@given(st.binary(max_size=4096))
def test_any_bytes(data: bytes) -> None:
    """Arbitrary bytes parse or raise EnvelopeError."""
    with contextlib.suppress(EnvelopeError):
        codec.parse(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_after_the_magic(tail: bytes) -> None:
    """Bytes behind a valid preamble reach the header and section parsers; same invariant."""
    for suite_id in (1, 2):
        with contextlib.suppress(EnvelopeError):
            codec.parse(b"JGWE\x01" + bytes([suite_id]) + tail)


@FUZZ
@given(st.binary(max_size=2048))
def test_any_inner_record(data: bytes) -> None:
    """The inner-record decoder (behind the AEAD, but still treated as hostile) keeps the invariant."""
    with contextlib.suppress(EnvelopeError):
        inner.decode(data)


_TLV = st.lists(st.tuples(st.integers(0, 13), st.binary(max_size=80)), max_size=14)


@FUZZ
@given(fields=_TLV, key_block=st.binary(max_size=300), payload=st.binary(max_size=100),
       sig_block=st.binary(max_size=200), suite_id=st.sampled_from([1, 2]))
def test_framed_random_sections(fields: list[tuple[int, bytes]], key_block: bytes, payload: bytes,
                                sig_block: bytes, suite_id: int) -> None:
    """Correctly framed sections with random TLV header fields and random contents reach every
    field parser; still parse or EnvelopeError."""
    header = b"".join(bytes([tag]) + len(v).to_bytes(2, "big") + v for tag, v in fields)
    data = b"JGWE\x01" + bytes([suite_id])
    for section in (header, key_block, payload, sig_block):
        data += len(section).to_bytes(4, "big") + section
    with contextlib.suppress(EnvelopeError):
        codec.parse(data)


def _mutations() -> st.SearchStrategy[tuple[str, int, int, bytes]]:
    kinds = st.sampled_from(["truncate", "flip", "set", "insert", "delete", "overwrite"])
    return st.tuples(kinds, st.integers(min_value=0), st.integers(min_value=0, max_value=255),
                     st.binary(min_size=1, max_size=64))


def _mutate(data: bytes, mutation: tuple[str, int, int, bytes]) -> bytes:
    kind, pos, value, chunk = mutation
    pos %= len(data)
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[:pos])
    if kind == "flip":
        b[pos] ^= 1 << (value % 8)
    elif kind == "set":
        b[pos] = value
    elif kind == "insert":
        b[pos:pos] = chunk
    elif kind == "delete":
        del b[pos:pos + 1 + value % 16]
    else:
        b[pos:pos + len(chunk)] = chunk
    return bytes(b)


@FUZZ
@given(which=st.sampled_from(["default", "default-single", "pq-hybrid", "pq-hybrid-single"]),
       mutations=st.lists(_mutations(), min_size=1, max_size=3))
def test_mutated_envelope_never_opens(pki: Pki, valid: dict[str, bytes], which: str,
                                      mutations: list[tuple[str, int, int, bytes]]) -> None:
    """A valid envelope changed in any way is refused with EnvelopeError by the full open path."""
    data = valid[which]
    mutated = data
    for m in mutations:
        mutated = _mutate(mutated, m) if mutated else mutated
    if mutated == data:
        return
    with pytest.raises(EnvelopeError):
        _opener().open(mutated, pki.keyrings["dc-b"], time.time())


def test_the_unmutated_envelopes_open(pki: Pki, valid: dict[str, bytes]) -> None:
    """Control for the property above: the originals open for both recipients."""
    for which, data in valid.items():
        for node in (("dc-b", "cs-c") if "single" not in which else ("dc-b",)):
            assert _opener().open(data, pki.keyrings[node], time.time()).contents.body == b"\x00payload\xff"
