"""Broker URLs are checked when the config loads, and passwords need not be in the config (issue 9 item 2).

``amqp://jgw@127.0.0.1:5672/juki`` (a user, no password: the form of config/examples/cityhall.toml)
made ``jgw status`` die with TypeError (exit 70) and ``jgw run`` report READY with dead links. Now
such a URL is a configuration error naming ``brokers.X.urls[N]`` unless the broker names where its
password is: ``password_file`` (mode-checked like a private key) or a systemd credential.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from tests.lab.harness import Amqp, JgwProcess, unique
from tests.opcli.conftest import Broker, password_file, write_config


def route(queue: str, exchange: str, **extra: object) -> dict[str, object]:
    return {"personal_number": "allowed", "source": {"broker": "local", "queue": queue},
            "sink": {"broker": "local", "exchange": exchange, "exchange_type": "direct", "routing_key": "k",
                     "queue": queue + ".out"}, **extra}


def one_broker(tmp_path: Path, url: str, **broker: object) -> Path:
    return write_config(tmp_path, {"r1": route("q.src", "x.out")}, {"local": {"urls": [url], **broker}})


@pytest.mark.parametrize("url,reason", [
    ("amqp://jgw@127.0.0.1:5672/juki", "user 'jgw' has no password: set password_file or credential"),
    ("amqp://guest:secret@[::1:5672/%2F", "unclosed '[' in an IPv6 address"),
    ("http://127.0.0.1:5672/", "expected amqp://HOST[:PORT]/VHOST"),
    ("amqp:///juki", "no host in"),
    ("amqp://guest:secret@127.0.0.1:99999/", "bad port"),
    ("amqp://127.0.0.1/a/b", "the virtual host is one path segment"),
    ("amqp://127.0.0.1/juki?heartbeat=5", "query parameters are not used"),
])
def test_a_bad_url_is_refused_naming_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], url: str,
                                             reason: str) -> None:
    """check-config and status both refuse it: 78, FILE: brokers.local.urls[0]: reason, no password shown."""
    cfg = one_broker(tmp_path, url)
    for verb in ("check-config", "status", "dlq"):
        argv = [verb, "list", str(cfg)] if verb == "dlq" else [verb, str(cfg)]
        assert main(argv) == 78, verb
        err = capsys.readouterr().err
        assert err.startswith(f"jgw: {cfg}: brokers.local.urls[0]: "), err
        assert reason in err and "secret" not in err and "unexpected" not in err
        assert err.count("\n") == 1


def test_password_file_readable_by_others_is_refused_like_a_key(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    pw = password_file(tmp_path, "s3cret-pw", mode=0o640)
    cfg = one_broker(tmp_path, "amqp://jgw@127.0.0.1:5672/juki", password_file=str(pw))
    assert main(["check-config", str(cfg)]) == 77
    err = capsys.readouterr().err
    assert f"brokers.local.password_file: {pw} is mode 0640" in err and "s3cret" not in err
    pw.unlink()
    assert main(["check-config", str(cfg)]) == 78
    assert f"jgw: {cfg}: brokers.local.password_file: {pw}: file not found" in capsys.readouterr().err


def test_credential_without_systemd_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = one_broker(tmp_path, "amqp://jgw@127.0.0.1:5672/juki", credential="jgw-broker-local")
    assert main(["status", str(cfg)]) == 78
    err = capsys.readouterr().err
    assert "brokers.local.credential: systemd credential 'jgw-broker-local': $CREDENTIALS_DIRECTORY is not " \
           "set" in err


def test_status_and_dlq_list_log_in_with_the_password_file(broker: Broker, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The cityhall form with password_file: status reads depths, dlq list answers; no TypeError."""
    pw = password_file(tmp_path, broker.password)
    cfg = one_broker(tmp_path, broker.jgw_url, password_file=str(pw))
    assert main(["status", str(cfg), "--json"]) == 1  # no daemon runs
    info = json.loads(capsys.readouterr().out)
    assert info["broker_errors"] == {}, info
    assert main(["dlq", "list", str(cfg)]) == 0
    out, err = capsys.readouterr()
    assert "0 message(s) in jgw.dead-letter" in out and err == ""
    assert main(["check-config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"(password: {pw})" in out and broker.password not in out


def test_a_wrong_password_is_one_line_without_the_password(broker: Broker, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    pw = password_file(tmp_path, "not-" + broker.password)
    cfg = one_broker(tmp_path, broker.jgw_url, password_file=str(pw))
    assert main(["dlq", "list", str(cfg)]) == 69
    err = capsys.readouterr().err
    assert err.startswith("jgw: broker 'local' unreachable: ") and err.count("\n") == 1
    assert broker.password not in err and "unexpected" not in err


def test_run_uses_the_systemd_credential_and_relays(broker: Broker, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """jgw run under LoadCredential= (CREDENTIALS_DIRECTORY/NAME): links up, messages relayed, no
    password in the log."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "jgw-broker-local").write_text(broker.password)
    q = unique("cred")
    cfg = write_config(tmp_path, {"r1": route(q, q + ".x")},
                       {"local": {"urls": [broker.jgw_url], "credential": "jgw-broker-local"}})
    proc = JgwProcess(cfg, env={"CREDENTIALS_DIRECTORY": str(creds)})
    proc.start()
    try:
        status = proc.status()
        assert all(link["up"] for link in status["links"].values()), status
        with Amqp(broker.guest_juki_url) as amqp:
            ids = amqp.publish(q, [b"one", b"two"])
            got = amqp.drain(q + ".out", expect=2)
            assert [m.message_id for m in got] == ids
    finally:
        proc.stop()
    assert broker.password not in proc.log()
