"""A city's day (issue 13): one run of ``ops/cityday`` for the module, then one test per seed system.

The day (``ops.cityday.day.run``) runs three real jgw daemons (city hall, 中間サーバ side, data
centre) on private RabbitMQ nodes with mTLS, private OpenSSH sshd instances for the file routes and a
fault proxy on LGWAN, carries one compressed day over every route of ``config/examples/`` with four
faults from a fixed seed, and reports per route and per seed system. Each test below reads that
report and checks, against the catalog, that the system's flows were carried as the catalog says:
the 個人番号 rule (a forbidden route quarantined exactly the payloads that carried one), per-person
order, sealing where the flow crosses sites, request/reply pairing, nothing lost.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.catalog import default_catalog
from ops.cityday.day import PAIRS, SYSTEMS, Scale, ok, run, summary, table
from tests.lab.rabbitnode import rabbitmq_installed
from tests.lab.sshd import usable

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
CROSSING = {"lgwan"}  # networks between sites: the flow must be sealed there


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not rabbitmq_installed():
        pytest.fail("rabbitmq-server is not installed: the day needs private RabbitMQ nodes")
    reason = usable()
    if reason:
        pytest.fail(f"the file routes need a private OpenSSH sshd: {reason}")
    started = time.monotonic()
    rep = run(tmp_path_factory.mktemp("cityday") / "out", scale=Scale())
    rep["wall_seconds"] = time.monotonic() - started
    print(f"\n{table(rep)}\n{summary(rep)} ({rep['wall_seconds']:.0f} s)")
    return rep


def rule_of(seed: str) -> tuple[str, str, list[str]]:
    """The catalog's 個人番号 rule, ordering and networks for a route's seed reference."""
    flow, leg = default_catalog().lookup(seed)
    legs = [leg] if leg is not None else list(flow.legs)
    rule = leg.personal_number if leg is not None else flow.personal_number
    return rule, flow.ordering, [x.network for x in legs]


def carried_as_the_catalog_says(day: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """Every route of the system carried traffic, lost nothing, kept order, set aside only what the
    catalog's rule demands, and is sealed when its leg crosses sites."""
    rows = [day["routes"][r] for r in SYSTEMS[node]]
    for row in rows:
        name = row["route"]
        rule, ordering, networks = rule_of(row["seed"])
        assert row["sent"] > 0, f"{name}: no traffic in the day"
        assert row["lost"] == 0, f"{name}: {row['lost']} lost"
        assert row["dead_lettered"] == 0, f"{name}: dead letters"
        assert row["unexpected"] == 0, f"{name}: a message ended where it must not"
        assert row["sent"] == row["delivered"] + sum(row["quarantined"].values()), name
        assert row["personal_number"] == rule, f"{name}: route says {row['personal_number']}, catalog {rule}"
        if rule == "allowed":
            assert row["quarantined"] == {}, f"{name}: an allowed route quarantined {row['quarantined']}"
        else:
            assert set(row["quarantined"]) <= {"personal-number"}, f"{name}: {row['quarantined']}"
        if ordering == "person":
            assert row["ordered"], f"{name}: the catalog keeps 異動 order per person; the route does not"
            assert row["order_violations"] == 0, f"{name}: per-person order broken"
        if CROSSING & set(networks) and row["site"] == "cityhall":
            assert row["sealed"], f"{name} crosses sites ({networks}) unsealed"
    return rows


def quarantined(day: dict[str, Any], route: str) -> int:
    return sum(day["routes"][route]["quarantined"].values())


