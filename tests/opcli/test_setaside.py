"""Set-aside messages: listed without being used up, exported exactly, deleted exactly (issue 9 items 5-7,
issue 15 item 5).

Against a private node (conftest): deleting "all" must not touch other tests' messages on the shared
broker. Messages are put in jgw.quarantine / jgw.dead-letter with the headers the relay writes; one
test has the relay itself quarantine a message and runs the operator commands beside the daemon.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from gateway import audit
from gateway.cli import main
from gateway.policy.redact import redact_text
from tests.lab import synth
from tests.lab.harness import Amqp, JgwProcess, unique
from tests.opcli.conftest import Broker, write_config

Q, DLQ = "jgw.quarantine", "jgw.dead-letter"


def routes(*names: str) -> dict[str, dict[str, Any]]:
    return {n: {"personal_number": "allowed", "source": {"broker": "local", "queue": f"{n}.src"},
                "sink": {"broker": "local", "exchange": f"{n}.x", "exchange_type": "direct", "routing_key": "k",
                         "queue": f"{n}.out"}} for n in names}


@pytest.fixture
def site(broker: Broker, tmp_path: Path) -> Iterator[tuple[Path, Amqp]]:
    """A config with routes r-a and r-b on the private node, and empty set-aside queues."""
    cfg = write_config(tmp_path, routes("r-a", "r-b"), {"local": {"urls": [broker.guest_url]}})
    with Amqp(broker.guest_url) as amqp:
        for q in (Q, DLQ):
            amqp.declare_queue(q)
            amqp.ch.queue_purge(q)
        yield cfg, amqp


def put(amqp: Amqp, queue: str, route: str, body: bytes, mid: str, *, reason: str = "too-large",
        correlation_id: str | None = None, headers: dict[str, Any] | None = None) -> None:
    ch = amqp.conn.channel()
    ch.confirm_delivery()
    h = {"x-jgw-route": route, "x-jgw-reason": reason, "x-jgw-detail": "size 9", "x-jgw-origin-queue": f"{route}.src",
         "x-jgw-failed-ms": int(time.time() * 1000) - 5000, "x-biz": "異動", **(headers or {})}
    ch.basic_publish("", queue, body, pika.BasicProperties(message_id=mid, delivery_mode=2, headers=h,
                                                           correlation_id=correlation_id,
                                                           content_type="application/octet-stream"),
                     mandatory=True)
    ch.close()


def contents(amqp: Amqp, queue: str) -> list[tuple[str, bytes]]:
    """(id, body) of everything in ``queue``, looked at and given back."""
    ch = amqp.conn.channel()
    out = []
    while True:
        method, props, body = ch.basic_get(queue)
        if method is None:
            break
        out.append((props.message_id, body))
    ch.close()
    return sorted(out)


def records(cfg: Path, action: str) -> list[dict[str, Any]]:
    directory = cfg.parent / "state" / "audit"
    if not directory.exists():
        return []
    return [r for _, _, r in audit.records(directory) if r["ev"] == "operator" and r.get("action") == action]


def listed(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main([*argv, "--json"]) == 0
    rows: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return rows


# ------------------------------------------------------------------------------------------------ listing

def test_listing_never_uses_a_message_up(site: tuple[Path, Amqp], capsys: pytest.CaptureFixture[str]) -> None:
    """25 listings (more than RabbitMQ 4's default quorum delivery limit of 20): every message is still
    there with its bytes. On 3.10 the quorum queue counts each look (x-delivery-count), and with no
    x-delivery-limit on jgw.quarantine nothing acts on the count."""
    cfg, amqp = site
    bodies = {f"m{i}": bytes([i]) * 10 for i in range(3)}
    for mid, body in bodies.items():
        put(amqp, Q, "r-a", body, mid)
    for _ in range(25):
        assert len(listed(capsys, "quarantine", "list", str(cfg))) == 3
    assert contents(amqp, Q) == sorted(bodies.items())
    assert main(["quarantine", "show", str(cfg), "m1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["delivery_count"] >= 25, "3.10 counts every look; the docs say why it is harmless here"


def test_list_filters_by_route_and_states_a_limit(site: tuple[Path, Amqp],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg, amqp = site
    for i in range(6):
        put(amqp, Q, "r-a" if i % 2 else "r-b", b"x" * i, f"id{i}")
    assert [r["id"] for r in listed(capsys, "quarantine", "list", str(cfg), "--route", "r-a")] == ["id1", "id3", "id5"]
    assert main(["quarantine", "list", str(cfg), "--route", "r-a"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 message(s) of route r-a in jgw.quarantine (6 read)"
    assert main(["quarantine", "list", str(cfg), "--limit", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 message(s) in jgw.quarantine; stopped at --limit 2, " \
                                                       "4 not read"
    assert len(contents(amqp, Q)) == 6


def test_times_are_in_the_operators_zone(site: tuple[Path, Amqp], capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, amqp = site
    put(amqp, Q, "r-a", b"x", "t1")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        [row] = listed(capsys, "quarantine", "list", str(cfg))
        assert row["failed_at"].endswith("+09:00")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_unknown_route_or_id_is_an_error_naming_what_exists(site: tuple[Path, Amqp],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg, amqp = site
    put(amqp, DLQ, "r-a", b"x", "d1")
    for argv in (["dlq", "list", str(cfg), "--route", "r-z"], ["quarantine", "delete", str(cfg), "--route", "r-z",
                                                               "--reason", "x"]):
        assert main(argv) == 66
        err = capsys.readouterr().err
        assert "no route 'r-z'" in err and "(routes: r-a, r-b)" in err
    assert main(["dlq", "show", str(cfg), "nope"]) == 66
    assert "no message with id 'nope' in jgw.dead-letter (1 message(s) there" in capsys.readouterr().err
    assert main(["dlq", "delete", str(cfg), "nope", "--reason", "drill"]) == 1
    assert "nope: not found in jgw.dead-letter" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ delete

def test_delete_by_id_takes_exactly_that_message(site: tuple[Path, Amqp],
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, amqp = site
    for i in range(5):
        put(amqp, DLQ, "r-a", f"body {i}".encode(), f"id{i}")
    assert main(["dlq", "delete", str(cfg), "id2"]) == 64, "--reason is required"
    assert "--reason TEXT is required" in capsys.readouterr().err
    assert main(["dlq", "delete", str(cfg), "--dry-run", "id2", "--reason", "drill"]) == 0
    out = capsys.readouterr().out
    assert "id2: would delete" in out and "(simulated, nothing changed)" in out
    assert len(contents(amqp, DLQ)) == 5 and records(cfg, "delete") == []

    monkeypatch.setenv("SUDO_USER", "tanaka")
    monkeypatch.setenv("SUDO_UID", "1001")
    assert main(["dlq", "delete", str(cfg), "id2", "--reason", "sent twice by the source"]) == 0
    out = capsys.readouterr().out
    assert "id2: deleted (route r-a, too-large)" in out and "jgw.dead-letter on local: 5 before, 4 now" in out
    assert contents(amqp, DLQ) == [(f"id{i}", f"body {i}".encode()) for i in (0, 1, 3, 4)]
    [rec] = records(cfg, "delete")
    assert rec["msg"] == "id2" and rec["why"] == "sent twice by the source" and rec["queue"] == DLQ
    assert rec["route"] == "r-a" and rec["set_aside_reason"] == "too-large"
    assert rec["digest"] == audit.payload_digest(b"body 2")
    import os
    if os.getuid() == 0:
        assert "tanaka(uid 1001, sudo)" in rec["actor"] and rec["actor"].endswith("as root(uid 0)")


def test_delete_by_route_and_all(site: tuple[Path, Amqp], capsys: pytest.CaptureFixture[str]) -> None:
    cfg, amqp = site
    for i in range(4):
        put(amqp, Q, "r-a" if i < 3 else "r-b", b"q%d" % i, f"q{i}")
    assert main(["quarantine", "delete", str(cfg), "--route", "r-a", "--reason", "source resent them"]) == 0
    assert "deleted 3 message(s) from jgw.quarantine" in capsys.readouterr().out
    assert contents(amqp, Q) == [("q3", b"q3")]
    assert main(["quarantine", "delete", str(cfg), "--all", "--reason", "end of drill"]) == 0
    assert contents(amqp, Q) == []
    assert len(records(cfg, "delete")) == 4


# ------------------------------------------------------------------------------------------------ export

def test_export_writes_the_bytes_and_typed_headers(site: tuple[Path, Amqp], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg, amqp = site
    body = b"\x8e\xa9 Shift_JIS \x00\xff"
    put(amqp, Q, "r-a", body, "e1", correlation_id="shori-1", headers={"x-raw": b"\x00\x01", "x-n": 7})
    put(amqp, Q, "r-b", b"other", "e2")
    out = tmp_path / "evidence"
    assert main(["quarantine", "export", str(cfg), "e1", "--out", str(out), "--dry-run"]) == 0
    assert "(simulated, nothing written)" in capsys.readouterr().out and not out.exists()
    assert main(["quarantine", "export", str(cfg), "e1", "--out", str(out)]) == 0
    assert (out / "00001.bin").read_bytes() == body
    assert (out / "00001.bin").stat().st_mode & 0o077 == 0
    meta = json.loads((out / "00001.json").read_text(encoding="utf-8"))
    assert meta["properties"]["message_id"] == "e1" and meta["properties"]["correlation_id"] == "shori-1"
    assert meta["headers"]["x-raw"] == {"bytes_base64": "AAE="} and meta["headers"]["x-n"] == 7
    assert meta["headers"]["x-biz"] == "異動" and meta["sha256"] == __import__("hashlib").sha256(body).hexdigest()
    assert sorted(p.name for p in out.iterdir()) == ["00001.bin", "00001.json"]
    assert len(contents(amqp, Q)) == 2, "export leaves them set aside"
    assert main(["quarantine", "export", str(cfg), "--all", "--out", str(out)]) == 64, "never over an export"
    [rec] = records(cfg, "export")
    assert rec["msg"] == "e1" and rec["target"] == str(out / "00001.bin")


def test_a_sealed_message_exports_as_its_envelope(site: tuple[Path, Amqp], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The auditor opens the exported file with jgw envelope inspect and verify, as it was sealed."""
    from tests.lab.testca import NodeKeys, TestCa, write_node_files

    cfg, amqp = site
    ca = TestCa.create()
    files = {n: write_node_files(tmp_path / n, NodeKeys.create(ca, n)) for n in ("city-a", "dc-b")}
    src = tmp_path / "payload"
    src.write_bytes("住民異動".encode("cp932"))
    sealed = tmp_path / "sealed.env"
    a = files["city-a"]
    assert main(["envelope", "seal", "--node", "city-a", "--route", "r-a", "--sign-key", str(a["sign.key"]),
                 "--sign-cert", str(a["sign.crt"]), "--to", f"dc-b={files['dc-b']['peer.pem']}", "--in", str(src),
                 "--out", str(sealed), "--message-id", "env-1"]) == 0
    put(amqp, Q, "r-a", sealed.read_bytes(), "env-1", reason="signature-invalid")
    out = tmp_path / "export"
    assert main(["quarantine", "export", str(cfg), "env-1", "--out", str(out)]) == 0
    assert (out / "00001.bin").read_bytes() == sealed.read_bytes()
    capsys.readouterr()
    assert main(["envelope", "inspect", str(out / "00001.bin")]) == 0
    assert "city-a" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ 個人番号

def test_ids_that_are_a_personal_number_are_masked_in_every_view(site: tuple[Path, Amqp],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """quarantine list (plain and --json) and show mask an id and a correlation id that are 個人番号."""
    cfg, amqp = site
    number = synth.valid_personal_number(random.Random(15))
    corr = synth.valid_personal_number(random.Random(16))
    put(amqp, Q, "r-a", b"x", number, reason="personal-number", correlation_id=corr)
    for argv in (["quarantine", "list", str(cfg)], ["quarantine", "list", str(cfg), "--json"],
                 ["quarantine", "show", str(cfg), number]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert number not in out and corr not in out, argv
        assert redact_text(number) in out
    assert main(["quarantine", "show", str(cfg), number]) == 0
    assert json.loads(capsys.readouterr().out)["correlation_id"] == redact_text(corr)


# ------------------------------------------------------------------------------------------------ with the daemon

def test_with_the_daemon_running_delete_is_recorded_by_it(broker: Broker, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The relay quarantines a too-large message; export and delete run beside it; the daemon writes
    the records (it holds the audit trail)."""
    name = unique("rt").lower()
    r = routes(name)
    r[name]["max_size"] = 10
    cfg = write_config(tmp_path, r, {"local": {"urls": [broker.guest_url]}})
    with Amqp(broker.guest_url) as amqp:
        for q in (Q, DLQ):
            amqp.declare_queue(q)
            amqp.ch.queue_purge(q)
        proc = JgwProcess(cfg).start()
        try:
            [big] = amqp.publish(f"{name}.src", [b"B" * 11])
            deadline = time.monotonic() + 30
            while not contents(amqp, Q) and time.monotonic() < deadline:
                time.sleep(0.1)
            [row] = listed(capsys, "quarantine", "list", str(cfg), "--route", name)
            assert row["id"] == big and row["reason"] == "too-large"
            assert main(["quarantine", "export", str(cfg), big, "--out", str(tmp_path / "ev")]) == 0
            assert (tmp_path / "ev" / "00001.bin").read_bytes() == b"B" * 11
            assert main(["quarantine", "delete", str(cfg), big, "--reason", "oversized test file"]) == 0
            assert contents(amqp, Q) == []
        finally:
            proc.stop()
    assert [r["msg"] for r in records(cfg, "delete")] == [big]
    assert [r["msg"] for r in records(cfg, "export")] == [big]
