"""``make demo``: two sites, a city hall (市役所) and a vendor data centre (データセンター).

What it shows, with real RabbitMQ nodes, real TLS and two real ``jgw run`` processes:

- each site is its own broker (a private RabbitMQ node) plus its own jgw, configured from
  ``config/examples/cityhall.toml`` and ``datacenter.toml`` (the seed's flows, from the catalog);
- certificates from ``jgw pki init-dev``; the data centre's broker takes mTLS with EXTERNAL login;
- 本人確認情報の更新 (jimu:1-⑥) in 異動 order per person; 副本登録 (chukan:3-③), a route that must not
  carry the 個人番号 — two messages that do are quarantined; OCR 異動対象者情報ファイル to the data
  centre (ido-ocr:⑤), sealed at the city hall, opened at the data centre, while the LGWAN link is
  cut for a while (a fault proxy in the middle); 情報照会 (chukan:4-①) to a 統合宛名 queue that was
  never set up — retried, then dead-lettered with the reason;
- then counts every message by id and ends with one line:
  ``demo: sent=N delivered=N quarantined=Q dead-lettered=D lost=0``.

Everything lives under ``demo-out/`` (logs, configs, state, audit trails); every broker node and
process it starts is stopped at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import shutil
import sys
import threading
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.config import redact_url
from gateway.pki.devinit import init_dev
from gateway.testing import synth
from gateway.testing.faultproxy import FaultProxyServer
from gateway.testing.harness import Amqp, JgwProcess, toml_value
from gateway.testing.rabbitnode import PrivateNode, TlsListener, free_port

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "demo-out"
EXAMPLES = ROOT / "config" / "examples"

PERSONS = 10
HONNIN = 120  # 本人確認情報の更新, 12 per person
FUKUHON = 60  # 副本登録 (must not carry the 個人番号); 2 of them do by mistake
OCR_FILES = 100  # 異動対象者情報ファイル, sealed to the data centre
SHOKAI = 10  # 情報照会 to a queue that does not exist: dead letters
LGWAN_OUTAGE = 8.0  # seconds the link to the data centre is cut


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def dump_toml(data: dict[str, Any]) -> str:
    """TOML for a config dict: tables written out, lists of tables inline (enough for jgw configs)."""
    lines: list[str] = []

    def table(prefix: str, value: dict[str, Any]) -> None:
        scalars = {k: v for k, v in value.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in value.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"\n[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {toml_value(v)}")
        for k, v in tables.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", data)
    return "\n".join(lines).lstrip() + "\n"


def site_config(name: str, changes: dict[str, Any]) -> dict[str, Any]:
    data = tomllib.loads((EXAMPLES / f"{name}.toml").read_text(encoding="utf-8"))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


def start_nodes(pki: Any) -> tuple[PrivateNode, PrivateNode]:
    city = PrivateNode(base=OUT / "brokers", name="jgwdemo-cityhall")
    dc = PrivateNode(base=OUT / "brokers", name="jgwdemo-dc",
                     tls=TlsListener(cacert=pki.broker_ca, cert=pki.broker_cert, key=pki.broker_key))
    errors: list[BaseException] = []

    def boot(node: PrivateNode) -> None:
        try:
            node.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(n,)) for n in (city, dc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    city.add_vhost("juki")
    dc.add_vhost("ido")
    for user in ("cityhall", "datacenter"):  # EXTERNAL login: the user is the certificate's CN
        dc.ctl("add_user", user, synth_password())
        dc.ctl("clear_password", user)
        dc.ctl("set_permissions", "-p", "ido", user, ".*", ".*", ".*")
    return city, dc


def synth_password() -> str:
    return "".join(random.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(24))


def declare_business_queues(city: Amqp, config: dict[str, Any]) -> dict[str, str]:
    """The business systems' side: every sink exchange exists; a queue for each route we use."""
    exchanges = {r["sink"]["exchange"] for r in config["routes"].values()
                 if r["sink"]["broker"] == "local" and r["sink"]["exchange"]}
    for ex in sorted(exchanges):
        city.declare_exchange(ex)
    queues = {"honnin-update": "demo.cs.honnin-update", "fukuhon-register": "demo.chukan.fukuhon"}
    for route, queue in queues.items():
        sink = config["routes"][route]["sink"]
        city.declare_queue(queue)
        city.bind(queue, sink["exchange"], sink["routing_key"])
    # chukan:4-① goes to atena.in/shokai: deliberately no queue bound there (not set up yet)
    return queues


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    rng = random.Random(20261125)
    started = time.monotonic()
    say("making a development PKI (jgw pki init-dev) for cityhall and datacenter")
    pki = init_dev(OUT / "pki", ["cityhall", "datacenter"], dt.datetime.now(dt.UTC))
    say("starting two RabbitMQ nodes: the city hall's, and the data centre's (TLS, mTLS, EXTERNAL)")
    city_node, dc_node = start_nodes(pki)
    procs: list[JgwProcess] = []
    proxy = FaultProxyServer().start()
    try:
        proxy.configure_client()
        from toxiproxy import Toxiproxy

        lgwan = Toxiproxy().create(upstream=f"127.0.0.1:{dc_node.tls.port}", name="lgwan")  # type: ignore[union-attr]
        lgwan_port = int(lgwan.listen.rsplit(":", 1)[1])
        say(f"LGWAN between the sites runs through a fault proxy (127.0.0.1:{lgwan_port} → data centre)")

        city_url = f"amqp://guest:guest@127.0.0.1:{city_node.amqp_port}/juki"
        city_cfg = site_config("cityhall", {
            "node.state_dir": str(OUT / "cityhall" / "state"), "node.certs_dir": str(pki.nodes["cityhall"]),
            "node.metrics_listen": f"127.0.0.1:{free_port()}",
            "brokers.local.urls": [city_url],
            "brokers.datacenter.urls": [f"amqps://localhost:{lgwan_port}/ido"],
            "brokers.datacenter.reconnect_max": "2s",
            "brokers.datacenter.tls.server_hostname": "localhost",
            "defaults.retry": ["1s", "2s"],
        })
        dc_cfg = site_config("datacenter", {
            "node.state_dir": str(OUT / "datacenter" / "state"), "node.certs_dir": str(pki.nodes["datacenter"]),
            "node.metrics_listen": f"127.0.0.1:{free_port()}",
            "brokers.local.urls": [f"amqps://localhost:{dc_node.tls.port}/ido"],  # type: ignore[union-attr]
            "brokers.local.tls.server_hostname": "localhost",
        })
        paths = {}
        for name, data in (("cityhall", city_cfg), ("datacenter", dc_cfg)):
            (OUT / name).mkdir(exist_ok=True)
            paths[name] = OUT / name / "jgw.toml"
            paths[name].write_text(f"# made by ops/demo from config/examples/{name}.toml\n" + dump_toml(data))

        with Amqp(city_url) as city:
            queues = declare_business_queues(city, city_cfg)
        say(f"starting jgw at the city hall ({len(city_cfg['routes'])} routes) and at the data centre "
            f"({len(dc_cfg['routes'])} route)")
        for name in ("datacenter", "cityhall"):
            proc = JgwProcess(paths[name], log_path=OUT / name / "jgw.log")
            procs.append(proc.start(timeout=90))

        sent: dict[str, list[str]] = {}
        order: dict[str, list[str]] = {}
        ocr_files: dict[str, bytes] = {}
        pn_ids: list[str] = []
        with Amqp(city_url) as city:
            # 本人確認情報の更新 (1-⑥): carries the 個人番号, order kept per person
            persons = [f"person-{i:02d}" for i in range(PERSONS)]
            sent["honnin-update"] = []
            for i in range(HONNIN):
                person = persons[i % PERSONS]
                # a fixed-length 住民記録-like record with a (synthetic) 個人番号 field: allowed on 1-⑥
                body = synth.fixed_record(rng, "cp932", synth.valid_personal_number(rng)).data
                [mid] = city.publish(city_cfg["routes"]["honnin-update"]["source"]["queue"], [body],
                                     headers={"x-order-key": person})
                sent["honnin-update"].append(mid)
                order.setdefault(person, []).append(mid)
            say(f"sent {HONNIN} 本人確認情報 updates for {PERSONS} persons (jimu:1-⑥, order kept per person)")

            # 副本登録 (chukan:3-③): must not carry the 個人番号; two messages do by mistake
            sent["fukuhon-register"] = []
            for i in range(FUKUHON):
                atena = f"{100000 + i}"
                text = f"団体内統合宛名番号={atena} 副本 区分=住民票関係情報 連番={i:04d}"
                if i in (17, 42):
                    text += f" 個人番号={synth.valid_personal_number(rng)}"
                [mid] = city.publish(city_cfg["routes"]["fukuhon-register"]["source"]["queue"],
                                     [text.encode("utf-8")], headers={"x-order-key": atena})
                sent["fukuhon-register"].append(mid)
                if i in (17, 42):
                    pn_ids.append(mid)
            say(f"sent {FUKUHON} 副本登録 messages (chukan:3-③, no 個人番号 allowed; 2 carry one by mistake)")

            # 情報照会 (chukan:4-①): nobody set up the 統合宛名 queue
            sent["shokai-request"] = city.publish(city_cfg["routes"]["shokai-request"]["source"]["queue"],
                                                  [f"照会 {i}".encode("cp932") for i in range(SHOKAI)])
            say(f"sent {SHOKAI} 情報照会 requests (chukan:4-①) to a 統合宛名 queue that is not set up")

            # OCR 異動対象者情報ファイル → data centre over LGWAN, sealed; cut the link half way
            source = city_cfg["routes"]["ido-file-to-dc"]["source"]["queue"]
            sent["ido-file-to-dc"] = []
            for i in range(OCR_FILES):
                if i == OCR_FILES // 3:
                    lgwan.disable()
                    say(f"LGWAN link DOWN (for {LGWAN_OUTAGE:.0f}s); files keep arriving at the city hall")
                    cut_at = time.monotonic()
                if i == 2 * OCR_FILES // 3:
                    time.sleep(max(0.0, LGWAN_OUTAGE - (time.monotonic() - cut_at)))
                    waiting = procs[1].status()["routes"]
                    held = next(r for r in waiting if r["route"] == "ido-file-to-dc")
                    lgwan.enable()
                    say(f"LGWAN link UP again (ido-file-to-dc was '{held['state']}', "
                        f"{held['in_flight']} files held, none lost)")
                body = f"異動対象者情報ファイル {i:04d}\n".encode() + bytes(rng.getrandbits(8) for _ in range(2048))
                [mid] = city.publish(source, [body])
                ocr_files[mid] = body
                sent["ido-file-to-dc"].append(mid)
                time.sleep(0.05)
            say(f"sent {OCR_FILES} OCR 異動対象者情報ファイル (ido-ocr:⑤), sealed for the data centre only")

            total = sum(len(v) for v in sent.values())
            # collect what the receiving systems got
            got_honnin = city.drain(queues["honnin-update"], expect=HONNIN, timeout=60)
            got_fukuhon = city.drain(queues["fukuhon-register"], expect=FUKUHON - len(pn_ids), timeout=60)
        with Amqp(f"amqp://guest:guest@127.0.0.1:{dc_node.amqp_port}/ido") as dc:
            got_files = dc.drain("ido-file.store", expect=OCR_FILES, timeout=90)

        delivered = Counter(m.message_id for m in got_honnin + got_fukuhon + got_files)
        # what the city hall set aside: ask jgw, as an operator would
        quarantined, dead = set_aside(paths["cityhall"], set(pn_ids) | set(sent["shokai-request"]))
        all_sent = {mid for ids in sent.values() for mid in ids}
        accounted = set(delivered) | quarantined | dead
        lost = len(all_sent - accounted)
        duplicates = sum(n - 1 for n in delivered.values())

        per_person_ok = all([m.message_id for m in got_honnin if m.headers.get("x-order-key") == p] == ids
                            for p, ids in order.items())
        files_ok = all(ocr_files.get(m.message_id) == m.body for m in got_files)
        say(f"本人確認情報: {len(got_honnin)}/{HONNIN} delivered, order per person kept: {per_person_ok}")
        say(f"副本登録: {len(got_fukuhon)} delivered, {len(quarantined & set(pn_ids))} quarantined "
            f"(reason personal-number)")
        say(f"OCR files at the data centre: {len(got_files)}/{OCR_FILES}, byte-identical after seal/open: "
            f"{files_ok}")
        say(f"情報照会: {len(dead & set(sent['shokai-request']))} dead-lettered (reason unroutable), "
            "replayable with jgw dlq replay once the queue exists")
        if duplicates:
            say(f"{duplicates} duplicate deliveries (same ids)")
        ok = lost == 0 and per_person_ok and files_ok and duplicates == 0
        say(f"logs, configs, audit trails: {OUT.relative_to(ROOT)}/  ({time.monotonic() - started:.0f}s)")
        print(f"demo: sent={total} delivered={len(delivered)} quarantined={len(quarantined)} "
              f"dead-lettered={len(dead)} lost={lost}", flush=True)
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.stop()
        proxy.stop()
        for node in (city_node, dc_node):
            with contextlib.suppress(Exception):
                node.stop()


def set_aside(config: Path, ids: set[str]) -> tuple[set[str], set[str]]:
    """Wait until jgw has set these ids aside; return (quarantined, dead-lettered)."""
    import io
    import json
    from contextlib import redirect_stdout

    from gateway.cli import main as jgw

    def listing(verb: str) -> set[str]:
        buf = io.StringIO()
        with redirect_stdout(buf):
            jgw([verb, "list", str(config), "--json"])
        return {row["id"] for row in json.loads(buf.getvalue())}

    deadline = time.monotonic() + 60
    while True:
        q, d = listing("quarantine"), listing("dlq")
        if ids <= (q | d) or time.monotonic() > deadline:
            return q, d
        time.sleep(0.5)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # one line for the operator; details in demo-out/
        print(f"demo: FAILED: {type(exc).__name__}: {redact_url(str(exc))}", file=sys.stderr)
        raise
