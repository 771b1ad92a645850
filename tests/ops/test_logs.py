"""Structured log lines: one per event, fields, no bytes, journald priorities, redaction hook."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.service.logs import LogfmtFormatter, log_event, setup_logging, stderr_is_journal


def synthetic_kojin_bango(first11: str) -> str:
    """A made-up 個人番号 with a valid check digit (weights 2..7 from the right, mod 11)."""
    digits = [int(c) for c in first11]
    total = sum(d * ((n % 6) + 2) for n, d in enumerate(reversed(digits)))
    rem = total % 11
    return first11 + str(0 if rem <= 1 else 11 - rem)


FAKE_NUMBER = synthetic_kojin_bango("12345678901")


@pytest.fixture(autouse=True)
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[str]:
    return buf.getvalue().splitlines()


def test_logfmt_one_line_per_event_with_fields() -> None:
    """extra fields and log_event fields follow ts/level/logger/msg; multi-line text stays on one line."""
    buf = io.StringIO()
    setup_logging("logfmt", "info", stream=buf, journal=False)
    log = logging.getLogger("jgw.hop")
    log.warning("message quarantined", extra={"route": "juki-out", "message_id": "01J9", "reason": "policy"})
    log_event(log, "warning", "message.dead_lettered", "delivery failed\nafter 20 tries",
              route="juki-out", message_id="01JA", outcome="dead_lettered", attempts=20)
    log.debug("not shown at info")
    out = lines(buf)
    assert len(out) == 2
    head = r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d level=warning logger=jgw.hop "
    assert re.match(head + r'msg="message quarantined" route=juki-out message_id=01J9 reason=policy$',
                    out[0]), out[0]
    assert out[1].endswith('msg="delivery failed\\nafter 20 tries" event=message.dead_lettered '
                           "route=juki-out message_id=01JA outcome=dead_lettered attempts=20")


def test_exception_is_one_line() -> None:
    buf = io.StringIO()
    setup_logging("logfmt", "info", stream=buf, journal=False)
    try:
        raise RuntimeError("broker said no")
    except RuntimeError:
        logging.getLogger("jgw.amqp").exception("link failed", extra={"broker": "hq"})
    out = lines(buf)
    assert len(out) == 1
    assert 'exc="Traceback (most recent call last):\\n' in out[0]
    assert "RuntimeError: broker said no" in out[0]


def test_json_format_and_bytes_never_logged() -> None:
    """JSON lines parse; a bytes value (a payload passed by mistake) shows only its length."""
    buf = io.StringIO()
    setup_logging("json", "debug", stream=buf, journal=False)
    payload = ("住民票 " + FAKE_NUMBER).encode("shift_jis")
    log_event(logging.getLogger("jgw.relay"), logging.INFO, "message.delivered", route="juki-out",
              payload=payload, name="clash", latency=0.25, ok=True, none=None)
    (line,) = lines(buf)
    doc = json.loads(line)
    assert doc["level"] == "info" and doc["logger"] == "jgw.relay" and doc["event"] == "message.delivered"
    assert doc["payload"] == f"<{len(payload)} bytes>"
    assert doc["name_"] == "clash" and doc["latency"] == 0.25 and doc["ok"] is True and doc["none"] is None
    assert FAKE_NUMBER not in line


def test_japanese_text_is_readable() -> None:
    buf = io.StringIO()
    setup_logging("logfmt", "info", stream=buf, journal=False)
    logging.getLogger("jgw").info("設定を再読み込みしました", extra={"route": "juki-out"})
    assert 'msg=設定を再読み込みしました route=juki-out' in buf.getvalue()


class MaskDigits(logging.Filter):
    """Stands for gateway.policy.redact: masks 12-digit runs in the text it can see."""

    def filter(self, record: logging.LogRecord) -> bool:
        mask = re.compile(r"\d{12}")
        record.msg = mask.sub("************", str(record.msg))
        if record.exc_text:
            record.exc_text = mask.sub("************", record.exc_text)
        for key, value in list(record.__dict__.items()):
            if key == "note" and isinstance(value, str):
                setattr(record, key, mask.sub("************", value))
        return True


def test_redaction_filter_sees_rendered_message_fields_and_exception() -> None:
    """A filter passed to setup_logging runs after %-args and the traceback are rendered."""
    buf = io.StringIO()
    setup_logging("logfmt", "info", stream=buf, journal=False, filters=[MaskDigits()])
    log = logging.getLogger("jgw.policy")
    log.warning("value %s refused", FAKE_NUMBER, extra={"note": f"was {FAKE_NUMBER}"})
    try:
        int(FAKE_NUMBER + "x")
    except ValueError:
        log.exception("parse failed")
    text = buf.getvalue()
    assert FAKE_NUMBER not in text
    assert text.count("************") == 3


def test_setup_again_replaces_the_handler() -> None:
    """A reload that changes format or level does not duplicate lines."""
    first, second = io.StringIO(), io.StringIO()
    setup_logging("logfmt", "info", stream=first, journal=False)
    setup_logging("json", "warning", stream=second, journal=False)
    logging.getLogger("jgw").info("hidden")
    logging.getLogger("jgw").warning("shown")
    assert first.getvalue() == ""
    assert [json.loads(x)["msg"] for x in lines(second)] == ["shown"]


def test_library_chatter_is_quiet_unless_debugging() -> None:
    """pika repeats as several ERROR lines what jgw's link events say once; it shows only at debug."""
    buf = io.StringIO()
    setup_logging("logfmt", "info", stream=buf, journal=False)
    logging.getLogger("pika.adapters.utils").info("Socket connected")
    logging.getLogger("pika.connection").error("Connection lost")
    logging.getLogger("jgw.amqp").warning("broker link down")
    assert len(lines(buf)) == 1 and "broker link down" in lines(buf)[0]
    debug = io.StringIO()
    setup_logging("logfmt", "debug", stream=debug, journal=False)
    logging.getLogger("pika.connection").error("Connection lost")
    assert any("Connection lost" in ln for ln in lines(debug))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="log format"):
        setup_logging("xml", "info")
    with pytest.raises(ValueError, match="log level"):
        setup_logging("json", "loud")


