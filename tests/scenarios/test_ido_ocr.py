"""Scenario: OCR 異動受付 → the vendor's data centre over LGWAN (seed ido-ocr:⑤): city hall, data centre."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.envelope.codec import CONTENT_TYPE
from gateway.message import JGW_HEADER_PREFIX
from tests.lab import synth
from tests.scenarios.sites import World, deliveries, publish, wait_for

FILES = 12


def ocr_sites(world: World) -> tuple[str, str, str]:
    """The city hall seals ido-ocr:⑤ for the data centre; the data centre opens it and stores it."""
    source, store = world.q("ocr.ido-file"), world.q("ido-file.store")
    world.write("datacenter", {world.r("ido-file-store"): world.inbound(
        "ido-ocr:⑤", sender="cityhall", name="ido-file", max_size="65MiB",
        sink={"broker": "local", "exchange": "", "routing_key": store, "queue": store})})
    world.write("cityhall", {world.r("ido-file-to-dc"): world.outbound(
        "cityhall", "ido-ocr:⑤", to="datacenter", name="ido-file", queue=source, max_size="64MiB")},
        peers={"datacenter": world.brokers.jgw_broker("datacenter")})
    return source, world.q("jgw.in.ido-file"), store


def application_file(rng: random.Random, i: int) -> tuple[bytes, str]:
    """One 異動対象者情報ファイル: form data with a (synthetic) 個人番号, then scan/signature bytes."""
    number = synth.valid_personal_number(rng)
    form = f"異動届 申請番号={i:05d} 個人番号={number} 氏名=シンセイ\u3000タロウ\n".encode()
    return form + rng.randbytes(rng.randrange(2048, 48 * 1024)), number


def test_ocr_file_sealed_at_the_city_hall_opens_byte_identical_at_the_data_centre(world: World) -> None:
    """Seed ido-ocr:⑤ (「異動対象者情報ファイル」が…LGWAN経由でサービス提供者のデータセンターで保管).
    ①–④ happen at the counter and inside the OCR system, ⑥–⑦ are print-outs and staff work: no route.

    Each application's file is published at the city hall, sealed there for the data centre only,
    crosses to the data centre's broker (mTLS), is opened by the data centre's jgw and stored: the
    bytes, message id and the OCR system's properties arrive as sent. With the data centre's jgw
    stopped, a file waits in its inbound queue; what sits there is only an envelope (envelope content
    type, jgw's own headers only, none of the OCR system's headers or properties, payload not in the
    clear bytes), and it is delivered intact when the data centre's jgw comes back."""
    source, inbound, store = ocr_sites(world)
    world.start("datacenter", "cityhall")
    rng = random.Random(5)
    sent: dict[str, bytes] = {}
    with world.view("cityhall") as city:
        for i in range(FILES):
            body, _ = application_file(rng, i)
            mid = publish(city, source, body, content_type="application/x-ido-taisho",
                          headers={"x-ocr-terminal": f"madoguchi-{i % 3}", "x-shinsei-no": f"{i:05d}"})
            sent[mid] = body
    with world.view("datacenter") as dc:
        got = dc.drain(store, expect=FILES, timeout=60, idle=0.5)
    assert sorted(m.message_id for m in got) == sorted(sent), "every file arrives once, by its own id"
    for m in got:
        assert m.body == sent[m.message_id], "stored bytes identical to what the OCR system sent"
        assert m.properties.content_type == "application/x-ido-taisho"
        assert m.headers["x-ocr-terminal"].startswith("madoguchi-")

    # what crosses LGWAN and waits at the data centre: stop its jgw, send one more file
    world.sites["datacenter"].proc.stop()
    body, number = application_file(rng, 99)
    with world.view("cityhall") as city:
        mid = publish(city, source, body, content_type="application/x-ido-taisho",
                      correlation_id="shinsei-00099",
                      headers={"x-ocr-terminal": "madoguchi-9", "x-shinsei-no": "SN-7731"})
    with world.view("datacenter") as dc:
        wait_for(lambda: dc.depth(inbound) == 1, timeout=30, what="the file waiting at the data centre")
        ch = dc.conn.channel()
        method, props, wire = ch.basic_get(inbound, auto_ack=False)
        assert method is not None
        ch.basic_nack(method.delivery_tag, requeue=True)
        ch.close()
    assert props.content_type == CONTENT_TYPE
    assert props.message_id == mid, "the id is the one signed into the envelope"
    assert props.correlation_id is None and props.type is None and props.app_id is None
    clear = {k for k in props.headers or {} if not k.startswith(JGW_HEADER_PREFIX)}
    assert clear <= {"x-delivery-count"}, f"only jgw's (and the broker's) headers in clear: {clear}"
    assert b"madoguchi" not in wire and b"SN-7731" not in wire
    assert number.encode() not in wire and "異動届".encode() not in wire
    assert all(body[i:i + 32] not in wire for i in range(0, len(body) - 32, 32)), "no 32-byte run in clear"
    envelope = world.tmp / "waiting.env"
    envelope.write_bytes(wire)
    header = inspect(envelope)
    assert (header["sender"], header["route"]) == ("cityhall", "ido-file")
    assert [r["node"] for r in header["recipients"]] == ["datacenter"], "sealed for the data centre only"
    # by design (docs/envelope.md §4) the signed header shows the content type and correlation id
    assert header["content_type"] == "application/x-ido-taisho"
    assert header["correlation_id"] == "shinsei-00099"

    world.sites["datacenter"].proc.start(timeout=60)
    with world.view("datacenter") as dc:
        [late] = dc.drain(store, expect=1, timeout=60, idle=0.5)
    assert (late.message_id, late.body, late.properties.correlation_id) == (mid, body, "shinsei-00099")

    # both sites' evidence records each file's delivery under the seed flow
    files = {*sent, mid}
    for site in ("cityhall", "datacenter"):
        assert {r["seed"] for r in deliveries(world.sites[site], files).values()} == {"ido-ocr:⑤"}


def inspect(envelope: Path) -> dict[str, Any]:
    """``jgw envelope inspect --json``: the signed header, as an operator reads it without any key."""
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "envelope", "inspect", str(envelope),
                          "--json"], capture_output=True, text=True, timeout=30, check=True)
    header: dict[str, Any] = json.loads(out.stdout)
    return header
