"""Scenario: the OCR flow with files (seed ido-ocr:⑤), and 庁内 file linkage at the city hall.

The OCR 異動受付 system leaves one 異動対象者情報ファイル per application on its SFTP server (a private
OpenSSH sshd), each followed by NAME.end; the city hall's jgw takes them, seals each frame for the
data centre only and publishes it over LGWAN (mTLS); the data centre's jgw opens them and writes the
files into its storage, byte-identical, under their names (a Shift_JIS one among them). Both audit
trails hold each file's SHA-256. 既存住基 pushes 住民票関係情報 files (jimu:1-⑫/1, may carry the 個人番号)
to jgw's own SFTP endpoint with the OpenSSH sftp client, delivered in order to 統合宛名's inbox; 既存業務
pushes 副本 files (chukan:3-②, must not carry it): one that does is quarantined, the others go."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.envelope.codec import CONTENT_TYPE
from gateway.files.settings import H_FILE
from tests.lab import synth
from tests.lab.rabbitnode import free_port
from tests.lab.sshd import PrivateSshd, keygen, known_hosts_line, openssh_sftp, usable
from tests.scenarios.sites import World, audit_records, catalog_route, seal, wait_for

SJIS_NAME = "異動対象者情報ファイル_ソ表_0007.csv".encode("shift_jis")  # ソ and 表 hold 0x5C bytes
CHUNK = 256 * 1024


@pytest.fixture
def ocr_sshd() -> Iterator[PrivateSshd]:
    reason = usable()
    if reason:
        pytest.skip(reason)
    with PrivateSshd() as server:
        (server.upload / "outbox").mkdir()
        yield server


def application_file(rng: random.Random, i: int, size: int) -> bytes:
    """One synthetic 異動対象者情報ファイル: form data with a 個人番号, then scan and signature bytes."""
    form = f"異動届 申請番号={i:05d} 個人番号={synth.valid_personal_number(rng)} 氏名=シンセイ\u3000タロウ\n"
    return form.encode("cp932") + rng.randbytes(size)


def file_route(ref: str, source: dict[str, Any], sink: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A catalog route as a file route: a flow ordered per person sends its files one at a time."""
    route = catalog_route(ref, source=source, sink=sink, **extra)
    if route.pop("ordering", None) is not None:
        source["in_order"] = True
    return route


def sftp_login(world: World, site: str, name: str, server: PrivateSshd) -> dict[str, Any]:
    keys = world.tmp / site / "sftp"
    keys.mkdir(parents=True, exist_ok=True)
    key = keygen(keys / f"{name}_ed25519", f"jgw-{site}")
    server.authorize(key)
    known = keys / f"{name}.known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", server.port, server.host_key))
    return {"host": "127.0.0.1", "port": server.port, "user": "root", "client_key": str(key),
            "known_hosts": str(known), "connect_timeout": "5s"}


def file_digests(records: list[dict[str, Any]], route: str) -> set[str]:
    return {r["file_sha256"] for r in records if r.get("ev") == "deliver" and r.get("route") == route
            and "file_sha256" in r}


