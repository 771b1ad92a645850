"""Evidence stays joinable (issue 15, item 4): ids are masked only where a 個人番号 can be, and an id
that must be masked is recorded and logged as its keyed digest, which every lookup can match.

The trail used to mask every digit chain with a valid 12-digit window: ``ord-757491-186252``,
``shori-NNNN-NNNN-NNNN`` and about one numeric id in ten became ``***`` and could not be found.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import random
import stat
from pathlib import Path

import pytest

from gateway.audit import AuditLog
from gateway.commands import audit as audit_cmd
from gateway.policy.detector import check_digit_ok
from tests.lab import synth

NUMBER = "757491186252"  # passes the check digit
BUSINESS_IDS = [
    "ord-757491-186252",             # 6-6: not a way a 個人番号 is written
    "3f2a757491186252bc9e",          # inside a hex word: letters on both sides
    "KB-7574911862521",              # 13 digits: a longer number
    "audit-0000757491186252.log",    # 16 digits: a segment file name
    "tel+757491186252",              # after a plus sign: a phone number
    "7574-9118-6252-1234",           # the same separator goes on: a 4-4-4-4 card-like number
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jgw")
    audit_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def records(directory: Path) -> list[dict[str, object]]:
    out = []
    for seg in sorted(directory.glob("audit-*.log")):
        for line in seg.read_bytes().splitlines():
            out.append(json.loads(line.rpartition(b"\t")[0]))
    return out


def test_business_ids_stay_clear_in_the_trail(tmp_path: Path) -> None:
    """Ids whose digits are not where a 個人番号 can be are recorded exactly as they are."""
    assert check_digit_ok([int(c) for c in NUMBER])
    d = tmp_path / "state" / "audit"
    with AuditLog.open(d, "n", clock=Clock()) as log:
        for mid in BUSINESS_IDS:
            log.record("deliver", msg=mid, corr=mid, route="r", detail=f"sent {mid}")
        log.commit()
    recs = [r for r in records(d) if r["ev"] == "deliver"]
    assert [r["msg"] for r in recs] == BUSINESS_IDS
    assert [r["corr"] for r in recs] == BUSINESS_IDS
    assert [r["detail"] for r in recs] == [f"sent {m}" for m in BUSINESS_IDS]


def test_an_id_that_may_hold_a_personal_number_is_recorded_as_its_keyed_digest(tmp_path: Path) -> None:
    """``shori-NNNN-NNNN-NNNN`` and a bare 12-digit id may be a 個人番号: they are recorded as
    ``id#`` + 24 letters (HMAC under the node key), never in clear and never as ``***``."""
    from gateway.policy.redact import IdKey, id_digest

    state = tmp_path / "state"
    shori = "shori-" + synth.format_number(NUMBER, "hyphenated")
    key = IdKey.in_state_dir(state)
    with AuditLog.open(state / "audit", "n", clock=Clock(), id_key=key) as log:
        log.record("accept", msg=shori, corr=NUMBER, route="r", detail=f"id {NUMBER}")
        log.commit()
    (rec,) = [r for r in records(state / "audit") if r["ev"] == "accept"]
    raw = key.load()
    assert rec["msg"] == id_digest(shori, raw) and rec["corr"] == id_digest(NUMBER, raw)
    assert str(rec["msg"]).startswith("id#") and len(str(rec["msg"])) == 3 + 24
    assert not any(c.isdigit() for c in str(rec["msg"]) + str(rec["corr"]))
    assert rec["detail"] == "id ************"  # free text is masked, it is not an id
    text = "".join(p.read_text() for p in (state / "audit").glob("audit-*.log"))
    assert NUMBER not in text and "7574-9118-6252" not in text
    key_file = state / "id-digest.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_bytes()) == 32


def test_audit_show_id_finds_every_numeric_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """2000 random 12-digit ids, about one in ten passing the check digit: ``jgw audit show --id``
    finds the records of every one of them, clear or digested."""
    from gateway.policy.redact import IdKey

    rng = random.Random(15)
    state = tmp_path / "state"
    ids = [f"{rng.randrange(10**12):012d}" for _ in range(2000)]
    digested = [i for i in ids if check_digit_ok([int(c) for c in i])]
    assert 120 < len(digested) < 280
    with AuditLog.open(state / "audit", "n", clock=Clock(), id_key=IdKey.in_state_dir(state)) as log:
        for mid in ids:
            log.record("accept", msg=mid, route="r")
            log.record("deliver", msg=mid, route="r", outcome="confirmed")
        log.commit()
    capsys.readouterr()
    for mid in digested[:60] + [i for i in ids if i not in digested][:20]:
        assert cli(["audit", "show", str(state / "audit"), "--id", mid, "--json"]) == 0
        found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["ev"] for r in found] == ["accept", "deliver"], mid
        assert all((r["msg"] == mid) is (mid not in digested) for r in found)


def test_the_log_search_of_the_runbooks_finds_a_masked_id(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon's log line carries the same digest as the trail; ``jgw audit id`` prints the search
    term (``grep -F "message_id=$(jgw audit id PATH ID)"``); clear ids are logged as they are."""
    from gateway.policy.redact import IdKey, RedactingFilter
    from gateway.service.logs import log_event, setup_logging

    state = tmp_path / "state"
    (state / "audit").mkdir(parents=True)
    shori = "shori-" + synth.format_number(NUMBER, "hyphenated")
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging("logfmt", "info", filters=[RedactingFilter(IdKey.in_state_dir(state))], stream=stream,
                      journal=False)
        logger = logging.getLogger("gateway.route.runner")
        log_event(logger, "warning", "message.quarantined", message_id=shori, route="r", corr=NUMBER)
        log_event(logger, "warning", "message.quarantined", message_id="ord-757491-186252", route="r")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = stream.getvalue().splitlines()
    assert cli(["audit", "id", str(state / "audit"), shori, "ord-757491-186252"]) == 0
    term, clear = capsys.readouterr().out.split()
    assert term.startswith("id#") and clear == "ord-757491-186252"
    assert f"message_id={term} " in first + " " and NUMBER not in first and "9118" not in first
    assert "message_id=ord-757491-186252" in second


def test_the_id_key_is_private_and_shared(tmp_path: Path) -> None:
    """Created on first use (0600), the same for every reader; a key others can read is refused
    (exit 77); without the key file, tools say so instead of matching nothing in silence."""
    from gateway.errors import NoInputError, PermissionError_
    from gateway.policy.redact import IdKey, safe_id

    state = tmp_path / "state"
    with pytest.raises(NoInputError):
        IdKey.in_state_dir(state, create=False).load()
    first = IdKey.in_state_dir(state).load()
    assert IdKey.in_state_dir(state, create=False).load() == first
    IdKey.in_state_dir(state)._make()  # a second creator loses the race and keeps the first key
    assert IdKey.in_state_dir(state).load() == first
    assert safe_id(NUMBER, first) != safe_id(NUMBER, bytes(32)) and safe_id("m-1", first) == "m-1"
    assert safe_id(NUMBER, None) == "*" * 12  # no key: masked, never clear
    (state / "id-digest.key").chmod(0o644)
    with pytest.raises(PermissionError_) as info:
        IdKey.in_state_dir(state).load()
    assert info.value.exit_code == 77 and "0644" in str(info.value)
