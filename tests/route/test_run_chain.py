"""``run_chain``: a stage that raises sets aside only the message it raised for, as ``stage-error``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from gateway.message import Message
from gateway.reasons import Disposition
from gateway.route.stages import Refusal, StageResult, run_chain


def msg(i: int, **headers: Any) -> Message:
    return Message(message_id=f"m-{i}", route="r", body=b"payload %d" % i, headers=headers)


class Picky:
    """A buggy stage: raises for a whole batch as soon as one message has a non-text header name
    (as ``k.startswith("x-jgw-")`` did for a bytes key), else tags each message."""

    name = "picky"
    blocking = False

    def __init__(self) -> None:
        self.calls: list[int] = []

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        self.calls.append(len(batch))
        out: list[StageResult] = []
        for m in batch:
            hop = {k: v for k, v in m.headers.items() if k.startswith("x-jgw-")}  # TypeError for bytes
            out.append(m.replace(headers={**hop, "picked": True}))
        return out


class Tagger:
    """A later stage: proves the neighbours went on through the rest of the chain."""

    name = "tagger"
    blocking = False

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        return [m.replace(headers={**m.headers, "tagged": True}) for m in batch]


def test_one_poison_message_does_not_fail_its_batch() -> None:
    """40 messages, one with a header name that is bytes: 39 go on through every stage; the one
    the stage raised for is set aside as stage-error (dead-letter), with the exception class only."""
    batch = [msg(i) for i in range(40)]
    batch[17] = msg(17).replace(headers={b"\xff\xfe": b"v"})
    picky = Picky()
    results = run_chain([picky, Tagger()], batch)
    assert len(results) == 40
    bad = results[17]
    assert isinstance(bad, Refusal) and bad.reason == "stage-error"
    assert bad.disposition is Disposition.DEAD_LETTER
    assert "picky" in bad.detail and "TypeError" in bad.detail and "\\xff" not in bad.detail
    for i, r in enumerate(results):
        if i != 17:
            assert isinstance(r, Message) and r.message_id == f"m-{i}"
            assert r.headers == {"picked": True, "tagged": True}
    assert picky.calls[0] == 40 and sum(picky.calls[1:]) == 40  # the batch, then one at a time


class Miscounting:
    name = "miscounting"
    blocking = False

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        return list(batch)[:-1] if len(batch) > 1 else list(batch)


def test_a_stage_returning_the_wrong_number_of_results_is_retried_per_message() -> None:
    """A result count that does not match is a bug for the batch: each message is run again alone."""
    results = run_chain([Miscounting()], [msg(i) for i in range(5)])
    assert [r.message_id for r in results if isinstance(r, Message)] == [f"m-{i}" for i in range(5)]


class ReturnsJunk:
    name = "junk"
    blocking = False

    def process(self, batch: Sequence[Message]) -> list[Any]:
        return [None if m.message_id == "m-2" else m for m in batch]


def test_a_result_that_is_neither_message_nor_refusal_is_a_stage_error_for_that_message() -> None:
    results = run_chain([ReturnsJunk()], [msg(i) for i in range(4)])  # type: ignore[list-item]
    assert [type(r).__name__ for r in results] == ["Message", "Message", "Refusal", "Message"]
    refusal = results[2]
    assert isinstance(refusal, Refusal) and refusal.reason == "stage-error" and "junk" in refusal.detail


class Interrupted:
    name = "interrupted"
    blocking = False

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        raise KeyboardInterrupt


def test_base_exceptions_are_not_swallowed() -> None:
    """Only Exception is isolated: KeyboardInterrupt and SystemExit still stop the process."""
    with pytest.raises(KeyboardInterrupt):
        run_chain([Interrupted()], [msg(1)])


def test_refusals_carry_their_disposition_from_the_reasons_table() -> None:
    """The runner files a refusal by its table disposition: quarantine, or dead-letter for stage-error."""
    assert Refusal("header-invalid", "x").disposition is Disposition.QUARANTINE
    assert Refusal("stage-error", "x").disposition is Disposition.DEAD_LETTER
    with pytest.raises(ValueError):
        Refusal("nacked", "a stage cannot ask for a sink retry")


def test_timings_are_kept_per_stage_including_the_retry() -> None:
    timings: list[tuple[str, float]] = []
    batch = [msg(0), msg(1).replace(headers={b"k": 1})]
    run_chain([Picky(), Tagger()], batch, timings)
    assert [name for name, _ in timings] == ["picky", "tagger"]
