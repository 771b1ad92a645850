"""One poison message must not fail its batch (issue 15, item 1): the cases the black-box tests found.

A header *name* that is not UTF-8 (pika hands it over as bytes) made ``seal`` and ``open`` raise
``TypeError`` on ``startswith``, and the relay dead-lettered the whole batch as ``stage-error``. The
policy stage stopped reading nested headers one level early and passed what it had not read. The
fuzz of every header type is ``test_hostile_headers.py``.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from gateway.message import Message
from gateway.route.stages import Refusal, run_chain
from tests.lab import synth

from .conftest import Pki
from .hostile import NEIGHBOUR, build_stages, exact, message, nested, source_headers


@pytest.fixture(scope="module")
def stages(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_stages(pki, tmp_path_factory.mktemp("poison"))


# --- the cases the black-box tests found -------------------------------------------------------

def test_seal_then_open_carries_a_header_name_that_is_not_utf8(stages: dict[str, Any]) -> None:
    """The poison of the black-box run: a header name pika hands over as bytes. It is sealed with its
    40 neighbours and restored exactly, name type and all; the neighbours are delivered too."""
    batch = [message(i, dict(NEIGHBOUR)) for i in range(40)]
    batch[7] = message(7, {b"\xff\xfe\x80name": b"\x00\xff", "x-text": "全角", "x-jgw-sent-ms": 5})
    sealed = run_chain([stages["seal"]], batch)
    assert all(isinstance(s, Message) for s in sealed)
    assert sealed[7].headers == {"x-jgw-sent-ms": 5}  # only hop headers travel in clear
    opened = run_chain([stages["open"]], sealed)
    for orig, out in zip(batch, opened, strict=True):
        assert isinstance(out, Message)
        assert exact(source_headers(out), source_headers(orig))
        assert out.body == orig.body and out.message_id == orig.message_id


def test_open_ignores_clear_headers_whose_names_are_not_text(stages: dict[str, Any]) -> None:
    """A valid envelope that gained a clear header with a non-UTF-8 name on the way opens as sealed:
    the clear header is not part of the message (only text x-jgw-* hop headers are taken)."""
    (sealed,) = run_chain([stages["seal"]], [message(1, dict(NEIGHBOUR))])
    assert isinstance(sealed, Message)
    hostile = sealed.replace(headers={**sealed.headers, b"\xff\xfe": b"x", b"x-jgw-route": 1,
                                      "x-jgw-node": {"deep": [b"\x80"]}})
    (out,) = run_chain([stages["open"]], [hostile])
    assert isinstance(out, Message)
    assert exact(source_headers(out), {"x-biz": "異動届", "x-count": 3})
    assert b"\xff\xfe" not in out.headers and b"x-jgw-route" not in out.headers
    assert out.headers["x-jgw-node"] == {"deep": [b"\x80"]}


def test_policy_reads_to_the_depth_limit_and_refuses_below_it(stages: dict[str, Any]) -> None:
    """A 個人番号 at the deepest level the envelope allows is found; a header nested deeper than the
    scan reads is refused (header-invalid), never passed unread; names that are bytes are scanned."""
    number = synth.valid_personal_number(random.Random(3))
    batch = [message(0, {"deep": nested(8, number)}), message(1, {"deep": nested(9, "clean")}),
             message(2, {number.encode(): 1}), message(3, {"deep": nested(8, "clean"), b"\xff": b"\x80"})]
    out = run_chain([stages["policy"]], batch)
    assert [r.reason if isinstance(r, Refusal) else "delivered" for r in out] == [
        "personal-number", "header-invalid", "personal-number", "delivered"]