def test_journal_priority_prefix(tmp_path: Path) -> None:
    """When $JOURNAL_STREAM names our stream, lines carry <N> priorities and no ts (journald stamps them)."""
    path = tmp_path / "journal-stand-in"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        assert stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stderr_is_journal(stream, {})
        setup_logging("logfmt", "debug", stream=stream, journal=True)
        log = logging.getLogger("jgw")
        log.error("route stopped")
        log.warning("quarantined")
        log.info("ready")
        log.debug("delivered")
    got = path.read_text().splitlines()
    assert [g[:3] for g in got] == ["<3>", "<4>", "<6>", "<7>"]
    assert all("ts=" not in g for g in got)


def test_real_stderr_of_a_process() -> None:
    """The daemon's set-up writes to its own stderr, nothing to stdout."""
    code = ("import logging; from gateway.service.logs import setup_logging, log_event;"
            "setup_logging('json', 'info');"
            "log_event(logging.getLogger('jgw.relay'), 'info', 'node.ready', 'jgw ready', routes=3)")
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout == ""
    doc = json.loads(proc.stderr)
    assert (doc["msg"], doc["event"], doc["routes"]) == ("jgw ready", "node.ready", 3)


def test_logfmt_value_quoting() -> None:
    v = LogfmtFormatter.value
    assert v("plain") == "plain"
    assert v("") == '""'
    assert v('a "b"=c') == '"a \\"b\\"=c"'
    assert v("tab\there") == '"tab\\there"'
    assert v("bell\x07") == '"bell\\x07"'
    assert v(None) == "null" and v(False) == "false" and v(3) == "3"


def test_with_the_project_redaction_filter() -> None:
    """gateway.policy.redact.RedactingFilter via setup_logging masks a 個人番号 everywhere in a line."""
    from gateway.policy.redact import RedactingFilter

    buf = io.StringIO()
    setup_logging("json", "info", stream=buf, journal=False, filters=[RedactingFilter()])
    log = logging.getLogger("jgw.policy")
    log.warning("value %s refused", FAKE_NUMBER, extra={"note": f"was {FAKE_NUMBER}", "route": "juki-out"})
    log_event(log, "warning", "policy.refused", reason="personal_number", detail=FAKE_NUMBER)
    try:
        int(FAKE_NUMBER + "x")
    except ValueError:
        log.exception("parse failed")
    text = buf.getvalue()
    assert FAKE_NUMBER not in text
    docs = [json.loads(line) for line in text.splitlines()]
    assert docs[0]["route"] == "juki-out" and docs[1]["reason"] == "personal_number"
    assert "ValueError" in docs[2]["exc"]
