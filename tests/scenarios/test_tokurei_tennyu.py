"""Scenario: 個人番号カードを利用した転入 (特例転入, seed jimu:7-①…⑪): city hall, 中間サーバ platform."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.lab import synth
from tests.lab.faultproxy import FaultProxyServer
from tests.scenarios.sites import (
    ORDER_HEADER,
    World,
    by_key,
    catalog_route,
    publish,
    set_aside,
    stand_in,
    wait_for,
)

pytestmark = pytest.mark.slow

ROUNDS = 2  # per person and flow: the 転入 and a 軽微な修正 resend after it
LGWAN_CUT = 3.0  # seconds the link to the 中間サーバ platform is down


@dataclass
class Person:
    key: str  # 住民票コード stand-in: the per-person ordering key on the city hall's broker
    atena: str  # 団体内統合宛名番号
    number: str  # synthetic 個人番号
    request: str  # the 7-② 転出証明書情報の送信依頼 id, kept as correlation id by 7-③ and 7-④


@pytest.fixture
def lgwan() -> Iterator[FaultProxyServer]:
    """A fault proxy between the city hall and the 中間サーバ platform's broker (the LGWAN link)."""
    server = FaultProxyServer().start()
    server.configure_client()
    yield server
    server.stop()


def text(rng: random.Random, *parts: str) -> bytes:
    """A CP932 message with no 個人番号: digit-free filler around the given words."""
    return synth.payload(rng, "cp932", parts, size=160).data


def tennyu_sites(world: World, lgwan_port: int) -> dict[str, str]:
    """What the city hall's jgw carries in 特例転入: 7-④ (CS → 既存住基), 7-⑤ and 7-⑦ (既存住基 → CS),
    7-⑨ (→ 共通基盤), 7-⑩/1 (→ 統合宛名) and 7-⑩/2 (統合宛名 → 中間サーバ, sealed, over the proxy)."""
    q = {name: world.q(name) for name in (
        "cs.tenshutsu-shomei", "kizon-juki.honnin-update", "kizon-juki.tennyu-tsuchi",
        "kizon-juki.kyotsu-atena", "kizon-juki.atena", "atena.chukan-juminhyo",
        "cs.in", "kizon-juki.in", "kyotsu-kiban.in", "atena.in",
        "kizon-juki.inbox.tenshutsu-shomei", "cs.inbox.honnin-update", "cs.inbox.tennyu-tsuchi",
        "kyotsu-kiban.inbox.atena", "atena.inbox.juminhyo", "chukan-server.juminhyo")}

    def local(ref: str, source: str, exchange: str, key: str) -> dict[str, object]:
        return catalog_route(ref, source={"broker": "local", "queue": q[source]},
                             sink={"broker": "local", "exchange": q[exchange], "routing_key": key})

    store = q["chukan-server.juminhyo"]
    world.write("chukan", {world.r("juminhyo-in"): world.inbound(
        "jimu:7-⑩/2", sender="cityhall", name="juminhyo",
        sink={"broker": "local", "exchange": "", "routing_key": store, "queue": store})})
    world.write("cityhall", {
        world.r("tokurei-tennyu-in"): local("jimu:7-④", "cs.tenshutsu-shomei", "kizon-juki.in",
                                            "tenshutsu-shomei"),
        world.r("honnin-update"): local("jimu:7-⑤", "kizon-juki.honnin-update", "cs.in", "honnin-update"),
        world.r("tennyu-tsuchi"): local("jimu:7-⑦", "kizon-juki.tennyu-tsuchi", "cs.in", "tennyu-tsuchi"),
        world.r("kyotsu-atena"): local("jimu:7-⑨", "kizon-juki.kyotsu-atena", "kyotsu-kiban.in", "atena"),
        world.r("atena-renkei"): local("jimu:7-⑩/1", "kizon-juki.atena", "atena.in", "juminhyo"),
        world.r("chukan-juminhyo"): world.outbound("cityhall", "jimu:7-⑩/2", to="chukan", name="juminhyo",
                                                   queue=q["atena.chukan-juminhyo"]),
    }, peers={"chukan": world.brokers.jgw_broker("chukan", port=lgwan_port)},
        defaults={"retry": ["500ms", "1s", "2s", "5s"]})
    return q


#: the 既存住基's flows after the 転入処理: source queue → the receiving system's queue
AFTER_TENNYU = {"kizon-juki.honnin-update": "cs.inbox.honnin-update",  # 7-⑤, carries the 個人番号
                "kizon-juki.tennyu-tsuchi": "cs.inbox.tennyu-tsuchi",  # 7-⑦, must not
                "kizon-juki.kyotsu-atena": "kyotsu-kiban.inbox.atena",  # 7-⑨, must not
                "kizon-juki.atena": "atena.inbox.juminhyo"}  # 7-⑩/1, carries the 個人番号
CARRY_NUMBER = ("kizon-juki.honnin-update", "kizon-juki.atena")


