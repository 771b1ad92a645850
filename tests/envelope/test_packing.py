"""Packed envelopes (docs/envelope.md §14): several messages in one envelope between sites.

The seal stage packs consecutive messages of a batch; the open stage unpacks them, and from there
each message goes on by itself. A message alone in its batch is sealed as a plain envelope.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.envelope import codec, packed
from gateway.envelope import inner as inner_mod
from gateway.envelope.errors import EnvelopeError
from gateway.envelope.stage import H_ORDER, H_PACKED
from gateway.message import Message
from gateway.route.stages import Refusal, run_stages

from .conftest import Pki
from .test_stage import PERSON_HEADER, build, secret_file, source_message


def stages(pki: Pki, tmp_path: Path, **seal: object) -> tuple[object, object]:
    table = {"recipients": ["dc-b"], "order_key_secret": secret_file(tmp_path), "pack": 64, **seal}
    sealer = build(tmp_path, "city-a", "seal", table, pki.keyrings["city-a"], ordering={"header": PERSON_HEADER})
    opener = build(tmp_path, "dc-b", "open", {"senders": ["city-a"]}, pki.keyrings["dc-b"],
                   ordering={"header": H_ORDER})
    return sealer, opener


def test_a_batch_is_packed_and_every_message_comes_back_exactly(pki: Pki, tmp_path: Path) -> None:
    """64 messages → one envelope with x-jgw-packed = 64; opened, 64 messages, each as it was sent
    (id, body, every header with its type, every property), their own order keys."""
    sealer, opener = stages(pki, tmp_path)
    batch = [source_message(i, person=f"person-{i % 5}") for i in range(64)]
    sealed = run_stages([sealer], batch)
    assert len(sealed) == 1 and sealed[0].parents == tuple(range(64))
    env = sealed[0].result
    assert isinstance(env, Message)
    assert env.headers[H_PACKED] == 64 and env.content_type == codec.CONTENT_TYPE and H_ORDER in env.headers
    assert codec.parse(env.body).header.content_type == packed.PACKED_TYPE  # the signed header says so
    opened = run_stages([opener], [env])
    assert [m.parents for m in opened] == [(0,)] * 64
    alone = run_stages([opener], run_stages_single(sealer, batch))
    for made, single, sent in zip(opened, alone, batch, strict=True):
        got, want = made.result, single.result
        assert isinstance(got, Message) and isinstance(want, Message)
        assert (got.message_id, got.body, dict(got.headers), got.content_type, got.content_encoding,
                got.correlation_id, got.type, got.app_id, got.timestamp, got.order_key) == (
            want.message_id, want.body, dict(want.headers), want.content_type, want.content_encoding,
            want.correlation_id, want.type, want.app_id, want.timestamp, want.order_key)
        assert list(got.headers.items()) == list(sent.headers.items())  # in the order they were sent


def run_stages_single(sealer: object, batch: list[Message]) -> list[Message]:
    """The same messages sealed one envelope each (what a quiet route sends)."""
    out = []
    for m in batch:
        (made,) = run_stages([sealer], [m])  # type: ignore[list-item]
        assert isinstance(made.result, Message) and H_PACKED not in made.result.headers
        out.append(made.result)
    return out


def test_pack_limits_by_count_and_by_size(pki: Pki, tmp_path: Path) -> None:
    sealer, _ = stages(pki, tmp_path, pack=10, pack_bytes="4KiB")
    small = [source_message(i) for i in range(25)]
    assert [len(m.parents) for m in run_stages([sealer], small)] == [10, 10, 5]
    big = [source_message(i).replace(body=b"x" * 1500) for i in range(6)]
    sizes = [len(m.parents) for m in run_stages([sealer], big)]
    assert sum(sizes) == 6 and max(sizes) <= 3


def test_pack_one_sends_one_envelope_per_message(pki: Pki, tmp_path: Path) -> None:
    """pack = 1 (the default): one envelope per message, as before packing existed."""
    table = {"recipients": ["dc-b"], "order_key_secret": secret_file(tmp_path)}
    sealer = build(tmp_path, "city-a", "seal", table, pki.keyrings["city-a"], ordering={"header": PERSON_HEADER})
    out = run_stages([sealer], [source_message(i) for i in range(5)])
    assert [m.parents for m in out] == [(i,) for i in range(5)]


def test_a_message_that_cannot_be_sealed_is_refused_alone_and_the_rest_packed(pki: Pki, tmp_path: Path) -> None:
    sealer, _ = stages(pki, tmp_path)
    batch = [source_message(i) for i in range(4)]
    batch[2] = batch[2].replace(headers={**batch[2].headers, "bad": {1, 2}})
    out = run_stages([sealer], batch)
    refused = [m for m in out if isinstance(m.result, Refusal)]
    assert [m.parents for m in refused] == [(2,)] and refused[0].result.reason == "unsealable"  # type: ignore[union-attr]
    assert [m.parents for m in out if isinstance(m.result, Message)] == [(0, 1, 3)]


def test_an_envelope_that_fails_verification_is_refused_whole(pki: Pki, tmp_path: Path) -> None:
    sealer, opener = stages(pki, tmp_path)
    (made,) = run_stages([sealer], [source_message(i) for i in range(8)])
    env = made.result
    assert isinstance(env, Message)
    forged = env.replace(body=env.body[:-1] + bytes([env.body[-1] ^ 1]))
    out = run_stages([opener], [forged])
    assert len(out) == 1 and isinstance(out[0].result, Refusal)


def test_the_one_message_path_refuses_a_packed_envelope(pki: Pki, tmp_path: Path) -> None:
    """``OpenStage.process`` (one result per envelope) never hands on the packed container itself."""
    sealer, opener = stages(pki, tmp_path)
    (made,) = run_stages([sealer], [source_message(i) for i in range(3)])
    (result,) = opener.process([made.result])  # type: ignore[attr-defined]
    assert isinstance(result, Refusal) and result.reason == "envelope-malformed"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_decode_as_a_packed_payload_or_are_refused_as_malformed(data: bytes) -> None:
    for blob in (data, packed.MAGIC + data):
        try:
            packed.decode(blob)
        except EnvelopeError as exc:
            assert exc.reason == "envelope-malformed"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.binary(max_size=64),
                          st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=2, max_size=64))),
                min_size=1, max_size=20, unique_by=lambda t: t[0]))
def test_packed_payloads_round_trip(entries: list[tuple[str, bytes, str | None]]) -> None:
    given_entries = [packed.Entry(mid, key, inner_mod.Contents(body=body, headers={"n": len(body)}))
                     for mid, body, key in entries]
    assert packed.decode(packed.encode(given_entries)) == given_entries


def test_a_packed_payload_with_a_repeated_id_is_malformed() -> None:
    e = packed.Entry("a", None, inner_mod.Contents(body=b""))
    with pytest.raises(EnvelopeError, match="repeats"):
        packed.decode(packed.encode([e, e]))


def test_a_full_worker_batch_becomes_eight_envelopes_of_64(pki: Pki, tmp_path: Path) -> None:
    """The runner's largest batch (512) leaves as 8 envelopes, and opens as 512 messages in order."""
    sealer, opener = stages(pki, tmp_path)
    batch = [source_message(i % 256).replace(message_id=f"m-{i}") for i in range(512)]
    out = run_stages([sealer], batch)
    assert [len(m.parents) for m in out] == [64] * 8
    opened = run_stages([opener], [m.result for m in out])  # type: ignore[misc]
    assert [m.result.message_id for m in opened] == [b.message_id for b in batch]  # type: ignore[union-attr]


def test_a_files_frames_are_never_packed(pki: Pki, tmp_path: Path) -> None:
    """Frames of files (x-jgw-file) are sealed one envelope each, with the file id in clear: the data
    centre's file route orders frames by it, and a packed envelope would arrive without one (it was
    quarantined as order-key-missing). Messages around them are still packed."""
    from gateway.files.settings import H_FILE

    sealer, _ = stages(pki, tmp_path)
    frames = [source_message(i).replace(headers={H_FILE: f"{'ab' * 15}{i:02d}"}) for i in range(3)]
    batch = [source_message(10), source_message(11), *frames, source_message(12), source_message(13)]
    out = run_stages([sealer], batch)
    assert [m.parents for m in out] == [(0, 1), (2,), (3,), (4,), (5, 6)]
    for made, frame in zip(out[1:4], frames, strict=True):
        assert isinstance(made.result, Message)
        assert H_PACKED not in made.result.headers
        assert made.result.headers[H_FILE] == frame.headers[H_FILE]
