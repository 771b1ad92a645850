"""The source ledger: only settled deliveries are acknowledged, in as few frames as possible."""

from __future__ import annotations

from gateway.amqp.ledger import SourceLedger


def ledger(*tags: int) -> SourceLedger:
    led = SourceLedger()
    for tag in tags:
        led.delivered(tag)
    return led


def test_nothing_settled_nothing_to_ack() -> None:
    led = ledger(1, 2, 3)
    assert led.take_acks() == (None, [])
    assert len(led) == 3


def test_settled_prefix_is_one_multiple_ack() -> None:
    led = ledger(1, 2, 3, 4)
    for tag in (1, 2, 3):
        led.settle(tag)
    assert led.take_acks() == (3, [])
    assert len(led) == 1


def test_settled_after_a_gap_are_acked_singly_and_the_gap_stays() -> None:
    """A delivery held for ordering must not keep everything behind it unacknowledged."""
    led = ledger(1, 2, 3, 4, 5)
    for tag in (1, 3, 5):
        led.settle(tag)
    assert led.take_acks() == (1, [3, 5])
    assert len(led) == 2  # 2 and 4 are still ours
    led.settle(2)
    led.settle(4)
    assert led.take_acks() == (4, [])
    assert len(led) == 0


def test_unsettled_delivery_is_never_acknowledged() -> None:
    led = ledger(1, 2)
    led.settle(2)
    upto, singles = led.take_acks()
    assert upto is None and singles == [2]
    assert 1 not in singles


def test_settling_twice_or_an_unknown_tag_changes_nothing() -> None:
    led = ledger(1)
    led.settle(1)
    led.settle(1)
    led.settle(99)
    assert led.ackable == 1
    assert led.take_acks() == (1, [])
    assert led.take_acks() == (None, [])
