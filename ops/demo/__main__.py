"""``make demo``: two sites, a city hall (市役所) and a vendor data centre (データセンター).

What it shows, with real RabbitMQ nodes, real TLS and two real ``jgw run`` processes:

- each site is its own broker (a private RabbitMQ node) plus its own jgw, configured from
  ``config/examples/cityhall.toml`` and ``datacenter.toml`` (the seed's flows, from the catalog);
- certificates from ``jgw pki init-dev``; the data centre's broker takes mTLS with EXTERNAL login;
- 本人確認情報の更新 (jimu:1-⑥) in 異動 order per person; 副本登録 (chukan:3-③), a route that must not
  carry the 個人番号 — two messages that do are quarantined; 情報照会 (chukan:4-①) to a 統合宛名 queue
  that was never set up — retried, then dead-lettered with the reason;
- files: the OCR 異動受付 system's 異動対象者情報ファイル (ido-ocr:⑤), left with their 終了ファイル on its
  SFTP server (a private OpenSSH sshd), taken by the city hall's jgw, sealed frame by frame for the
  data centre while the LGWAN link is cut for a while (a fault proxy in the middle), opened at the
  data centre and written to its storage byte-identical under their names (a Shift_JIS one, large ones
  in chunks); 既存住基 pushing 住民票関係情報 files to jgw's own SFTP endpoint with the OpenSSH sftp
  client, delivered to 統合宛名's SFTP server (a second sshd); 既存業務 pushing 副本 files, one of
  which carries a 個人番号 and is quarantined on that forbidden route;
- then counts every message by id and every file by name and ends with one line:
  ``demo: sent=N delivered=N quarantined=Q dead-lettered=D lost=0``.

Everything lives under ``demo-out/`` (logs, configs, state, audit trails, the data centre's storage);
every broker node, sshd and process it starts is stopped at the end. The private sshd needs root
(``tests/lab/sshd.py``; ``make demo`` installs openssh-server as ``make test`` does).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import shutil
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.options import redact_url
from gateway.pki.devinit import init_dev
from tests.lab import synth
from tests.lab.faultproxy import FaultProxyServer
from tests.lab.harness import Amqp, JgwProcess, toml_value
from tests.lab.rabbitnode import PrivateNode, TlsListener, free_port, start_together
from tests.lab.sshd import PrivateSshd, keygen, known_hosts_line, openssh_sftp, usable

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "demo-out"
EXAMPLES = ROOT / "config" / "examples"

PERSONS = 10
HONNIN = 120  # 本人確認情報の更新, 12 per person
FUKUHON = 60  # 副本登録 (must not carry the 個人番号); 2 of them do by mistake
OCR_FILES = 100  # 異動対象者情報ファイル, files on the OCR system's SFTP server, sealed to the data centre
OCR_LARGE = (40, 80)  # these two are 6 MiB: two 4 MiB chunks and a manifest each
JUKI_FILES = 5  # 住民票関係情報 files pushed by 既存住基 to jgw's endpoint
FUKUHON_FILES = 3  # 副本 files pushed by 既存業務; the second carries a 個人番号
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
        if value is None:
            node.pop(last, None)  # a key the rehearsal does without
        else:
            node[last] = value
    return data


def start_nodes(pki: Any) -> tuple[PrivateNode, PrivateNode]:
    city = PrivateNode(base=OUT / "brokers", name="jgwdemo-cityhall")
    dc = PrivateNode(base=OUT / "brokers", name="jgwdemo-dc",
                     tls=TlsListener(cacert=pki.broker_ca, cert=pki.broker_cert, key=pki.broker_key))
    start_together([city, dc])
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
                 if r["sink"].get("broker") == "local" and r["sink"]["exchange"]}
    for ex in sorted(exchanges):
        city.declare_exchange(ex)
    queues = {"honnin-update": "demo.cs.honnin-update", "fukuhon-register": "demo.chukan.fukuhon"}
    for route, queue in queues.items():
        sink = config["routes"][route]["sink"]
        city.declare_queue(queue)
        city.bind(queue, sink["exchange"], sink["routing_key"])
    # chukan:4-① goes to atena.in/shokai: deliberately no queue bound there (not set up yet)
    return queues


#: The city hall example's file routes on the demo's private sshd (its uploads under /upload) and
#: scanned often, so a compressed run sees files within a fraction of a second.
FILE_ROUTE_DIRS: dict[str, Any] = {
    "routes.ido-file-to-dc.source.directory": "/upload/outbox",
    "routes.ido-file-to-dc.source.scan_interval": "200ms",
    "routes.atena-renkei.sink.directory": "/upload/juminhyo",
    "routes.atena-renkei.source.scan_interval": "200ms",
    "routes.fukuhon-update.sink.directory": "/upload/fukuhon",
    "routes.fukuhon-update.source.scan_interval": "200ms",
}


def sftp_login(name: str, server: PrivateSshd, out: Path = OUT) -> dict[str, Any]:
    """What the city hall's staff set up for an SFTP server: jgw's key (installed at the server) and
    the server's pinned host key (``out``: the run's directory; ops/cityday shares this)."""
    keys = out / "cityhall" / "sftp"
    keys.mkdir(parents=True, exist_ok=True)
    key = keygen(keys / f"{name}_ed25519", "jgw-cityhall")
    server.authorize(key)
    (keys / f"{name}.known_hosts").write_text(known_hosts_line("127.0.0.1", server.port, server.host_key))
    return {f"sftp.{name}.host": "127.0.0.1", f"sftp.{name}.port": server.port, f"sftp.{name}.user": "root",
            f"sftp.{name}.client_key": str(key), f"sftp.{name}.known_hosts": str(keys / f"{name}.known_hosts")}


def endpoint_setup(port: int, accounts: dict[str, Path], out: Path = OUT
                   ) -> tuple[dict[str, Any], Path, dict[str, Path]]:
    """jgw's endpoint: its host key, and per business system a client key and an authorized_keys file."""
    keys = out / "cityhall" / "endpoint"
    keys.mkdir(parents=True, exist_ok=True)
    host = keygen(keys / "endpoint_ed25519", "jgw-endpoint")
    changes: dict[str, Any] = {"endpoint.listen": f"127.0.0.1:{port}", "endpoint.host_key": str(host)}
    clients = {}
    for name, directory in accounts.items():
        directory.mkdir(parents=True, exist_ok=True)
        clients[name] = keygen(keys / f"{name}_client", name)
        auth = keys / f"{name}.pub"
        auth.write_text(clients[name].with_name(clients[name].name + ".pub").read_text())
        changes[f"endpoint.accounts.{name}.authorized_keys"] = str(auth)
        changes[f"endpoint.accounts.{name}.directory"] = str(directory)
    known = keys / "known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", port, host))
    return changes, known, clients