def test_ocr_files_sealed_at_the_city_hall_are_stored_byte_identical_at_the_data_centre(
        world: World, ocr_sshd: PrivateSshd) -> None:
    rng = random.Random(5)
    store = world.tmp / "dc-store"
    store.mkdir()
    spool = {n: world.tmp / "spool" / n for n in ("kizon-juki", "kizon-gyomu")}
    atena = {n: world.tmp / "atena" / n for n in ("juminhyo", "fukuhon")}
    for d in (*spool.values(), *atena.values()):
        d.mkdir(parents=True)

    # the data centre: frames from the city hall, opened, written to storage
    world.write("datacenter", {world.r("ido-file-store"): world.inbound(
        "ido-ocr:⑤", sender="cityhall", name="ido-file", sink={"kind": "directory", "directory": str(store)})})
    # the city hall: the OCR server's files, sealed for the data centre; 庁内 files through the endpoint
    endpoint_port = free_port()
    certs = world.tmp / "cityhall" / "sftp"
    certs.mkdir(parents=True, exist_ok=True)
    host_key = keygen(certs / "endpoint_ed25519", "jgw-endpoint")
    clients = {n: keygen(world.tmp / f"{n}_client", n) for n in spool}
    for n, key in clients.items():
        (certs / f"{n}.pub").write_text(key.with_name(key.name + ".pub").read_text())
    tables = {"sftp": {"ocr": sftp_login(world, "cityhall", "ocr", ocr_sshd)},
              "endpoint": {"listen": f"127.0.0.1:{endpoint_port}", "host_key": str(certs / "endpoint_ed25519"),
                           "accounts": {n: {"authorized_keys": str(certs / f"{n}.pub"), "directory": str(d)}
                                        for n, d in spool.items()}}}
    ocr_source = {"kind": "sftp", "server": "ocr", "directory": "/upload/outbox", "scan_interval": "200ms",
                  "completion": {"rule": "trigger", "suffixes": [".end"]}, "chunk_size": "256KiB"}
    outbound = seal(file_route("ido-ocr:⑤", ocr_source, {"broker": "datacenter", "exchange": "jgw.in",
                                                         "routing_key": world.q("ido-file")}),
                    to="datacenter", name="ido-file")
    endpoint = {"completion": {"rule": "rename"}, "scan_interval": "200ms", "kind": "endpoint"}
    world.write("cityhall", {
        world.r("ido-file-to-dc"): outbound,
        world.r("atena-renkei"): file_route("jimu:1-⑫/1", {**endpoint, "account": "kizon-juki"},
                                            {"kind": "directory", "directory": str(atena["juminhyo"])}),
        world.r("fukuhon-update"): file_route("chukan:3-②", {**endpoint, "account": "kizon-gyomu"},
                                              {"kind": "directory", "directory": str(atena["fukuhon"])}),
    }, peers={"datacenter": world.brokers.jgw_broker("datacenter")}, tables=tables)
    world.start("datacenter", "cityhall")

    # the OCR system writes its files, then each one's 終了ファイル
    ocr: dict[bytes, bytes] = {}
    for i in range(10):
        name = SJIS_NAME if i == 7 else f"ido_{i:05d}.dat".encode()
        ocr[name] = application_file(rng, i, rng.randrange(2_000, 40_000) if i != 3 else 3 * 1024 * 1024)
    for name, data in ocr.items():
        with open(os.path.join(os.fsencode(ocr_sshd.upload / "outbox"), name), "wb") as f:
            f.write(data)
        with open(os.path.join(os.fsencode(ocr_sshd.upload / "outbox"), name + b".end"), "wb"):
            pass

    # 既存住基 and 既存業務 push through jgw's endpoint (temporary name, then rename)
    known = world.tmp / "endpoint.known_hosts"
    known.write_text(known_hosts_line("127.0.0.1", endpoint_port, host_key))
    local = world.tmp / "to-push"
    local.mkdir()
    juki = {f"juminhyo_{i:03d}.csv": "".join(f"{i:03d},{synth.valid_personal_number(rng)},シンセイ\n"
                                             for _ in range(50)).encode("cp932") for i in range(4)}
    number = synth.valid_personal_number(rng)
    fukuhon = {"fukuhon_000.csv": "宛名番号=100001 副本 区分=住民票関係情報\n".encode("cp932"),
               "fukuhon_001.csv": f"宛名番号=100002 副本 個人番号={number}\n".encode("cp932"),
               "fukuhon_002.csv": "宛名番号=100003 副本\n".encode("cp932") * 1000}
    for account, files in (("kizon-juki", juki), ("kizon-gyomu", fukuhon)):
        batch = ""
        for name, data in files.items():
            (local / name).write_bytes(data)
            batch += f"put {local / name} {name}.part\nrename {name}.part {name}\n"
        r = openssh_sftp(endpoint_port, clients[account], known, batch, user=account)
        assert r.returncode == 0, r.stderr

    # the data centre's storage: every file, byte-identical, under its name
    def stored() -> bool:
        return {n for n in os.listdir(os.fsencode(store)) if not n.startswith(b".jgw-")} == set(ocr)

    wait_for(stored, timeout=120, what="every OCR file in the data centre's storage")
    for name, data in ocr.items():
        with open(os.path.join(os.fsencode(store), name), "rb") as f:
            assert f.read() == data, name
    wait_for(lambda: set(os.listdir(os.fsencode(ocr_sshd.upload / "outbox" / "done"))) ==
             set(ocr) | {n + b".end" for n in ocr}, timeout=60, what="the OCR server's files moved to done/")

    # 庁内: 住民票関係情報 (個人番号 allowed) delivered; the 副本 file with a 個人番号 quarantined
    wait_for(lambda: {p.name for p in atena["juminhyo"].iterdir()} == set(juki), timeout=60, what="juminhyo")
    assert all((atena["juminhyo"] / n).read_bytes() == d for n, d in juki.items())
    wait_for(lambda: {p.name for p in atena["fukuhon"].iterdir()} == {"fukuhon_000.csv", "fukuhon_002.csv"},
             timeout=60, what="clean fukuhon files")
    wait_for(lambda: (spool["kizon-gyomu"] / "quarantine" / "fukuhon_001.csv").exists(), timeout=60,
             what="the fukuhon file with a 個人番号 quarantined")
    city = world.sites["cityhall"]
    assert number not in city.log.read_text(errors="replace")

    # both audit trails hold each OCR file's SHA-256
    digests = {hashlib.sha256(d).hexdigest() for d in ocr.values()}
    world.sites["datacenter"].proc.stop()
    world.sites["cityhall"].proc.stop()
    assert digests <= file_digests(audit_records(city.state_dir), world.r("ido-file-to-dc"))
    assert digests <= file_digests(audit_records(world.sites["datacenter"].state_dir), world.r("ido-file-store"))

    # what waits at the data centre is envelopes: with its jgw down, one more file's frames sit in its
    # queue with the file id in clear and nothing of the file
    world.sites["cityhall"].proc.start(timeout=60)
    late = application_file(rng, 99, 5_000)
    with open(ocr_sshd.upload / "outbox" / "late.dat", "wb") as f:
        f.write(late)
    (ocr_sshd.upload / "outbox" / "late.dat.end").write_bytes(b"")
    inbound = world.q("jgw.in.ido-file")
    with world.view("datacenter") as dc:
        wait_for(lambda: dc.depth(inbound) == 1, timeout=60, what="the late file waiting as one frame")
        # a consumer, not basic.get: the queue is single-active (an ordered route), which refuses
        # basic.get; with the data centre's jgw down this one is the active consumer
        ch = dc.conn.channel()
        ch.basic_qos(prefetch_count=1)
        method, props, wire = next(ch.consume(inbound, inactivity_timeout=30))
        assert method is not None
        ch.basic_nack(method.delivery_tag, requeue=True)
        ch.cancel()
        ch.close()
    assert props.content_type == CONTENT_TYPE and H_FILE in (props.headers or {})
    assert b"late.dat" not in wire and late[:64] not in wire and b"\x88\xd9\x93\xae" not in wire  # 異動 in cp932
    world.sites["datacenter"].proc.start(timeout=60)
    wait_for(lambda: (store / "late.dat").exists(), timeout=60, what="the late file stored")
    assert (store / "late.dat").read_bytes() == late
