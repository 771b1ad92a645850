"""The catalog against the seed file: every numbered flow present, nothing invented, texts verbatim."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway import catalog, config
from gateway.catalog import CIRCLED, Catalog, check_route
from gateway.config import RouteConfig
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SEED = REPO.parent / "shared" / "seed" / "000_3270a6133c2bdf4c.txt"
CATALOG_DIR = REPO / "config" / "catalog"


@pytest.fixture(scope="module")
def cat() -> Catalog:
    return catalog.load(CATALOG_DIR)


@pytest.fixture(scope="module")
def seed() -> str:
    if not SEED.exists():
        pytest.skip(f"seed file not found at {SEED} (shared/ must sit beside the repository)")
    return SEED.read_text(encoding="utf-8")


def sections(seed: str, cat: Catalog) -> dict[str, str]:
    """Cut the seed into its documents at each document's seed_start marker, in seed order."""
    starts = []
    for doc in cat.documents:
        assert seed.count(doc.seed_start) == 1, f"{doc.id}: seed_start must occur exactly once"
        starts.append((seed.index(doc.seed_start), doc.id))
    assert starts == sorted(starts), "documents' order must follow the seed"
    bounds = [s for s, _ in starts] + [len(seed)]
    return {doc_id: seed[bounds[i]:bounds[i + 1]] for i, (_, doc_id) in enumerate(starts)}


def seed_refs(text: str, numbering: str) -> list[str]:
    """Numbered bullets of one document, '2-②、③' expanded to 2-② and 2-③."""
    refs: list[str] = []
    if numbering == "sectioned":
        for m in re.finditer(rf"^\s*-\s*(\d+)-([{CIRCLED}](?:、[{CIRCLED}])*)", text, re.M):
            refs += [f"{m.group(1)}-{c}" for c in m.group(2).split("、")]
    else:
        refs = re.findall(rf"^\s*-\s*([{CIRCLED}])", text, re.M)
    return refs


def test_every_seed_reference_is_in_the_catalog_and_nothing_else(seed: str, cat: Catalog) -> None:
    """Counted per document: the catalog's references are exactly the seed's numbered flows."""
    parts = sections(seed, cat)
    total = 0
    for doc in cat.documents:
        expected = seed_refs(parts[doc.id], doc.numbering)
        assert len(expected) == len(set(expected)), f"{doc.id}: the seed numbers a flow twice"
        assert [f.number for f in doc.flows] == expected, doc.id
        total += len(expected)
    assert total == len(cat.flows) == 111


def test_flow_texts_are_the_seeds_words(seed: str, cat: Catalog) -> None:
    parts = sections(seed, cat)
    for flow in cat:
        assert flow.text in parts[flow.document], flow.ref


def test_the_issues_nodes_are_all_there(cat: Catalog) -> None:
    names = " ".join(n.name + " " + " ".join(n.aliases) for n in cat.nodes.values())
    for word in ("既存住基", "市町村CS", "都道府県サーバ", "全国サーバ", "機構", "共通基盤", "団体内統合宛名",
                 "中間サーバ", "戸籍システム", "法務省情報連携端末", "統合端末", "個人番号カード管理システム",
                 "OCR", "データセンター", "申請受付支援"):
        assert word in names, word
    used = {x for f in cat for leg in f.legs for x in (leg.source, leg.target)}
    assert {"cs", "kizon-juki", "atena", "chukan-server", "ocr", "vendor-dc"} <= used


def test_request_response_pairs_keep_the_correlation_id(cat: Catalog) -> None:
    """本人確認 and 照会 pairs (and the 符号 chain) carry their correlation id (処理通番) unchanged."""
    pairs = [f for f in cat if f.reply is not None]
    assert len(pairs) >= 15
    for f in pairs:
        reply = cat.flows[f.reply]  # type: ignore[index]
        assert reply.reply_to == f.ref
        if f.document in ("honnin", "chukan") or f.number.startswith(("5-", "6-")):
            assert f.correlation == "keep" and reply.correlation == "keep", f.ref


def test_the_no_linkage_document_is_marked(cat: Catalog) -> None:
    doc = cat.document("shinsei")
    assert doc is not None and doc.linkage == "none" and "データ連携はない" in doc.linkage_basis


def test_uncertain_values_are_the_safe_one(cat: Catalog) -> None:
    """Every leg whose basis is marked [U] for the 個人番号 is forbidden."""
    for flow in cat:
        for leg in flow.legs:
            if leg.basis.startswith("[U]"):
                assert leg.personal_number == "forbidden", flow.ref


# --- check_route on routes parsed by gateway.config -----------------------------------------------

