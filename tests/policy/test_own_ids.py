"""jgw's own ids never look like a 個人番号 (issue 15, item 3).

``jgw send`` used ``uuid4().hex`` and the runner ``jgw-<uuid hex>``: about one id in 830 held a
12-digit run with a valid check digit, so clean messages were quarantined on forbidden routes and
their ids masked in logs. ``gateway.ids.new_message_id`` writes 128 random bits in letters only.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from gateway import cli, ids
from gateway.message import Message
from gateway.policy.detector import find_personal_numbers, scanner
from gateway.policy.redact import contains_personal_number
from gateway.policy.stage import PolicyStage
from tests.lab.harness import Amqp, Names, NodeFactory

ID_RE = re.compile(r"^jgw-[bcdfghjkmnpqrstv]{8}(?:-[bcdfghjkmnpqrstv]{8}){3}$")


def looks_personal(value: str) -> bool:
    """By every rule jgw has: the policy detector (UTF-8 bytes) and the log/audit redactor."""
    return bool(find_personal_numbers(value.encode(), "utf-8", limit=1)) or contains_personal_number(value)


def test_jgw_send_ids_never_hold_a_personal_number(names: Names, node_config: NodeFactory, amqp: Amqp,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """5 000 ids from ``jgw send`` against the real broker: none looks like a 個人番号 (uuid4 hex:
    about 6 would)."""
    route = names.route("r")
    cfg = node_config({route: {"personal_number": "allowed", "source": {"broker": "local", "queue": names.q("src")},
                               "sink": {"broker": "local", "exchange": "", "routing_key": names.q("dst")}}})
    amqp.declare_source(cfg, route)
    capsys.readouterr()
    assert cli.main(["send", str(cfg), "--route", route, "x", "--repeat", "5000", "--json"]) == 0
    sent = json.loads(capsys.readouterr().out)["ids"]
    assert len(set(sent)) == 5000
    assert [m for m in sent if looks_personal(m)] == []
    got = amqp.drain(names.q("src"), expect=5000, timeout=60)
    assert {m.message_id for m in got} == set(sent)


def test_a_message_with_a_jgw_id_passes_a_forbidden_route() -> None:
    """The policy stage scans the message id: a clean message under a jgw id is delivered."""
    stage = PolicyStage("r", [scanner("utf-8")], None, enforce=True, scan_headers=True, blocking=False)
    batch = [Message(message_id=ids.new_message_id(), route="r", body=b"clean") for _ in range(2000)]
    assert stage.process(batch) == batch


def test_a_million_ids_are_unique_and_none_looks_like_a_personal_number() -> None:
    """Over 10**6 ids: all distinct, all in the format, not one digit, and neither the policy
    detector nor the redactor finds anything, one by one or run together."""
    made = [ids.new_message_id() for _ in range(1_000_000)]
    assert len(set(made)) == len(made)
    assert all(ID_RE.match(m) for m in made[:10_000]) and all(ids.is_jgw_id(m) for m in made[:10_000])
    joined = "\n".join(made)
    assert not any(c.isdigit() for c in joined)
    assert find_personal_numbers(joined.encode(), "utf-8") == []
    assert find_personal_numbers(" ".join(made).encode(), "any") == []
    assert not any(contains_personal_number(m) for m in made)
    # Every letter equally likely (4 bits each): 32 letters x 10**6 ids, each within 1% of 2 000 000.
    counts = Counter("".join(m[4:].replace("-", "") for m in made))
    assert set(counts) == set(ids.ALPHABET)
    assert all(abs(n - 2_000_000) < 20_000 for n in counts.values())


def test_spell_is_hex_in_letters() -> None:
    assert ids.spell(bytes.fromhex("0123456789abcdef")) == "bcdfghjkmnpqrstv"
    assert len(ids.new_message_id()) == 39 and ids.new_message_id().isascii()
    assert not ids.is_jgw_id("jgw-" + "0" * 32) and not ids.is_jgw_id("jgw-bcdfghjk")
