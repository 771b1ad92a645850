"""Scenario: 住民異動 → 個人番号の生成, 本人確認情報の更新 (seed jimu:1-①…⑦; 1-⑫ to the 中間サーバ)."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.lab import synth
from tests.scenarios.sites import (
    ORDER_HEADER,
    World,
    by_key,
    catalog_route,
    first_copies,
    metric,
    publish,
    set_aside,
    stand_in,
    wait_for,
)

pytestmark = pytest.mark.slow

UPDATES = 5  # 本人確認情報 updates per person (異動, then 軽微な修正 …)
#: in-place retries of an ordered route: about 17 s in all, longer than the CS refuses here
RETRY = ["250ms", "500ms", "1s", "2s", "2s", "3s", "3s", "5s"]
ROUND_GAP = 0.7  # seconds between rounds of updates


@dataclass
class Person:
    key: str  # 住民票コード stand-in: the 既存住基's per-person ordering key
    atena: str  # 団体内統合宛名番号: the 統合宛名's key towards the 中間サーバ
    number: str  # synthetic 個人番号
    event: str


def ido_sites(world: World) -> dict[str, str]:
    """The city hall carries 1-②, 1-⑤, 1-⑥ (既存住基 ↔ CS) and 1-⑫ (既存住基 → 統合宛名 → 中間サーバ,
    its second leg sealed to the 中間サーバ platform); the 中間サーバ platform opens 1-⑫/2."""
    q = {name: world.q(name) for name in (
        "kizon-juki.kojin-bango-request", "cs.kojin-bango-notice", "kizon-juki.honnin-update",
        "kizon-juki.atena", "atena.chukan-juminhyo", "cs.in", "kizon-juki.in", "atena.in",
        "cs.inbox.kojin-bango-request", "cs.inbox.honnin-update", "kizon-juki.inbox.kojin-bango-notice",
        "atena.inbox.juminhyo", "chukan-server.juminhyo")}

    def local(ref: str, source: str, exchange: str, key: str) -> dict[str, object]:
        return catalog_route(ref, source={"broker": "local", "queue": q[source]},
                             sink={"broker": "local", "exchange": q[exchange], "routing_key": key})

    store = q["chukan-server.juminhyo"]
    world.write("chukan", {world.r("juminhyo-in"): world.inbound(
        "jimu:1-⑫/2", sender="cityhall", name="juminhyo",
        sink={"broker": "local", "exchange": "", "routing_key": store, "queue": store})})
    world.write("cityhall", {
        world.r("kojin-bango-request"): local("jimu:1-②", "kizon-juki.kojin-bango-request", "cs.in",
                                              "kojin-bango-request"),
        world.r("kojin-bango-notice"): local("jimu:1-⑤", "cs.kojin-bango-notice", "kizon-juki.in",
                                             "kojin-bango-notice"),
        world.r("honnin-update"): local("jimu:1-⑥", "kizon-juki.honnin-update", "cs.in", "honnin-update"),
        world.r("atena-renkei"): local("jimu:1-⑫/1", "kizon-juki.atena", "atena.in", "juminhyo"),
        world.r("chukan-juminhyo"): world.outbound("cityhall", "jimu:1-⑫/2", to="chukan", name="juminhyo",
                                                   queue=q["atena.chukan-juminhyo"]),
    }, peers={"chukan": world.brokers.jgw_broker("chukan")}, defaults={"retry": RETRY})
    return q


def test_ido_order_per_person_kept_while_the_cs_refuses_and_across_a_jgw_crash(world: World) -> None:
    """Seed jimu:1-① (the 届出, the test's input), 1-② (個人番号の生成要求, 既存住基 → CS), 1-⑤ (通知,
    CS → 既存住基, the reply to 1-②: correlation id kept), 1-⑥ (本人確認情報の更新, 既存住基 → CS, 異動
    order per person), and the same 異動 on 1-⑫ (既存住基 → 統合宛名 → 中間サーバ, the second leg
    sealed across LGWAN). 1-③, 1-④ and 1-⑦ run on 住基ネット (CS ↔ 機構 / 都道府県サーバ): not jgw's.

    Two persons are born (1-② answered by 1-⑤ under the same correlation id), then four persons'
    本人確認情報 updates are sent interleaved, a round at a time, while the CS side has no queue
    bound (its exchange returns them): jgw retries each person's first update in place and holds
    the rest behind it; the city hall's jgw is killed with SIGKILL meanwhile and restarted. When the
    CS is bound every update arrives once, each person's in the order sent, none set aside; at the
    中間サーバ the 1-⑫ updates arrive in the same per-person order. (Without per-person ordering on
    1-⑥ the later rounds overtake the earlier ones here: checked by hand when this was written.)"""
    q = ido_sites(world)
    with world.view("cityhall") as city:
        stand_in(city, q["cs.in"], {"kojin-bango-request": q["cs.inbox.kojin-bango-request"],
                                    "": q["cs.inbox.honnin-update"]})  # the CS's 1-⑥ queue: not bound yet
        stand_in(city, q["kizon-juki.in"],
                 {"kojin-bango-notice": q["kizon-juki.inbox.kojin-bango-notice"]})
        stand_in(city, q["atena.in"], {"juminhyo": q["atena.inbox.juminhyo"]})
    world.start("chukan", "cityhall")
    city_site = world.sites["cityhall"]
    rng = random.Random(16)
    persons = [Person(f"jumin-{i:04d}", f"ATN{rng.randrange(10**6):06d}", synth.valid_personal_number(rng),
                      event) for i, event in enumerate(["出生", "出生", "転居", "転入"])]
    total = len(persons) * UPDATES

    with world.view("cityhall") as city:
        # 1-② for the newborn; the CS answers each with 1-⑤ under the request's correlation id
        requests = {}
        for p in persons[:2]:
            corr = f"KB-{uuid.uuid4().hex[:10]}"
            requests[publish(city, q["kizon-juki.kojin-bango-request"], synth.fixed_record(rng).data,
                             headers={ORDER_HEADER: p.key}, correlation_id=corr)] = (p, corr)
        at_cs = city.drain(q["cs.inbox.kojin-bango-request"], expect=2, timeout=30, idle=0.3)
        assert {m.message_id: m.properties.correlation_id for m in at_cs} == \
               {mid: corr for mid, (_, corr) in requests.items()}
        notices = {}
        for m in at_cs:
            p, corr = requests[m.message_id]
            body = synth.fixed_record(rng, "cp932", p.number).data
            notices[publish(city, q["cs.kojin-bango-notice"], body, headers={ORDER_HEADER: p.key},
                            correlation_id=corr)] = (corr, body)
        at_juki = city.drain(q["kizon-juki.inbox.kojin-bango-notice"], expect=2, timeout=30, idle=0.3)
        assert {m.message_id: (m.properties.correlation_id, m.body) for m in at_juki} == notices

        # 1-⑥ (and 1-⑫/1) for every person, interleaved, a round at a time while the CS (not bound)
        # refuses: an earlier update waits out a longer retry delay than a later one, so only
        # per-person ordering keeps a later update from overtaking it
        sent: dict[str, list[str]] = {p.key: [] for p in persons}
        sent_atena: dict[str, list[str]] = {p.key: [] for p in persons}
        for n in range(UPDATES):
            time.sleep(ROUND_GAP if n else 0.0)
            for p in persons:
                record = synth.fixed_record(rng, "cp932", p.number).data
                sent[p.key].append(publish(city, q["kizon-juki.honnin-update"], record,
                                           headers={ORDER_HEADER: p.key, "x-ido-jiyu": f"{p.event}-{n}"}))
                sent_atena[p.key].append(publish(city, q["kizon-juki.atena"], record,
                                                 headers={ORDER_HEADER: p.key}))

    honnin = world.r("honnin-update")

    def refused_and_held() -> bool:
        held = city_site.status(honnin)["held_for_order"] == len(persons) * (UPDATES - 1)
        retried = metric(city_site, "jgw_retries_total", route=honnin, reason="unroutable")
        return held and retried >= len(persons)

    wait_for(refused_and_held, timeout=30, what="first updates retried in place, the rest held behind")
    city_site.proc.kill()  # a crash while the CS refuses: the order must survive in the source queue
    city_site.proc.start(timeout=60)
    wait_for(refused_and_held, timeout=30, what="held and retried again after the restart")

    # meanwhile the 統合宛名 passes each person's 住民票関係情報 on to the 中間サーバ (1-⑫/2)
    with world.view("cityhall") as city:
        to_atena = city.drain(q["atena.inbox.juminhyo"], expect=total, timeout=60, idle=0.5)
        # this route was moving when jgw was killed: its in-flight messages may arrive twice
        to_atena = first_copies(to_atena, bound=1000)
        assert by_key(to_atena) == sent_atena
        atena_of = {p.key: p.atena for p in persons}
        forwarded: dict[str, list[str]] = {p.atena: [] for p in persons}
        for m in to_atena:
            key = atena_of[m.headers[ORDER_HEADER]]
            body = f"団体内統合宛名番号={key}\n住民票関係情報 更新 {len(forwarded[key])}\n".encode()
            forwarded[key].append(publish(city, q["atena.chukan-juminhyo"], body,
                                          headers={ORDER_HEADER: key}))

        city.bind(q["cs.inbox.honnin-update"], q["cs.in"], "honnin-update")  # the CS is back
        got = city.drain(q["cs.inbox.honnin-update"], expect=total, timeout=60, idle=1.0)
    assert len(got) == total, "each update delivered exactly once"
    assert by_key(got) == sent, "every person's 本人確認情報 updates in the order they were sent"
    with world.view("chukan") as chukan:
        at_chukan = chukan.drain(q["chukan-server.juminhyo"], expect=total, timeout=60, idle=0.5)
    assert by_key(at_chukan) == forwarded, "1-⑫ in the same per-person order at the 中間サーバ"
    set_aside_ids = {row["id"] for verb in ("dlq", "quarantine")
                     for row in set_aside(city_site.config, verb)}
    assert not set_aside_ids & {mid for ids in sent.values() for mid in ids}