def ocr_file(rng: random.Random, i: int) -> tuple[bytes, bytes]:
    """One synthetic 異動対象者情報ファイル (its name, its bytes): form data with a 個人番号, then scans."""
    name = "異動対象者情報ファイル_ソ表_0007.csv".encode("shift_jis") if i == 7 else f"ido_{i:05d}.dat".encode()
    form = f"異動届 申請番号={i:05d} 個人番号={synth.valid_personal_number(rng)} 氏名=シンセイ\u3000タロウ\n"
    size = 6 * 1024 * 1024 if i in OCR_LARGE else 2048 + rng.randrange(8192)
    return name, form.encode("cp932") + rng.randbytes(size)


def listing(directory: Path) -> set[bytes]:
    """The files visible under their own names (jgw's temporaries and subdirectories left out)."""
    if not directory.is_dir():
        return set()
    return {n for n in os.listdir(os.fsencode(directory)) if not n.startswith(b".jgw-")
            and os.path.isfile(os.path.join(os.fsencode(directory), n))}


def wait_listing(directory: Path, names: set[bytes], timeout: float) -> set[bytes]:
    deadline = time.monotonic() + timeout
    while listing(directory) < names and time.monotonic() < deadline:
        time.sleep(0.2)
    return listing(directory) & names


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    reason = usable()
    if reason:
        print(f"demo: the file routes need a private OpenSSH sshd: {reason}", file=sys.stderr)
        return 69
    rng = random.Random(20261125)
    started = time.monotonic()
    say("making a development PKI (jgw pki init-dev) for cityhall and datacenter")
    pki = init_dev(OUT / "pki", ["cityhall", "datacenter"], dt.datetime.now(dt.UTC))
    say("starting two RabbitMQ nodes: the city hall's, and the data centre's (TLS, mTLS, EXTERNAL)")
    city_node, dc_node = start_nodes(pki)
    procs: list[JgwProcess] = []
    proxy = FaultProxyServer().start()
    servers: list[PrivateSshd] = []
    try:
        say("starting the OCR system's SFTP server and 統合宛名's (private OpenSSH sshd instances)")
        ocr_sshd, atena_sshd = PrivateSshd().start(), PrivateSshd().start()
        servers += [ocr_sshd, atena_sshd]
        (ocr_sshd.upload / "outbox").mkdir()
        for d in ("juminhyo", "fukuhon"):
            (atena_sshd.upload / d).mkdir()
        proxy.configure_client()
        from toxiproxy import Toxiproxy

        lgwan = Toxiproxy().create(upstream=f"127.0.0.1:{dc_node.tls.port}", name="lgwan")  # type: ignore[union-attr]
        lgwan_port = int(lgwan.listen.rsplit(":", 1)[1])
        say(f"LGWAN between the sites runs through a fault proxy (127.0.0.1:{lgwan_port} → data centre)")

        city_url = f"amqp://guest:guest@127.0.0.1:{city_node.amqp_port}/juki"
        ep_port = free_port()
        spool = {"kizon-juki": OUT / "cityhall" / "spool" / "kizon-juki",
                 "kizon-gyomu": OUT / "cityhall" / "spool" / "kizon-gyomu"}
        ep_changes, ep_known, ep_clients = endpoint_setup(ep_port, spool)
        store = OUT / "datacenter" / "ido-store"
        store.mkdir(parents=True)
        city_cfg = site_config("cityhall", {
            "node.state_dir": str(OUT / "cityhall" / "state"), "node.certs_dir": str(pki.nodes["cityhall"]),
            "node.metrics_listen": f"127.0.0.1:{free_port()}",
            "brokers.local.urls": [city_url],  # guest on the private node: no password file here
            "brokers.local.credential": None, "brokers.local.password_file": None,
            "brokers.datacenter.urls": [f"amqps://localhost:{lgwan_port}/ido"],
            "brokers.datacenter.reconnect_max": "2s",
            "brokers.datacenter.tls.server_hostname": "localhost",
            "defaults.retry": ["1s", "2s"],
            **FILE_ROUTE_DIRS,
            **sftp_login("ocr", ocr_sshd), **sftp_login("atena", atena_sshd), **ep_changes,
        })
        dc_cfg = site_config("datacenter", {
            "node.state_dir": str(OUT / "datacenter" / "state"), "node.certs_dir": str(pki.nodes["datacenter"]),
            "node.metrics_listen": f"127.0.0.1:{free_port()}",
            "brokers.local.urls": [f"amqps://localhost:{dc_node.tls.port}/ido"],  # type: ignore[union-attr]
            "brokers.local.tls.server_hostname": "localhost",
            "routes.ido-file-store.sink.directory": str(store),
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
        ocr_files: dict[bytes, bytes] = {}
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
            outbox = ocr_sshd.upload / "outbox"
            for i in range(OCR_FILES):
                if i == OCR_FILES // 3:
                    lgwan.disable()
                    say(f"LGWAN link DOWN (for {LGWAN_OUTAGE:.0f}s); files keep arriving at the OCR server")
                    cut_at = time.monotonic()
                if i == 2 * OCR_FILES // 3:
                    time.sleep(max(0.0, LGWAN_OUTAGE - (time.monotonic() - cut_at)))
                    waiting = procs[1].status()["routes"]
                    held = next(r for r in waiting if r["route"] == "ido-file-to-dc")
                    lgwan.enable()
                    say(f"LGWAN link UP again (ido-file-to-dc was '{held['state']}', {len(held['files'])} files "
                        f"waiting at the OCR server, none lost)")
                name, body = ocr_file(rng, i)
                with open(os.path.join(os.fsencode(outbox), name), "wb") as f:
                    f.write(body)
                with open(os.path.join(os.fsencode(outbox), name + b".end"), "wb"):
                    pass  # the 終了ファイル: the file is complete
                ocr_files[name] = body
                time.sleep(0.05)
            say(f"the OCR system left {OCR_FILES} 異動対象者情報ファイル (ido-ocr:⑤) on its SFTP server, two of them "
                "6 MiB, one with a Shift_JIS name; sealed for the data centre frame by frame")

            # 庁内 file linkage: 既存住基 and 既存業務 push files to jgw's endpoint (OpenSSH sftp client)
            pushed = OUT / "cityhall" / "to-push"
            pushed.mkdir()
            juki = {f"juminhyo_{i:03d}.csv".encode(): "".join(
                f"{i:03d},{synth.valid_personal_number(rng)},シンセイ\n" for _ in range(40)).encode("cp932")
                for i in range(JUKI_FILES)}
            fukuhon = {f"fukuhon_{i:03d}.csv".encode(): (f"宛名番号={100000 + i} 副本\n" + (
                f"個人番号={synth.valid_personal_number(rng)}\n" if i == 1 else "")).encode("cp932")
                for i in range(FUKUHON_FILES)}
            for account, files in (("kizon-juki", juki), ("kizon-gyomu", fukuhon)):
                batch = ""
                for fname, data in files.items():
                    (pushed / fname.decode()).write_bytes(data)
                    batch += f"put {pushed / fname.decode()} {fname.decode()}.part\n"
                    batch += f"rename {fname.decode()}.part {fname.decode()}\n"
                r = openssh_sftp(ep_port, ep_clients[account], ep_known, batch, user=account)
                if r.returncode != 0:
                    raise RuntimeError(f"sftp push as {account} failed: {r.stderr.decode(errors='replace')}")
            say(f"既存住基 pushed {JUKI_FILES} 住民票関係情報 files (jimu:1-⑫/1) and 既存業務 {FUKUHON_FILES} 副本 "
                "files (chukan:3-②, no 個人番号 allowed; one carries one) to jgw's SFTP endpoint")

            messages = sum(len(v) for v in sent.values())
            # collect what the receiving systems got
            got_honnin = city.drain(queues["honnin-update"], expect=HONNIN, timeout=60)
            got_fukuhon = city.drain(queues["fukuhon-register"], expect=FUKUHON - len(pn_ids), timeout=60)

        delivered = Counter(m.message_id for m in got_honnin + got_fukuhon)
        # what the city hall set aside: ask jgw, as an operator would
        quarantined, dead = set_aside(paths["cityhall"], set(pn_ids) | set(sent["shokai-request"]))
        all_sent = {mid for ids in sent.values() for mid in ids}
        accounted = set(delivered) | quarantined | dead
        lost = len(all_sent - accounted)
        duplicates = sum(n - 1 for n in delivered.values())

        # files, by name, where they must end: the data centre's storage, 統合宛名's server, quarantine
        got_ocr = wait_listing(store, set(ocr_files), 180)
        got_juki = wait_listing(atena_sshd.upload / "juminhyo", set(juki), 60)
        clean_fukuhon = {n for n in fukuhon if n != b"fukuhon_001.csv"}
        got_fukuhon_files = wait_listing(atena_sshd.upload / "fukuhon", clean_fukuhon, 60)
        q_files = wait_listing(spool["kizon-gyomu"] / "quarantine", {b"fukuhon_001.csv"}, 60)
        ocr_ok = all(Path(os.fsdecode(os.path.join(os.fsencode(store), n))).read_bytes() == ocr_files[n]
                     for n in got_ocr)
        juki_ok = all((atena_sshd.upload / "juminhyo" / n.decode()).read_bytes() == juki[n] for n in got_juki)
        files_sent = len(ocr_files) + len(juki) + len(fukuhon)
        files_delivered = len(got_ocr) + len(got_juki) + len(got_fukuhon_files)
        files_lost = files_sent - files_delivered - len(q_files)

        per_person_ok = all([m.message_id for m in got_honnin if m.headers.get("x-order-key") == p] == ids
                            for p, ids in order.items())
        say(f"本人確認情報: {len(got_honnin)}/{HONNIN} delivered, order per person kept: {per_person_ok}")
        say(f"副本登録: {len(got_fukuhon)} delivered, {len(quarantined & set(pn_ids))} quarantined "
            f"(reason personal-number)")
        say(f"情報照会: {len(dead & set(sent['shokai-request']))} dead-lettered (reason unroutable), "
            "replayable with jgw dlq replay once the queue exists")
        say(f"OCR files in the data centre's storage: {len(got_ocr)}/{OCR_FILES}, byte-identical under their "
            f"names after seal/open: {ocr_ok}")
        say(f"住民票関係情報 files at 統合宛名: {len(got_juki)}/{JUKI_FILES}, byte-identical: {juki_ok}; 副本 files: "
            f"{len(got_fukuhon_files)} delivered, {len(q_files)} quarantined (its 個人番号, in "
            "kizon-gyomu/quarantine/)")
        if duplicates:
            say(f"{duplicates} duplicate deliveries (same ids)")
        ok = lost == 0 and files_lost == 0 and per_person_ok and ocr_ok and juki_ok and duplicates == 0
        say(f"logs, configs, audit trails, storage: {OUT.relative_to(ROOT)}/  ({time.monotonic() - started:.0f}s)")
        print(f"demo: sent={messages + files_sent} delivered={len(delivered) + files_delivered} "
              f"quarantined={len(quarantined) + len(q_files)} dead-lettered={len(dead)} lost={lost + files_lost}",
              flush=True)
        return 0 if ok else 1
    finally:
        for proc in procs:
            proc.stop()
        for server in servers:
            with contextlib.suppress(Exception):
                server.destroy()
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
