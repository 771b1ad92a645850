"""The seal and open stages, built from real config tables, restore messages exactly."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import config
from gateway.envelope import CONTENT_TYPE, codec
from gateway.envelope.stage import H_ORDER, OpenStage, SealStage, open_stage, seal_stage
from gateway.errors import ConfigError, PermissionError_
from gateway.keyring import Keyring
from gateway.message import Message
from gateway.route.stages import STAGE_KINDS, NodeContext, Refusal, load_factory, run_chain

from .conftest import Pki

PERSON_HEADER = "x-person-key"


def load(tmp_path: Path, node: str, kind: str, table: dict[str, Any], **route_extra: Any) -> config.Config:
    route: dict[str, Any] = {"personal_number": "allowed",
                             "source": {"broker": "local", "queue": f"q-{kind}"},
                             "sink": {"broker": "local", "exchange": "x"}, kind: table, **route_extra}
    data = {"node": {"id": node}, "brokers": {"local": {"urls": ["amqp://127.0.0.1:5672/"]}},
            "routes": {"juki-link": route}}
    return config.parse(data, str(tmp_path / "jgw.toml"), tmp_path)


def build(tmp_path: Path, node: str, kind: str, table: dict[str, Any], keyring: Keyring | None,
          clock: Any = time.time, **route_extra: Any) -> Any:
    cfg = load(tmp_path, node, kind, table, **route_extra)
    route = cfg.routes["juki-link"]
    options = config.Options(str(cfg.file), f"routes.juki-link.{kind}", route.stage_tables[kind], tmp_path)
    services = {"keyring": (lambda: keyring)} if keyring is not None else {}
    ctx = NodeContext(node_id=node, config_file=cfg.file, state_dir=tmp_path, certs_dir=tmp_path / "certs",
                      clock=clock, services=services)
    return load_factory(kind)(options, route, ctx)


def secret_file(tmp_path: Path, mode: int = 0o600, size: int = 32) -> str:
    path = tmp_path / "order.secret"
    path.write_bytes(os.urandom(size))
    path.chmod(mode)
    return str(path)


def source_message(i: int = 0, person: str = "住民票コード-12345678901") -> Message:
    body = b"\x93\xfa\x96\x7b\x8c\xea SJIS \x00" + bytes([i])
    return Message(message_id=f"0f9e-{i}", route="juki-link", body=body,
                   headers={"x-jgw-sent-ms": 1_700_000_000_000 + i, PERSON_HEADER: person, "X-Biz": "異動届",
                            "x-count": 3, "x-raw": b"\xff"},
                   content_type="text/plain; charset=Shift_JIS", content_encoding="identity",
                   correlation_id="処理通番-0007", type="idou", app_id="kizon", timestamp=1_700_000_000,
                   attempt=1, order_key=person)


def seal_and_open(pki: Pki, tmp_path: Path, batch: list[Message]) -> tuple[list[Any], list[Any]]:
    table = {"recipients": ["dc-b"], "order_key_secret": secret_file(tmp_path)}
    ordered = {"header": PERSON_HEADER}
    seal = build(tmp_path, "city-a", "seal", table, pki.keyrings["city-a"], ordering=ordered)
    opener = build(tmp_path, "dc-b", "open", {"senders": ["city-a"]}, pki.keyrings["dc-b"])
    sealed = run_chain([seal], batch)
    opened = run_chain([opener], [m for m in sealed if isinstance(m, Message)])
    return sealed, opened


def test_registered_in_stage_kinds() -> None:
    """gateway.route.stages finds both factories under their names; both run off the event loop."""
    assert STAGE_KINDS["seal"] == "gateway.envelope.stage:seal_stage"
    assert load_factory("seal") is seal_stage and load_factory("open") is open_stage
    assert SealStage.blocking and OpenStage.blocking


def test_seal_then_open_restores_everything(pki: Pki, tmp_path: Path) -> None:
    """Body, every source header (type and order) and every property come back exactly."""
    originals = [source_message(i) for i in range(3)]
    sealed, opened = seal_and_open(pki, tmp_path, originals)
    for orig, s, o in zip(originals, sealed, opened, strict=True):
        assert isinstance(o, Message)
        assert o.body == orig.body
        assert o.headers == orig.headers
        source_order = [k for k in orig.headers if not k.startswith("x-jgw-")]
        assert [k for k in o.headers if not k.startswith("x-jgw-")] == source_order
        props = ("content_type", "content_encoding", "correlation_id", "type", "app_id", "timestamp")
        assert [getattr(o, p) for p in props] == [getattr(orig, p) for p in props]
        assert o.message_id == orig.message_id == s.message_id
        assert o.order_key == s.order_key == s.headers[H_ORDER]


def test_sealed_message_shows_nothing_personal(pki: Pki, tmp_path: Path) -> None:
    """In clear: only x-jgw-* headers and the envelope type; the person key only as an HMAC."""
    person = "住民票コード-98765432109"
    (sealed,), _ = seal_and_open(pki, tmp_path, [source_message(person=person)])
    assert set(sealed.headers) == {"x-jgw-sent-ms", H_ORDER}
    assert sealed.content_type == CONTENT_TYPE
    assert (sealed.content_encoding, sealed.correlation_id, sealed.type, sealed.app_id, sealed.timestamp) == (
        None, None, None, None, None)
    assert person.encode() not in sealed.body and b"SJIS" not in sealed.body
    assert person not in sealed.order_key and len(sealed.order_key) == 64
    header = codec.parse(sealed.body).header
    assert header.order_key is not None and header.order_key.hex() == sealed.headers[H_ORDER]


def test_order_key_is_stable_per_person(pki: Pki, tmp_path: Path) -> None:
    """Same person, same HMAC (per-key FIFO still works); another person, another HMAC."""
    batch = [source_message(0, "p-1"), source_message(1, "p-2"), source_message(2, "p-1")]
    sealed, _ = seal_and_open(pki, tmp_path, batch)
    keys = [m.headers[H_ORDER] for m in sealed]
    assert keys[0] == keys[2] != keys[1]


def test_open_refusals_keep_the_rest_of_the_batch(pki: Pki, tmp_path: Path) -> None:
    """A tampered envelope and one under a different AMQP id are refused; the others are delivered."""
    seal = build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"]}, pki.keyrings["city-a"])
    opener = build(tmp_path, "dc-b", "open", {"senders": ["city-a"]}, pki.keyrings["dc-b"])
    sealed = seal.process([source_message(i) for i in range(4)])
    tampered = sealed[1].replace(body=sealed[1].body[:-1] + bytes([sealed[1].body[-1] ^ 1]))
    renamed = sealed[2].replace(message_id="someone-else")
    out = opener.process([sealed[0], tampered, renamed, sealed[3]])
    assert [type(r).__name__ for r in out] == ["Message", "Refusal", "Refusal", "Message"]
    assert [r.reason for r in out if isinstance(r, Refusal)] == ["signature-invalid", "id-mismatch"]


def test_open_uses_node_clock(pki: Pki, tmp_path: Path) -> None:
    """The replay window is judged by the node's clock, not the machine's."""
    seal = build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"]}, pki.keyrings["city-a"])
    table = {"senders": ["city-a"], "replay_window": "1h"}
    late = build(tmp_path, "dc-b", "open", table, pki.keyrings["dc-b"], clock=lambda: time.time() + 2 * 3600)
    (out,) = late.process(seal.process([source_message()]))
    assert isinstance(out, Refusal) and out.reason == "outside-window"


def test_keyring_is_fetched_per_batch(pki: Pki, tmp_path: Path) -> None:
    """A certificate reload swaps the keyring: the next batch uses the new one."""
    current = {"ring": pki.keyrings["dc-b"]}
    cfg_table = {"senders": ["city-a"]}
    cfg = load(tmp_path, "dc-b", "open", cfg_table)
    route = cfg.routes["juki-link"]
    ctx = NodeContext("dc-b", cfg.file, tmp_path, tmp_path, services={"keyring": lambda: current["ring"]})
    opener = open_stage(config.Options(str(cfg.file), "routes.juki-link.open", route.stage_tables["open"],
                                       tmp_path), route, ctx)
    seal = build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"]}, pki.keyrings["city-a"])
    sealed = seal.process([source_message()])
    assert isinstance(opener.process(sealed)[0], Message)
    current["ring"] = pki.keyrings["cs-c"]  # a keyring that is not a recipient
    (refused,) = opener.process(sealed)
    assert isinstance(refused, Refusal) and refused.reason == "not-recipient"


@pytest.mark.parametrize(("kind", "table", "key", "words"), [
    ("seal", {"recipients": ["dc-b"], "suit": "default"}, "routes.juki-link.seal.suit", "unknown key"),
    ("seal", {"recipients": ["dc-b"], "suite": "rot13"}, "routes.juki-link.seal.suite", "must be one of"),
    ("seal", {"recipients": []}, "routes.juki-link.seal.recipients", "at least one"),
    ("seal", {"recipients": ["DC B"]}, "routes.juki-link.seal.recipients[0]", "node id"),
    ("seal", {"recipients": ["nowhere"]}, "routes.juki-link.seal.recipients[0]", "not a known peer"),
    ("seal", {"recipients": ["dc-b"], "batch_max": 0}, "routes.juki-link.seal.batch_max", "at least 1"),
    ("seal", {"recipients": ["dc-b"], "epoch_messages": 2**25}, "routes.juki-link.seal.epoch_messages",
     "at most"),
    ("open", {}, "routes.juki-link.open.senders", "required"),
    ("open", {"senders": ["city-a"], "suites": ["none"]}, "routes.juki-link.open.suites[0]",
     "must be one of"),
    ("open", {"senders": ["city-a"], "replay_window": "30d"}, "routes.juki-link.open.replay_window",
     "dedup_window"),
])
def test_config_errors_name_the_key(pki: Pki, tmp_path: Path, kind: str, table: dict[str, Any], key: str,
                                    words: str) -> None:
    """Each bad stage table is a ConfigError naming file and key path, with the reason."""
    with pytest.raises(ConfigError) as info:
        build(tmp_path, "city-a", kind, table, pki.keyrings["city-a"])
    assert info.value.key == key and words in info.value.reason
    assert info.value.file.endswith("jgw.toml")


def test_ordered_route_needs_a_secret(pki: Pki, tmp_path: Path) -> None:
    """A route ordered by a header cannot seal without the HMAC secret (the value would have no cover)."""
    with pytest.raises(ConfigError) as info:
        build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"]}, pki.keyrings["city-a"],
              ordering={"header": PERSON_HEADER})
    assert info.value.key == "routes.juki-link.seal.order_key_secret"


def test_secret_file_mode_and_size(pki: Pki, tmp_path: Path) -> None:
    """The secret must be 0600 or stricter (exit 77 otherwise) and at least 32 bytes."""
    with pytest.raises(PermissionError_) as perm:
        table = {"recipients": ["dc-b"], "order_key_secret": secret_file(tmp_path, 0o640)}
        build(tmp_path, "city-a", "seal", table, pki.keyrings["city-a"])
    assert perm.value.exit_code == 77 and "0640" in str(perm.value)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        table = {"recipients": ["dc-b"], "order_key_secret": secret_file(tmp_path, size=16)}
        build(tmp_path, "city-a", "seal", table, pki.keyrings["city-a"])
    with pytest.raises(ConfigError, match="not found"):
        build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"], "order_key_secret": "missing.key"},
              pki.keyrings["city-a"])


def test_missing_keyring_service(tmp_path: Path) -> None:
    """A node without loaded envelope keys cannot build the stage: a ConfigError, not a crash later."""
    with pytest.raises(ConfigError, match="no envelope keys"):
        build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"]}, None)


def test_hybrid_suite_needs_mldsa(pki: Pki, tmp_path: Path) -> None:
    """pq-hybrid on a node whose keyring has no ML-DSA key is refused at config time."""
    from gateway.keyring import SigningIdentity
    ring = pki.keyrings["city-a"]
    ident = SigningIdentity.create(ring.signing.private_key, ring.signing.certificate)
    classic = Keyring.build("city-a", ident, ring.trust, ring.decryption_keys.values(), ring.peers.values())
    with pytest.raises(ConfigError) as info:
        build(tmp_path, "city-a", "seal", {"recipients": ["dc-b"], "suite": "pq-hybrid"}, classic)
    assert info.value.key == "routes.juki-link.seal.suite"