def route(tmp_path: Path, seed: str | None, personal_number: str = "forbidden") -> RouteConfig:
    """A route as gateway.config builds it, then given the seed reference to judge (config.parse
    itself refuses a bad one: see test_config_refuses_the_route)."""
    table: dict[str, Any] = {"source": {"broker": "local", "queue": "in"},
                             "sink": {"broker": "local", "exchange": "out"},
                             "personal_number": personal_number, "payload_encoding": "cp932"}
    data = {"node": {"id": "cityhall"}, "brokers": {"local": {"urls": ["amqp://127.0.0.1/"]}},
            "routes": {"r": table}}
    return dataclasses.replace(config.parse(data, "t.toml", tmp_path).routes["r"], seed=seed)


@pytest.mark.parametrize("seed", ["shinsei:③", "jimu:11-①", "1-⑥"])
def test_config_refuses_the_route(tmp_path: Path, seed: str) -> None:
    """jgw check-config / jgw run refuse such a route, naming its seed key."""
    data = {"node": {"id": "cityhall"}, "brokers": {"local": {"urls": ["amqp://127.0.0.1/"]}},
            "routes": {"r": {"source": {"broker": "local", "queue": "in"}, "sink": {"broker": "local",
                             "exchange": "out"}, "personal_number": "forbidden", "payload_encoding": "cp932",
                             "seed": seed}}}
    with pytest.raises(ConfigError) as err:
        config.parse(data, "t.toml", tmp_path)
    assert err.value.key == "routes.r.seed"


@pytest.mark.parametrize("seed,pn,fragment", [
    ("shinsei:③", "forbidden", "no data linkage"),
    ("shinsei:1", "forbidden", "no data linkage"),
    ("jimu:1-①", "forbidden", "a counter or paper step"),
    ("ido-ocr:②", "allowed", "processing inside one system"),
    ("juki-file:⑥", "allowed", "name the detailed flow instead (jimu:1-⑥"),
    ("jimu:1-⑧", "allowed", "must not carry the 個人番号"),
    ("jimu:1-⑫", "allowed", "leg 2"),
    ("jimu:1-⑫/2", "allowed", "leg atena → chukan-server"),
    ("jimu:1-⑫/3", "allowed", "has 2 leg(s)"),
    ("jimu:11-①", "forbidden", "has no flow 11-①"),
    ("kyoto:1-①", "forbidden", "no seed document 'kyoto'"),
    ("1-⑥", "forbidden", "is not DOCUMENT:NUMBER"),
])
def test_refused_routes(tmp_path: Path, cat: Catalog, seed: str, pn: str, fragment: str) -> None:
    reason = check_route(route(tmp_path, seed, pn), cat)
    assert reason is not None and fragment in reason, reason


@pytest.mark.parametrize("seed,pn", [
    (None, "allowed"),
    ("jimu:1-⑥", "allowed"),
    ("jimu:1-6", "allowed"),  # ASCII spelling
    ("jimu:1-⑧", "forbidden"),
    ("jimu:1-⑥", "forbidden"),  # stricter than the catalog is fine
    ("jimu:1-⑫/1", "allowed"),
    ("jimu:1-⑫", "forbidden"),
    ("ido-ocr:⑤", "allowed"),
    ("chukan:3-③", "forbidden"),
])
def test_accepted_routes(tmp_path: Path, cat: Catalog, seed: str | None, pn: str) -> None:
    assert check_route(route(tmp_path, seed, pn), cat) is None


def test_advice_on_ordering_and_encoding(tmp_path: Path, cat: Catalog) -> None:
    advice = catalog.advise_route(route(tmp_path, "chukan:3-③"), cat)
    assert any("order per person" in a for a in advice)
    assert any("utf-8" in a for a in advice)  # catalog assumes utf-8, the route says cp932


# --- a broken catalog names file, key and reason ---------------------------------------------------

@pytest.mark.parametrize("old,new,key,reason", [
    ('to = "cs"\nnetwork = "business"\npersonal_number = "allowed"\nbasis = "domain-japan §1.6: 個人番号生成',
     'to = "cz"\nnetwork = "business"\npersonal_number = "allowed"\nbasis = "domain-japan §1.6: 個人番号生成',
     "flow[1].to", "unknown node 'cz'"),
    ('reply = "1-⑤"', 'reply = "1-④"', "1-②.reply", "must name jimu:1-② as its reply_to"),
    ('ref = "1-③"', 'ref = "1-②"', "flow[2].ref", "duplicate reference 1-②"),
    ('personal_number = "forbidden"\nbasis = "[U] as 1-⑨; safe value"',
     'personal_number = "maybe"\nbasis = "[U] as 1-⑨; safe value"',
     "flow[9].personal_number", "must be one of"),
])
def test_broken_catalog_is_a_config_error(tmp_path: Path, old: str, new: str, key: str, reason: str) -> None:
    broken = tmp_path / "catalog"
    shutil.copytree(CATALOG_DIR, broken)
    text = (broken / "jimu.toml").read_text(encoding="utf-8")
    assert old in text
    (broken / "jimu.toml").write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        catalog.load(broken)
    assert exc.value.file.endswith("jimu.toml") and exc.value.key == key and reason in exc.value.reason