def test_the_day_reconciles_and_ends_lost_0(day: dict[str, Any]) -> None:
    """Counts reconcile over the whole day; every route of the examples carried traffic; the four
    faults happened; every site's audit trail verifies; the summary line ends ``lost=0``."""
    t = day["totals"]
    assert t["sent"] > 5000
    assert t["sent"] == t["delivered"] + t["quarantined"] + t["dead_lettered"] + t["lost"]
    assert t["lost"] == 0 and t["order_violations"] == 0 and t["unmatched"] == 0
    assert t["wrong_place"] == 0 and t["unexpected"] == 0 and t["dead_lettered"] == 0
    assert ok(day)
    assert summary(day).endswith(" lost=0")
    routes = {name for f in ("cityhall", "datacenter")
              for name in tomllib.loads((EXAMPLES / f"{f}.toml").read_text(encoding="utf-8"))["routes"]}
    assert routes <= set(day["routes"]), routes - set(day["routes"])
    assert all(day["routes"][r]["sent"] > 0 for r in routes), [r for r in routes if not day["routes"][r]["sent"]]
    assert sorted(f["fault"] for f in day["faults"]) == ["broker-restart", "cert-rotation", "jgw-kill",
                                                         "lgwan-cut"]
    assert {site: a["ok"] for site, a in day["audit"].items()} == {"cityhall": True, "chukan": True,
                                                                    "datacenter": True}
    assert set(day["systems"]) == set(SYSTEMS)


def test_kizon_juki(day: dict[str, Any]) -> None:
    """既存住基システム: 異動 to the CS in per-person order (1-⑥), 個人番号 requests answered (1-② → 1-⑤),
    附票, 法務省 and 送付先情報 flows, the 住民票関係情報 file to 統合宛名, the nightly 整合性確認 batch."""
    carried_as_the_catalog_says(day, "kizon-juki")
    pair = day["pairs"]["1-② → 1-⑤ 個人番号の生成要求/通知"]
    assert pair["requests"] > 0 and pair["unmatched"] == 0 and pair["stray_replies"] == 0
    b = day["batch"]
    assert b["records"] == 500_000 and b["delivered_messages"] == b["messages"] == 500
    assert b["seconds"] is not None
    assert day["routes"]["honnin-update"]["sent"] > day["routes"]["kyotsu-atena"]["sent"]  # 1-3 per 異動


def test_cs(day: dict[str, Any]) -> None:
    """市町村CS (business-network side): 本人確認 requests from 統合宛名 answered under their correlation
    id (honnin:2-② → 2-④), 符号取得 requests (5-②/2) arriving, 特例転入 and 附票 handed on."""
    carried_as_the_catalog_says(day, "cs")
    pair = day["pairs"]["honnin:2-② → 2-④ 本人確認"]
    assert pair["requests"] > 0 and pair["unmatched"] == 0


def test_atena(day: dict[str, Any]) -> None:
    """団体内統合宛名システム: 照会 round trip 4-① → 4-⑥ through the 中間サーバ side, the 副本 file with a
    個人番号 quarantined on its forbidden file route, the 住民票関係情報 files delivered."""
    carried_as_the_catalog_says(day, "atena")
    pair = day["pairs"]["chukan:4-① → 4-⑥ 情報照会"]
    assert pair["requests"] > 0 and pair["unmatched"] == 0
    assert quarantined(day, "fukuhon-update") == 1
    assert day["routes"]["atena-renkei"]["delivered"] == day["scale"]["juki_files"]


def test_chukan_server(day: dict[str, Any]) -> None:
    """中間サーバ (its own site over LGWAN): every leg to and from it sealed, 符号取得 pairs matched
    (5-① → 5-②), the two 副本登録 that carried a 個人番号 quarantined, 1-⑫/2 in order per 宛名番号."""
    rows = carried_as_the_catalog_says(day, "chukan-server")
    assert all(r["sealed"] for r in rows)
    pair = day["pairs"]["5-① → 5-② 符号取得"]
    assert pair["requests"] > 0 and pair["unmatched"] == 0
    assert quarantined(day, "fukuhon-register") == 2


def test_kyotsu_kiban(day: dict[str, Any]) -> None:
    """共通基盤システム: 宛名情報 (1-⑪, forbidden) in order; the one carrying a 個人番号 quarantined."""
    carried_as_the_catalog_says(day, "kyotsu-kiban")
    assert quarantined(day, "kyotsu-atena") == 1


