"""The 個人番号 policy on file frames: a number split between two chunks is found wherever the cut falls,
from each frame alone (the overlap), in cp932, UTF-16 and UTF-8; a number in a file's name is found;
once a frame of a file is refused, its later frames are too; jgw's own hex ids never trip it."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.config import RouteConfig, SinkConfig, SourceConfig
from gateway.files.chunks import Abort, Chunker, Frame
from gateway.files.route_source import frame_message
from gateway.options import Options
from gateway.policy.stage import PolicyStage, policy_stage
from gateway.route.stages import NodeContext, Refusal
from tests.lab import synth

CHUNK = 4096


def stage(encoding: str, tmp_path: Path) -> PolicyStage:
    route = RouteConfig(name="r", source=SourceConfig("b", "q"), sink=SinkConfig("b", "x", "k"),
                        personal_number="forbidden", payload_encoding=encoding, max_size=8 * 1024 * 1024)
    node = NodeContext(node_id="n", config_file=tmp_path / "c.toml", state_dir=tmp_path, certs_dir=tmp_path)
    return policy_stage(Options("c.toml", "routes.r.policy", {}, tmp_path), route, node)


def frames(data: bytes, name: bytes = b"f.csv", file_id: str = "ab" * 16) -> list[Frame]:
    chunker = Chunker(file_id=file_id, name=name, size=len(data), mtime_ns=0, chunk_bytes=CHUNK, single=True)
    out: list[Frame] = list(chunker.feed(data))
    tail, last = chunker.close()
    return [*out, *tail, last]


def verdicts(encoding: str, tmp_path: Path, fs: list[Frame]) -> list[bool]:
    """For each frame scanned on its own (a fresh stage each time: no memory helps), refused or not."""
    return [isinstance(stage(encoding, tmp_path).process([frame_message("r", f, 0.0)])[0], Refusal) for f in fs]


@pytest.mark.parametrize("encoding,form", [
    ("cp932", lambda n: n.encode("cp932")),
    ("cp932", lambda n: "".join(chr(0xFF10 + int(d)) for d in n).encode("cp932")),  # full-width digits
    ("utf-16-le", lambda n: n.encode("utf-16-le")),
    ("utf-8", lambda n: f"{n[:4]}-{n[4:8]}-{n[8:]}".encode()),
])
def test_a_number_split_between_chunks_is_found_wherever_the_cut_falls(tmp_path: Path, encoding: str,
                                                                      form: object) -> None:
    rng = random.Random(12)
    number = form(synth.valid_personal_number(rng))  # type: ignore[operator]
    # text around it: 事務 then plain characters, so the number starts on a character boundary
    pad = "事務".encode(encoding) + " ".encode(encoding) * (3 * CHUNK)
    for cut in range(0, len(number) + 1, 2 if encoding == "utf-16-le" else 1):
        start = CHUNK - cut  # the number begins `cut` bytes before the chunk boundary (any byte of it)
        data = pad[:start] + number + pad[4:CHUNK * 2]
        fs = frames(data)
        refused = [i for i, r in enumerate(verdicts(encoding, tmp_path, fs)) if r]
        assert refused, f"number at {start} (cut {cut}) not found"
        assert len(refused) == 1 and refused[0] in (0, 1), refused  # judged once, by one frame


def test_no_false_hit_from_frame_headers_or_ids(tmp_path: Path) -> None:
    """Frames of clean data over many file ids: jgw's hex ids and digests never count as numbers."""
    st = stage("utf-8", tmp_path)
    for i in range(300):
        fid = random.Random(i).randbytes(16).hex()
        for f in frames(b"clean data " * 1000, file_id=fid):
            assert not isinstance(st.process([frame_message("r", f, 0.0)])[0], Refusal), fid


def test_a_number_in_the_name_refuses_the_manifest_and_the_whole_file_frame(tmp_path: Path) -> None:
    number = synth.valid_personal_number(random.Random(3)).encode("cp932")
    name = "転入_".encode("cp932") + number + b".csv"
    big, small = frames(b"x" * (3 * CHUNK), name=name), frames(b"x" * 10, name=name)
    assert verdicts("cp932", tmp_path, big) == [False, False, False, True]
    assert verdicts("cp932", tmp_path, small) == [True]


def test_once_a_frame_is_refused_every_later_frame_of_that_file_is(tmp_path: Path) -> None:
    number = synth.valid_personal_number(random.Random(4)).encode()
    fs = frames(b"a" * 100 + number + b" " + b"b" * (4 * CHUNK))
    st = stage("utf-8", tmp_path)
    results = [st.process([frame_message("r", f, 0.0)])[0] for f in fs]
    assert all(isinstance(r, Refusal) for r in results)
    assert [r.detail for r in results if isinstance(r, Refusal)][1:] == \
        ["an earlier frame of this file carries one"] * (len(fs) - 1)
    abort = st.process([frame_message("r", Abort("ab" * 16), 0.0)])[0]
    assert not isinstance(abort, Refusal), "the withdrawal always goes"


def test_a_frame_that_does_not_decode_is_malformed(tmp_path: Path) -> None:
    msg = frame_message("r", frames(b"abc")[0], 0.0).replace(body=b"JGWF garbage")
    result = stage("utf-8", tmp_path).process([msg])[0]
    assert isinstance(result, Refusal) and result.reason == "chunk-malformed"