def test_tokurei_tennyu_arrives_in_order_per_person_across_an_lgwan_cut(
        world: World, lgwan: FaultProxyServer) -> None:
    """Seed jimu:7-④ (転出証明書情報, CS → 既存住基, keeping the 7-② request's correlation id),
    7-⑤ (本人確認情報の更新, with the 個人番号), 7-⑦ (転入通知情報), 7-⑨ (共通基盤の宛名情報),
    7-⑩ (住民票関係情報, 既存住基 → 統合宛名 → 中間サーバ, the second leg sealed across LGWAN).
    7-① is the counter; 7-②, 7-③, 7-⑥, 7-⑧ and 7-⑪ (統合端末/CS ↔ 他市町村, 都道府県サーバ,
    カード管理システム) run on 住基ネット: not jgw's.

    Five persons move in, each with the 転入 and a correction after it on every flow, interleaved.
    Every receiving system gets each person's messages in the order sent, 7-④ under the request's
    correlation id. The LGWAN link to the 中間サーバ platform is cut while 7-⑩/2 is being sent: the
    city hall holds what it cannot deliver and the 中間サーバ still gets every person's updates once,
    in order. One 転入通知 that carries a 個人番号 by mistake (7-⑦ must not) is quarantined with reason
    personal-number and never reaches the CS; the person's other messages still go through."""
    from toxiproxy import Toxiproxy

    link = Toxiproxy().create(upstream=f"127.0.0.1:{world.brokers.tls_port('chukan')}", name=world.tag)
    q = tennyu_sites(world, int(link.listen.rsplit(":", 1)[1]))
    with world.view("cityhall") as city:
        stand_in(city, q["kizon-juki.in"], {"tenshutsu-shomei": q["kizon-juki.inbox.tenshutsu-shomei"]})
        stand_in(city, q["cs.in"], {"honnin-update": q["cs.inbox.honnin-update"],
                                    "tennyu-tsuchi": q["cs.inbox.tennyu-tsuchi"]})
        stand_in(city, q["kyotsu-kiban.in"], {"atena": q["kyotsu-kiban.inbox.atena"]})
        stand_in(city, q["atena.in"], {"juminhyo": q["atena.inbox.juminhyo"]})
    world.start("chukan", "cityhall")
    rng = random.Random(7)
    persons = [Person(f"jumin-{i:04d}", f"ATN{rng.randrange(10**6):06d}", synth.valid_personal_number(rng),
                      f"TS-{uuid.uuid4().hex[:10]}") for i in range(5)]
    key_of = {p.key: p for p in persons}

    with world.view("cityhall") as city:
        # 7-④: the CS hands each person's 転出証明書情報 (and a resend) to the 既存住基
        shomei: dict[str, list[str]] = {p.key: [] for p in persons}
        for _ in range(ROUNDS):
            for p in persons:
                body = text(rng, "転出証明書情報", p.key)
                shomei[p.key].append(publish(city, q["cs.tenshutsu-shomei"], body,
                                             headers={ORDER_HEADER: p.key}, correlation_id=p.request))
        got = city.drain(q["kizon-juki.inbox.tenshutsu-shomei"], expect=len(persons) * ROUNDS, timeout=30,
                         idle=0.3)
        assert by_key(got) == shomei
        assert all(m.properties.correlation_id == key_of[m.headers[ORDER_HEADER]].request for m in got)

        # the 転入処理 is done: every flow for everyone, interleaved; one 転入通知 carries a 個人番号
        sent: dict[str, dict[str, list[str]]] = {src: {p.key: [] for p in persons} for src in AFTER_TENNYU}
        mistake = ""
        for n in range(ROUNDS):
            for p in persons:
                for src in AFTER_TENNYU:
                    wrong = src == "kizon-juki.tennyu-tsuchi" and p is persons[0] and n == 1
                    if src in CARRY_NUMBER:
                        body = synth.fixed_record(rng, "cp932", p.number).data
                    else:
                        body = text(rng, src, p.key, *([f"個人番号 {p.number}"] if wrong else []))
                    mid = publish(city, q[src], body, headers={ORDER_HEADER: p.key})
                    if wrong:
                        mistake = mid
                    else:
                        sent[src][p.key].append(mid)
        received = {}
        for src, inbox in AFTER_TENNYU.items():
            expect = sum(map(len, sent[src].values()))
            received[src] = city.drain(q[inbox], expect=expect, timeout=30, idle=0.3)
            assert by_key(received[src]) == sent[src], f"{inbox}: per-person order"

        # 7-⑩/2: the 統合宛名 passes each on, keyed by 団体内統合宛名番号; LGWAN drops half way
        to_chukan: dict[str, list[str]] = {p.atena: [] for p in persons}
        forward = received["kizon-juki.atena"]
        cut_at = time.monotonic()
        for i, m in enumerate(forward):
            if i == len(forward) // 2:
                link.disable()
                cut_at = time.monotonic()
            atena = key_of[m.headers[ORDER_HEADER]].atena
            body = f"団体内統合宛名番号={atena}\n住民票関係情報 特例転入 {len(to_chukan[atena])}\n".encode()
            to_chukan[atena].append(publish(city, q["atena.chukan-juminhyo"], body,
                                            headers={ORDER_HEADER: atena}))
    city_site = world.sites["cityhall"]
    route = world.r("chukan-juminhyo")
    wait_for(lambda: city_site.status(route)["state"] != "running", timeout=15,
             what="the city hall to see the cut")
    time.sleep(max(0.0, LGWAN_CUT - (time.monotonic() - cut_at)))
    held = city_site.status(route)
    assert held["in_flight"] > 0, f"messages held at the city hall while LGWAN is down: {held}"
    link.enable()
    with world.view("chukan") as chukan:
        at_chukan = chukan.drain(q["chukan-server.juminhyo"], expect=len(forward), timeout=60, idle=1.0)
    assert len(at_chukan) == len(forward), "each once"
    assert by_key(at_chukan) == to_chukan, "per-person order kept across the LGWAN cut"

    [row] = [r for r in set_aside(city_site.config, "quarantine") if r["id"] == mistake]
    assert (row["route"], row["reason"]) == (world.r("tennyu-tsuchi"), "personal-number")
    assert persons[0].number not in str(row), "the refusal names an offset, never the number"
    delivered = {mid for flow in sent.values() for ids in flow.values() for mid in ids}
    assert not {r["id"] for r in set_aside(city_site.config, "dlq")} & delivered
