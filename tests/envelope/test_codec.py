"""The codec: canonical header, strict framing, limits. Tables of named malformed cases."""

from __future__ import annotations

import dataclasses
import time

import pytest

from gateway.envelope import Contents, EnvelopeError, Limits, Sealer, SealItem, codec
from gateway.envelope.codec import Header, Recipient

from .conftest import Pki
from .forge import sections


def one(pki: Pki, item: SealItem, **kw: object) -> bytes:
    out = Sealer(suite="default", route="r1", recipients=["dc-b", "cs-c"], **kw).seal(  # type: ignore[arg-type]
        [item], pki.keyrings["city-a"], time.time())[0]
    assert isinstance(out, bytes)
    return out


def reframe(data: bytes, **replace: bytes) -> bytes:
    """The same envelope with whole sections replaced (lengths recomputed, signature not)."""
    s = sections(data)
    out = data[:6]
    for name in ("header", "key_block", "payload", "signature_block"):
        body = replace.get(name, data[s[name][0]:s[name][1]])
        out += len(body).to_bytes(4, "big") + body
    return out


def header_of(data: bytes) -> bytes:
    s = sections(data)
    return data[s["header"][0]:s["header"][1]]


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + len(value).to_bytes(2, "big") + value


def fields(header: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(header):
        n = int.from_bytes(header[pos + 1:pos + 3], "big")
        out.append((header[pos], header[pos + 3:pos + 3 + n]))
        pos += 3 + n
    return out


def test_header_fields_as_sealed(pki: Pki) -> None:
    """The parsed header holds exactly what was sealed, optional fields included."""
    contents = Contents(b"x", content_type="text/csv; charset=Shift_JIS", correlation_id="処理-42")
    item = SealItem("id-1", contents, order_key=b"\x07" * 32)
    h = codec.parse(one(pki, item)).header
    assert (h.message_id, h.route, h.sender, h.recipient_ids()) == ("id-1", "r1", "city-a", ("dc-b", "cs-c"))
    assert (h.content_type, h.correlation_id, h.order_key) == ("text/csv; charset=Shift_JIS", "処理-42",
                                                                b"\x07" * 32)
    assert abs(h.created_at.timestamp() - time.time()) < 5


def test_optional_fields_absent(pki: Pki) -> None:
    """No content type, correlation id or order key: those tags are simply absent."""
    data = one(pki, SealItem("id-2", Contents(b"x", correlation_id="c")), header_correlation_id=False)
    h = codec.parse(data).header
    assert (h.content_type, h.correlation_id, h.order_key) == (None, None, None)
    assert [t for t, _ in fields(header_of(data))] == list(range(1, 9))


def test_header_encoding_is_canonical(pki: Pki) -> None:
    """Re-encoding a parsed header gives back the exact bytes that were signed."""
    contents = Contents(b"x", content_type="", correlation_id="c")
    data = one(pki, SealItem("id-3", contents, order_key=bytes(32)))
    assert codec.parse(data).header.encode() == header_of(data)


@pytest.mark.parametrize(("field", "value"), [
    ("message_id", "with\nnewline"), ("message_id", "é"), ("message_id", ""), ("message_id", "x" * 256),
    ("route", "Upper"), ("sender", "-dash"), ("content_type", "x" * 256),
])
def test_header_refuses_unrepresentable_values(field: str, value: str) -> None:
    """Values outside the header's grammar are refused when encoding (the sealer calls it unsealable)."""
    h = Header("ok", "r1", "city-a", 0, (Recipient("dc-b", bytes(16)),), (bytes(16),), bytes(16), bytes(32))
    with pytest.raises(ValueError):
        dataclasses.replace(h, **{field: value}).encode()


MALFORMED_HEADERS = {
    "out of order": lambda f: [f[1], f[0], *f[2:]],
    "repeated tag": lambda f: [f[0], *f],
    "unknown tag": lambda f: [*f, (0x0C, b"x")],
    "missing sender": lambda f: [x for x in f if x[0] != 3],
    "created-at 7 bytes": lambda f: [(t, v[:7] if t == 4 else v) for t, v in f],
    "created-at past 9999": lambda f: [(t, b"\xff" * 8 if t == 4 else v) for t, v in f],
    "uppercase sender": lambda f: [(t, b"City-A" if t == 3 else v) for t, v in f],
    "no recipients": lambda f: [(t, b"\x00" if t == 5 else v) for t, v in f],
    "duplicate recipient": lambda f: [(t, b"\x02" + v[1:] + v[1:] if t == 5 else v) for t, v in f],
    "short recipient key id": lambda f: [(t, v[:-1] if t == 5 else v) for t, v in f],
    "epoch id 15 bytes": lambda f: [(t, v[:15] if t == 7 else v) for t, v in f],
    "digest 33 bytes": lambda f: [(t, v + b"\x00" if t == 8 else v) for t, v in f],
    "content type not UTF-8": lambda f: [*f[:8], (9, b"\xff\xfe")],
    "no signing key id": lambda f: [(t, b"\x00" if t == 6 else v) for t, v in f],
    "two signing key ids on default": lambda f: [(t, b"\x02" + v[1:] * 2 if t == 6 else v) for t, v in f],
}


@pytest.mark.parametrize("case", MALFORMED_HEADERS)
def test_malformed_headers(pki: Pki, case: str) -> None:
    """Each header that breaks the grammar is envelope-malformed before any crypto runs."""
    data = one(pki, SealItem("id-4", Contents(b"x")))
    header = b"".join(tlv(t, v) for t, v in MALFORMED_HEADERS[case](fields(header_of(data))))
    with pytest.raises(EnvelopeError) as info:
        codec.parse(reframe(data, header=header))
    assert info.value.reason == "envelope-malformed"


def test_malformed_sections(pki: Pki) -> None:
    """Key block and signature block entries of the wrong count or size are malformed."""
    data = one(pki, SealItem("id-5", Contents(b"x")))
    s = sections(data)
    kb = data[s["key_block"][0]:s["key_block"][1]]
    sig = data[s["signature_block"][0]:s["signature_block"][1]]
    cases = {
        "key block count 1 for 2 recipients": {"key_block": b"\x01" + kb[1:116]},
        "key block entry one byte short": {"key_block": kb[:1] + (112).to_bytes(2, "big") + kb[3:]},
        "key block trailing byte": {"key_block": kb + b"\x00"},
        "payload shorter than salt and tag": {"payload": bytes(47)},
        "two signatures on default": {"signature_block": sig + sig[-66:]},
        "signature 63 bytes": {"signature_block": sig[:-66] + (63).to_bytes(2, "big") + sig[-63:]},
    }
    for name, change in cases.items():
        with pytest.raises(EnvelopeError) as info:
            codec.parse(reframe(data, **change))
        assert info.value.reason == "envelope-malformed", name
    # leaf index 1 in a tree of 1 parses: the proof is judged after the signature (check 5, see
    # test_check_order), not by the codec
    odd = codec.parse(reframe(data, signature_block=(1).to_bytes(4, "big") + (1).to_bytes(4, "big") + sig[8:]))
    assert (odd.signature_block.tree_size, odd.signature_block.leaf_index) == (1, 1)


def test_limits_are_constructor_arguments(pki: Pki) -> None:
    """Each limit refuses input over it, as malformed, before parsing further."""
    batch = Sealer(suite="default", route="r1", recipients=["dc-b", "cs-c"]).seal(
        [SealItem(f"b-{i}", Contents(b"x")) for i in range(9)], pki.keyrings["city-a"], time.time())
    data = batch[0]
    assert isinstance(data, bytes)
    codec.parse(data)
    for limits in (Limits(max_envelope_bytes=len(data) - 1), Limits(max_header_bytes=40),
                   Limits(max_recipients=1), Limits(max_proof_hashes=3)):
        with pytest.raises(EnvelopeError) as info:
            codec.parse(data, limits)
        assert info.value.reason == "envelope-malformed", limits
    codec.parse(data, Limits(max_proof_hashes=4))


def test_sealer_refuses_what_receivers_would_refuse(pki: Pki) -> None:
    """A message id the header grammar cannot carry is unsealable at the sender, not a surprise later."""
    out = Sealer(suite="default", route="r1", recipients=["dc-b"]).seal(
        [SealItem("日本語の id", Contents(b"x"))], pki.keyrings["city-a"], time.time())
    assert isinstance(out[0], EnvelopeError) and out[0].reason == "unsealable"


def test_broken_clock_is_unsealable(pki: Pki) -> None:
    """A clock before 1970 cannot be signed into a header: the message is refused, nothing crashes."""
    out = Sealer(suite="default", route="r1", recipients=["dc-b"]).seal(
        [SealItem("id-6", Contents(b"x"))], pki.keyrings["city-a"], -5.0)
    assert isinstance(out[0], EnvelopeError) and out[0].reason == "unsealable"
