"""Scenario (issue 15, item 1): one poison message among forty crosses a sealed link without taking
its batch down. The black-box run published a header whose *name* is not UTF-8: the city hall's seal
stage raised, and all 40 messages of the batch were dead-lettered as ``stage-error``.
"""

from __future__ import annotations

from typing import Any

from tests.scenarios.sites import World, publish, set_aside

COUNT = 40


def sealed_link(world: World) -> tuple[str, str]:
    """The city hall seals ido-ocr:⑤ for the data centre, which opens it and stores it."""
    source, store = world.q("ocr.ido-file"), world.q("ido-file.store")
    world.write("datacenter", {world.r("ido-file-store"): world.inbound(
        "ido-ocr:⑤", sender="cityhall", name="ido-file",
        sink={"broker": "local", "exchange": "", "routing_key": store, "queue": store})})
    world.write("cityhall", {world.r("ido-file-to-dc"): world.outbound(
        "cityhall", "ido-ocr:⑤", to="datacenter", name="ido-file", queue=source)},
        peers={"datacenter": world.brokers.jgw_broker("datacenter")})
    return source, store


def too_deep() -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(9):  # nine tables below the headers table: one more than the envelope carries
        value = {"d": value}
    return {"x-deep": value}


def test_a_poison_header_name_does_not_fail_its_batch(world: World) -> None:
    """40 messages waiting in the source queue, taken as one batch: one carries a header name that is
    not UTF-8 (and a bytes value), one a header nested deeper than the envelope carries. The first
    crosses the link and arrives with its name and value as sent; the second is quarantined at the
    city hall as ``unsealable``; the other 38 arrive; nothing is dead-lettered (old code: 40 of 40)."""
    source, store = sealed_link(world)
    world.start("datacenter")
    poison, deep = 7, 23
    ids: list[str] = []
    with world.view("cityhall") as city:  # all waiting before the city hall's jgw takes them: one batch
        city.declare_source(world.sites["cityhall"].config, world.r("ido-file-to-dc"))
        for i in range(COUNT):
            headers: dict[Any, Any] = {"x-shinsei-no": f"{i:05d}"}
            if i == poison:
                headers[b"\xff\xfe\x80"] = b"\x00\xff"
            if i == deep:
                headers.update(too_deep())
            ids.append(publish(city, source, b"file %d" % i, headers=headers))
    world.start("cityhall")
    with world.view("datacenter") as dc:
        got = {m.message_id: m for m in dc.drain(store, expect=COUNT - 1, timeout=60, idle=1.0)}
    assert set(got) == set(ids) - {ids[deep]}
    arrived = got[ids[poison]]
    assert arrived.body == b"file 7"
    assert arrived.headers[b"\xff\xfe\x80"] == b"\x00\xff" and arrived.headers["x-shinsei-no"] == "00007"
    city_cfg = world.sites["cityhall"].config
    quarantined = [r for r in set_aside(city_cfg, "quarantine") if r["id"] in ids]
    assert [(r["id"], r["reason"]) for r in quarantined] == [(ids[deep], "unsealable")]
    assert [r for r in set_aside(city_cfg, "dlq") if r["id"] in ids] == []