def test_koseki_fuhyo(day: dict[str, Any]) -> None:
    """戸籍システム (附票): 附票 from other cities through the CS (2-④/1) and 本籍地が市内 (2-④/2)."""
    rows = carried_as_the_catalog_says(day, "koseki")
    assert all(r["delivered"] == r["sent"] for r in rows)


def test_card_system(day: dict[str, Any]) -> None:
    """個人番号カード管理システム: its own flows run on 住基ネット (not jgw's); jgw carries the 送付先情報 to
    the CS (9-①, forbidden), the one with a 個人番号 quarantined."""
    cat = default_catalog()
    own = [f for f in cat if f.is_route and any("card-system" in (x.source, x.target) for x in f.legs)]
    assert own and all(x.network == "jukinet" for f in own for x in f.legs if "card-system" in (x.source, x.target))
    carried_as_the_catalog_says(day, "card-system")
    assert quarantined(day, "sofusaki") == 1


def test_homusho_terminal(day: dict[str, Any]) -> None:
    """法務省情報連携端末: 法務省通知 into 既存住基 (4-②), 市町村通知 out (4-③), in order per person; one
    法務省通知 carrying a 個人番号 quarantined."""
    carried_as_the_catalog_says(day, "homusho-terminal")
    assert quarantined(day, "homusho-import") == 1


def test_tougou_terminal(day: dict[str, Any]) -> None:
    """統合端末: its 本人確認/情報照会 (jimu:6) run on 住基ネット, so no route of the examples names them;
    what follows on the business network (特例転入's 転出証明書, 7-④) was carried."""
    cat = default_catalog()
    jimu6 = [f for f in cat if f.ref.startswith("jimu:6-")]
    assert jimu6 and all(x.network == "jukinet" for f in jimu6 for x in f.legs)
    seeds = {r["seed"] for r in day["routes"].values()}
    assert not {f.ref for f in jimu6} & seeds
    carried_as_the_catalog_says(day, "tougou-terminal")


def test_ocr(day: dict[str, Any]) -> None:
    """OCR 異動受付: each 異動対象者情報ファイル taken from its SFTP server, sealed across LGWAN, stored at
    the data centre byte-identical under its name (a 6 MiB one and a Shift_JIS name among them)."""
    [row] = carried_as_the_catalog_says(day, "ocr")
    assert row["delivered"] == row["sent"] == day["scale"]["ocr_files"]
    assert row["sealed"]


def test_vendor_dc(day: dict[str, Any]) -> None:
    """The vendor's data centre: every file opened and stored, through the certificate rotation at this
    site (jgw certs rotate + SIGHUP), a restart of its broker and an LGWAN cut; its audit trail verifies."""
    [row] = carried_as_the_catalog_says(day, "vendor-dc")
    assert row["delivered"] == row["sent"] == day["scale"]["ocr_files"]
    assert {f["fault"] for f in day["faults"]} >= {"cert-rotation", "broker-restart", "lgwan-cut"}
    assert day["audit"]["datacenter"]["ok"]


def test_shinsei_has_no_linkage(day: dict[str, Any]) -> None:
    """申請受付支援システム: the seed says there is no data linkage; no route of the day names it, and a
    route for it added to the city hall's config is refused by ``jgw check-config``."""
    assert SYSTEMS["shinsei"] == ()
    assert not [r for r in day["routes"].values() if r["seed"].startswith("shinsei:")]
    assert day["shinsei"]["refused"] and day["shinsei"]["exit"] != 0


def test_every_pair_is_matched(day: dict[str, Any]) -> None:
    assert set(day["pairs"]) == set(PAIRS)
    for name, pair in day["pairs"].items():
        assert pair["requests"] > 0 and pair["unmatched"] == 0 and pair["stray_replies"] == 0, name
