"""The ``policy`` stage on routes built by gateway.config.parse, as the relay will build them."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.config import RouteConfig
from gateway.errors import ConfigError
from gateway.message import Message
from gateway.options import Options
from gateway.policy.stage import PolicyStage, config_warnings, policy_stage
from gateway.route.stages import STAGE_KINDS, NodeContext, Refusal, load_factory
from tests.lab import synth


def route(tmp_path: Path, **fields: Any) -> RouteConfig:
    table: dict[str, Any] = {"source": {"broker": "local", "queue": "in"},
                             "sink": {"broker": "local", "exchange": "out"},
                             "personal_number": "forbidden", "payload_encoding": "cp932"}
    table.update(fields)
    table = {k: v for k, v in table.items() if v is not None}
    data = {"node": {"id": "cityhall", "state_dir": str(tmp_path)},
            "brokers": {"local": {"urls": ["amqp://127.0.0.1:5672/"]}}, "routes": {"r1": table}}
    cfg = config.parse(data, "test.toml", tmp_path)
    return cfg.routes["r1"]


def build(tmp_path: Path, table: dict[str, Any] | None = None, **fields: Any) -> PolicyStage:
    r = route(tmp_path, **fields)
    node = NodeContext(node_id="cityhall", config_file=tmp_path / "test.toml", state_dir=tmp_path,
                       certs_dir=tmp_path)
    opts = Options("test.toml", "routes.r1.policy", table or {}, tmp_path)
    stage = load_factory("policy")(opts, r, node)
    assert isinstance(stage, PolicyStage)
    return stage


def msg(body: bytes, **kw: Any) -> Message:
    return Message(message_id=kw.pop("message_id", "m-1"), route="r1", body=body, **kw)


def test_registered_under_the_policy_kind() -> None:
    """gateway.route.stages finds this factory under the name "policy"."""
    assert STAGE_KINDS["policy"] == "gateway.policy.stage:policy_stage"
    assert load_factory("policy") is policy_stage


def test_clean_messages_pass_unchanged_and_numbers_are_refused_with_the_offset(tmp_path: Path) -> None:
    """One result per message, in order: the same Message object, or a Refusal naming the offset only."""
    rng = random.Random(1)
    number = synth.valid_personal_number(rng)
    dirty = synth.payload(rng, "cp932", [synth.format_number(number, "fullwidth-spaced")], size=300)
    clean = synth.payload(rng, "cp932", [synth.invalid_check_digit(rng), synth.corporate_number(rng)])
    batch = [msg(clean.data), msg(dirty.data, message_id="m-2"), msg(clean.data, message_id="m-3")]
    out = build(tmp_path).process(batch)
    assert out[0] is batch[0] and out[2] is batch[2]
    assert out[1] == Refusal("personal-number", f"offset {dirty.offsets[0]}")
    assert number not in repr(out) and number[:6] not in out[1].detail  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding,code", [(None, "encoding-undeclared"),
                                           ("iso-2022-jp", "encoding-unknown")])
def test_unscannable_encoding_refuses_everything(tmp_path: Path, encoding: str | None, code: str) -> None:
    """A forbidden route that cannot be scanned delivers nothing (fail closed)."""
    r = route(tmp_path, payload_encoding=encoding)
    assert r.payload_encoding == encoding
    node = NodeContext(node_id="n", config_file=tmp_path / "t", state_dir=tmp_path, certs_dir=tmp_path)
    stage = policy_stage(Options("t", "routes.r1.policy", {}, tmp_path), r, node)
    out = stage.process([msg(b"hello"), msg(b"")])
    assert [o.reason for o in out] == [code, code]  # type: ignore[union-attr]
    assert config_warnings(r) and code in config_warnings(r)[0]


def test_allowed_route_passes_everything(tmp_path: Path) -> None:
    """On a route allowed to carry the 個人番号 the stage is a pass-through."""
    number = synth.valid_personal_number(random.Random(2))
    stage = build(tmp_path, personal_number="allowed")
    batch = [msg(number.encode())]
    assert stage.process(batch) == batch
    assert config_warnings(route(tmp_path, personal_number="allowed", payload_encoding="nonsense")) == []


def test_header_and_property_values_are_scanned(tmp_path: Path) -> None:
    """A number in a clear header or in the correlation id is refused without naming the header."""
    number = synth.valid_personal_number(random.Random(3))
    stage = build(tmp_path)
    out = stage.process([msg(b"ok", headers={"x-ref": {"nested": [f"ID {number}"]}}),
                         msg(b"ok", correlation_id=number),
                         msg(b"ok", headers={"x-num": int(number)}),
                         msg(b"ok", headers={"x-ref": "処理通番 000123"})])
    assert [getattr(o, "reason", None) for o in out] == ["personal-number"] * 3 + [None]
    assert "x-ref" not in out[0].detail  # type: ignore[union-attr]


def test_header_scan_can_be_turned_off(tmp_path: Path) -> None:
    number = synth.valid_personal_number(random.Random(4))
    stage = build(tmp_path, {"scan_headers": False})
    m = msg(b"ok", headers={"x": number})
    assert stage.process([m]) == [m]


def test_extra_encodings_are_scanned_too(tmp_path: Path) -> None:
    """A Shift_JIS full-width number on a route declared UTF-8 is caught when cp932 is added."""
    rng = random.Random(5)
    p = synth.payload(rng, "cp932", [synth.format_number(synth.valid_personal_number(rng), "fullwidth")])
    assert build(tmp_path, payload_encoding="utf-8").process([msg(p.data)])[0].__class__ is Message
    out = build(tmp_path, {"extra_encodings": ["cp932"]}, payload_encoding="utf-8").process([msg(p.data)])
    assert isinstance(out[0], Refusal) and out[0].detail == f"offset {p.offsets[0]}"


@pytest.mark.parametrize("table,key", [
    ({"extra_encodings": ["klingon"]}, "routes.r1.policy.extra_encodings[0]"),
    ({"scan_header": True}, "routes.r1.policy.scan_header"),
    ({"scan_headers": "yes"}, "routes.r1.policy.scan_headers")])
def test_bad_policy_table_names_the_key(tmp_path: Path, table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build(tmp_path, table)
    assert exc.value.key == key and exc.value.file == "test.toml"


def test_large_routes_run_off_the_event_loop(tmp_path: Path) -> None:
    assert build(tmp_path, max_size="8MiB").blocking is True
    assert build(tmp_path, max_size="16KiB").blocking is False
