"""Scenario: 情報提供用個人識別符号の取得 (seed jimu:5-①…④), the city hall and the 中間サーバ platform."""

from __future__ import annotations

import random
import uuid

from tests.lab import synth
from tests.scenarios.sites import World, catalog_route, deliveries, publish, stand_in

PERSONS = 6


def fugo_sites(world: World) -> dict[str, str]:
    """5-① sealed city hall → 中間サーバ; 5-②/1 sealed 中間サーバ → city hall; 5-②/2 統合宛名 → CS."""
    q = {"pair": world.q("atena.fugo-pair"), "chukan-pairs": world.q("chukan-server.fugo-pair"),
         "chukan-requests": world.q("chukan-server.fugo-request"), "atena-in": world.q("atena.in"),
         "atena-inbox": world.q("atena.inbox.fugo-request"), "atena-out": world.q("atena.fugo-request"),
         "cs-in": world.q("cs.in"), "cs-inbox": world.q("cs.inbox.fugo-request")}
    world.write("chukan", {
        world.r("fugo-pair-in"): world.inbound(
            "jimu:5-①", sender="cityhall", name="fugo-pair",
            sink={"broker": "local", "exchange": "", "routing_key": q["chukan-pairs"],
                  "queue": q["chukan-pairs"]}),
        world.r("fugo-request-out"): world.outbound(
            "chukan", "jimu:5-②/1", to="cityhall", name="fugo-request", queue=q["chukan-requests"]),
    }, peers={"cityhall": world.brokers.jgw_broker("cityhall")})
    world.write("cityhall", {
        world.r("fugo-pair"): world.outbound("cityhall", "jimu:5-①", to="chukan", name="fugo-pair",
                                             queue=q["pair"]),
        world.r("fugo-request-in"): world.inbound(
            "jimu:5-②/1", sender="chukan", name="fugo-request",
            sink={"broker": "local", "exchange": q["atena-in"], "routing_key": "fugo-request"}),
        world.r("fugo-request-cs"): catalog_route(
            "jimu:5-②/2", source={"broker": "local", "queue": q["atena-out"]},
            sink={"broker": "local", "exchange": q["cs-in"], "routing_key": "fugo-request"}),
    }, peers={"chukan": world.brokers.jgw_broker("chukan")})
    return q


def test_shori_tsuban_is_kept_end_to_end_across_both_sites_and_pairs_the_reply(world: World) -> None:
    """Seed jimu:5-① (統合宛名 → 中間サーバ: 個人番号と団体内統合宛名番号のペアデータ), 5-② (中間サーバ →
    統合宛名 → 市町村CS: 処理通番と個人番号のペアデータ, 符号の取得要求), with the catalog's pairing
    5-① reply 5-②, correlation "keep". 5-③ (CS → 機構 → 情報提供NWS) and 5-④ (NWS → 中間サーバ) run on
    住基ネット and the 情報提供ネットワークシステム, which jgw does not carry.

    The 処理通番 (issued by the 中間サーバ beforehand, chukan:2-①…④) travels as the AMQP correlation
    id. 5-① leaves the city hall sealed and is opened at the 中間サーバ platform; the 中間サーバ answers
    each request (in reverse order, so only the id can pair them) on 5-②, sealed back to the city
    hall; the 統合宛名 passes it on to the CS. At every receiving system the correlation id is the
    one the request started with, never regenerated; bodies and message ids arrive as sent; each
    site's audit trail records the 処理通番 of what it delivered."""
    q = fugo_sites(world)
    with world.view("cityhall") as city:
        stand_in(city, q["atena-in"], {"fugo-request": q["atena-inbox"]})
        stand_in(city, q["cs-in"], {"fugo-request": q["cs-inbox"]})
    world.start("chukan", "cityhall")
    rng = random.Random(54)

    # 5-①: the 統合宛名 sends each person's pair data, tagged with the 処理通番
    persons = {f"SHORI-{uuid.uuid4().hex[:12].upper()}": (f"ATN{rng.randrange(10**6):06d}",
                                                          synth.valid_personal_number(rng))
               for _ in range(PERSONS)}
    pair_ids: dict[str, str] = {}
    with world.view("cityhall") as city:
        for shori, (atena, number) in persons.items():
            body = f"団体内統合宛名番号={atena}\n個人番号={number}\n".encode()
            pair_ids[publish(city, q["pair"], body, correlation_id=shori, content_type="text/plain")] = shori

    # the 中間サーバ receives every pair with its 処理通番, and answers each one (5-②)
    with world.view("chukan") as chukan:
        pairs = chukan.drain(q["chukan-pairs"], expect=PERSONS, timeout=60, idle=0.5)
        assert {m.message_id: m.properties.correlation_id for m in pairs} == pair_ids
        for m in pairs:
            atena, number = persons[m.properties.correlation_id]
            assert m.body == f"団体内統合宛名番号={atena}\n個人番号={number}\n".encode()
        replies: dict[str, bytes] = {}
        for m in reversed(pairs):
            shori = m.properties.correlation_id
            body = f"処理通番={shori}\n個人番号={persons[shori][1]}\n".encode()
            mid = publish(chukan, q["chukan-requests"], body, correlation_id=shori, content_type="text/plain")
            replies[mid] = body

    # the 統合宛名 gets each answer under its request's 処理通番 and passes it on to the CS (5-②/2)
    with world.view("cityhall") as city:
        answers = city.drain(q["atena-inbox"], expect=PERSONS, timeout=60, idle=0.5)
        assert sorted(m.message_id for m in answers) == sorted(replies)
        for m in answers:
            shori = m.properties.correlation_id
            assert shori in persons and m.body == replies[m.message_id]
            assert m.body.startswith(f"処理通番={shori}\n".encode()), "paired with its own request"
            publish(city, q["atena-out"], m.body, correlation_id=shori, content_type="text/plain",
                    message_id=m.message_id)
        at_cs = city.drain(q["cs-inbox"], expect=PERSONS, timeout=60, idle=0.5)
    assert {m.message_id: m.properties.correlation_id for m in at_cs} == \
           {m.message_id: m.properties.correlation_id for m in answers}
    assert {m.properties.correlation_id for m in at_cs} == set(persons), "every 処理通番 reached the CS"
    assert all(m.body == replies[m.message_id] for m in at_cs)

    # evidence: each site recorded the 処理通番 of every delivery it made
    city_recs = deliveries(world.sites["cityhall"], [*pair_ids, *replies])
    chukan_recs = deliveries(world.sites["chukan"], [*pair_ids, *replies])
    for recs in (city_recs, chukan_recs):
        for mid, shori in pair_ids.items():
            assert recs[mid]["corr"] == shori and recs[mid]["seed"] == "jimu:5-①"
