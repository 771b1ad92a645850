"""The publisher-confirm tracker: sequence numbers, multiple acks, nacks, returns, channel loss."""

from __future__ import annotations

from gateway.amqp.confirms import Confirm, ConfirmTracker


def publish(tracker: ConfirmTracker[str], *tokens: str) -> list[int]:
    return [tracker.published(t, f"id-{t}") for t in tokens]


def test_sequence_numbers_start_at_one_and_follow_publish_order() -> None:
    """pika numbers publishes 1, 2, 3 … per channel; the tracker must agree."""
    t: ConfirmTracker[str] = ConfirmTracker()
    assert publish(t, "a", "b", "c") == [1, 2, 3]


def test_single_ack_settles_only_that_publish() -> None:
    t: ConfirmTracker[str] = ConfirmTracker()
    publish(t, "a", "b", "c")
    assert t.settle(2, multiple=False, ack=True) == [("b", Confirm.ACK)]
    assert len(t) == 2


def test_multiple_ack_settles_everything_up_to_the_tag_in_order() -> None:
    t: ConfirmTracker[str] = ConfirmTracker()
    publish(t, "a", "b", "c", "d")
    assert t.settle(3, multiple=True, ack=True) == [("a", Confirm.ACK), ("b", Confirm.ACK), ("c", Confirm.ACK)]
    assert t.drain() == ["d"]


def test_multiple_nack_is_a_nack_for_each_not_an_ack() -> None:
    """pika's own example counts a multiple nack as acks; a relay that did would lose messages."""
    t: ConfirmTracker[str] = ConfirmTracker()
    publish(t, "a", "b")
    assert t.settle(2, multiple=True, ack=False) == [("a", Confirm.NACK), ("b", Confirm.NACK)]


def test_return_before_ack_marks_that_publish_unroutable() -> None:
    """basic.return carries no sequence number; it is matched by message id, oldest first."""
    t: ConfirmTracker[str] = ConfirmTracker()
    publish(t, "a", "b")
    assert t.returned("id-b")
    assert t.settle(2, multiple=True, ack=True) == [("a", Confirm.ACK), ("b", Confirm.RETURNED)]


def test_return_of_an_id_published_twice_marks_the_oldest_unsettled_one() -> None:
    t: ConfirmTracker[str] = ConfirmTracker()
    t.published("first", "same")
    t.published("second", "same")
    assert t.returned("same")
    assert t.settle(1, multiple=False, ack=True) == [("first", Confirm.RETURNED)]
    assert t.settle(2, multiple=False, ack=True) == [("second", Confirm.ACK)]


def test_return_of_unknown_id_is_reported() -> None:
    t: ConfirmTracker[str] = ConfirmTracker()
    assert not t.returned("nobody")


def test_ack_for_unknown_or_already_settled_tag_settles_nothing() -> None:
    t: ConfirmTracker[str] = ConfirmTracker()
    publish(t, "a")
    assert t.settle(1, multiple=False, ack=True) == [("a", Confirm.ACK)]
    assert t.settle(1, multiple=False, ack=True) == []
    assert t.settle(7, multiple=True, ack=True) == []


def test_drain_returns_unsettled_in_publish_order_and_empties() -> None:
    """On channel loss every unconfirmed publish must be republished, in order."""
    t: ConfirmTracker[str] = ConfirmTracker()
    publish(t, "a", "b", "c")
    t.settle(2, multiple=False, ack=True)
    assert t.drain() == ["a", "c"]
    assert len(t) == 0
