"""The hop contract, rule by rule, as transcripts of the pure route book (no broker, no loop).

Each test names the rule of docs/architecture.md's hop-contract table it checks.
"""

from __future__ import annotations

from gateway.message import Message
from gateway.route.book import Output, State
from gateway.route.stages import Refusal
from tests.route.playbook import Play


def test_a_delivery_is_published_and_acknowledged_only_after_its_confirm() -> None:
    """Taken with manual acks; acknowledged only after the sink confirmed it."""
    p = Play()
    assert p.deliver(1) == []
    assert p.stage(1) == ["publish(1)"]
    assert p.flush() == []  # nothing settled yet: nothing to acknowledge
    assert p.ack(1) == ["delivered(1)", "flush-later"]
    assert p.flush() == ["ack(1)"]
    assert p.book.idle


def test_acks_wait_for_the_commit_of_evidence_and_dedup_ids() -> None:
    """The source delivery is acknowledged only after the dedup id and evidence are durable."""
    p = Play(commit_first=True)
    p.deliver(1)
    p.deliver(2)
    assert p.stage(1, 2) == ["publish(1)", "publish(2)"]
    assert p.ack(1) == ["delivered(1)", "flush-later"]
    assert p.ack(2) == ["delivered(2)"]
    assert p.flush() == ["commit"]
    p.deliver(3)
    p.stage(3)
    assert p.ack(3) == ["delivered(3)", "flush-later"]
    assert p.flush() == []  # a commit is running: the next one waits for it
    assert p.committed() == ["ack(1, 2)", "commit"]
    assert p.committed() == ["ack(3)"]


def test_a_failed_commit_acknowledges_nothing_and_gives_the_deliveries_back() -> None:
    p = Play(commit_first=True)
    p.deliver(1)
    p.stage(1)
    p.ack(1)
    assert p.flush() == ["commit"]
    assert p.committed(ok=False) == ["restart(cannot make evidence durable)"]


def test_the_batch_size_flushes_without_waiting_for_the_timer() -> None:
    p = Play(ack_batch=2)
    for t in (1, 2):
        p.deliver(t)
    p.stage(1, 2)
    assert p.ack(1) == ["delivered(1)", "flush-later"]
    assert p.ack(2) == ["delivered(2)", "ack(1, 2)"]


def test_a_stage_refusal_is_quarantined_with_its_reason_never_dropped() -> None:
    """A refusal is a value: the original goes to quarantine with the reason."""
    p = Play()
    p.deliver(1)
    p.deliver(2)
    assert p.stage(1, 2, refuse={1: "personal-number"}) == ["aside(quarantine:personal-number, 1)", "publish(2)"]
    assert p.legs["aside 1"].original and p.legs["aside 1"].wire == {"tag": 1}
    assert p.aside_ok(1) == ["quarantined(1)", "flush-later"]
    assert p.ack(2) == ["delivered(2)"]
    assert p.flush() == ["ack(1, 2)"]


def test_stage_error_is_dead_lettered_not_quarantined() -> None:
    p = Play()
    p.deliver(1)
    assert p.stage(1, refuse={1: "stage-error"}) == ["aside(dead-letter:stage-error, 1)"]
    assert p.aside_ok(1) == ["dead-lettered(1)", "flush-later"]


def test_too_large_is_quarantined_at_intake() -> None:
    p = Play(max_size=5)
    assert p.deliver(1, size=6) == ["aside(quarantine:too-large, 1)"]
    assert p.take() == []


def test_an_ordered_route_quarantines_a_message_without_its_key() -> None:
    p = Play(ordered=True)
    assert p.deliver(1) == ["aside(quarantine:order-key-missing, 1)"]


def test_an_id_already_delivered_is_settled_without_publishing() -> None:
    """Duplicates are settled without publishing (the dedup store knows the id)."""
    p = Play()
    p.deliver(1)
    assert p.stage(1, seen=[1]) == ["duplicate(1)", "flush-later"]
    assert p.flush() == ["ack(1)"]


def test_a_copy_of_an_id_on_its_way_settles_with_it_and_not_before() -> None:
    """The second copy is acknowledged only once the first is durable at the sink."""
    p = Play()
    p.deliver(1)
    p.deliver(2, id="m1")
    assert p.stage(1, 2) == ["publish(1)"]
    assert p.flush() == []
    assert p.ack(1) == ["delivered(1)", "duplicate(2)", "flush-later"]
    assert p.flush() == ["ack(1, 2)"]


def test_the_publish_window_is_bounded() -> None:
    p = Play(window=2)
    for t in (1, 2, 3):
        p.deliver(t)
    assert p.stage(1, 2, 3) == ["publish(1)", "publish(2)"]
    assert p.book.waiting_to_publish == 1
    assert p.ack(1) == ["delivered(1)", "flush-later", "publish(3)"]


def test_returned_then_retry_tiers_then_dead_letter() -> None:
    """Unroutable or nacked → next retry tier (a queue), then dead-letter with the reason."""
    p = Play(retry=(5.0,))
    p.deliver(1)
    p.stage(1)
    assert p.returned(1) == ["retried(1)", "aside(retry:unroutable, 1)"]
    assert p.legs["aside 1"].tier == 0 and p.legs["aside 1"].attempt == 1
    assert p.aside_ok(1) == ["flush-later"]  # not an outcome: the retry queue brings it back
    assert p.flush() == ["ack(1)"]
    # it comes back from the tier with one attempt spent: the next refusal dead-letters it
    p.deliver(2, id="m1", attempt=1)
    p.stage(2)
    assert p.nack(1) == ["aside(dead-letter:nacked, 1)"]
    assert p.legs["aside 1"].detail == "the sink refused it 2 times (nacked)"
    assert p.aside_ok(1) == ["dead-lettered(1)", "flush-later"]


def test_ordered_keys_one_at_a_time_and_failures_retried_in_place() -> None:
    """Ordered routes: one message per key between source and sink; failures retried in place."""
    p = Play(ordered=True, retry=(5.0, 30.0))
    p.deliver(1, key="a")
    p.deliver(2, key="a")
    p.deliver(3, key="b")
    assert p.stage(1, 2, 3) == ["publish(1)", "publish(3)"]
    assert p.book.held_for_order == 1
    assert p.nack(1) == ["retried(1)", "later(5s, 1)"]
    assert p.fire() == ["publish(1)"]
    assert p.ack(1) == ["delivered(1)", "flush-later", "publish(2)"]
    assert p.ack(2) == ["delivered(2)"]
    assert p.ack(3) == ["delivered(3)"]
    assert p.flush() == ["ack(1, 2, 3)"]


def test_ordered_dead_letter_releases_the_key_for_the_next_message() -> None:
    p = Play(ordered=True, retry=())
    p.deliver(1, key="a")
    p.deliver(2, key="a")
    assert p.stage(1, 2) == ["publish(1)"]
    assert p.nack(1) == ["aside(dead-letter:nacked, 1)", "publish(2)"]


def test_a_refused_set_aside_is_tried_again_later() -> None:
    p = Play()
    p.deliver(1, size=10)
    p.stage(1, refuse={1: "personal-number"})
    assert p.aside_nack(1) == ["set-aside-failed(1)", "later(5s, 1)"]
    assert p.fire() == ["aside(quarantine:personal-number, 1)"]
    assert p.aside_ok(1) == ["quarantined(1)", "flush-later"]


def test_sink_down_messages_wait_and_are_published_when_it_returns() -> None:
    p = Play()
    p.book.sink_ready(False)
    p.deliver(1)
    assert p.stage(1) == []
    assert p.book.waiting_to_publish == 1
    assert p.render(p.book.sink_ready(True)) == ["publish(1)"]


def test_a_blocked_broker_stops_publishing_until_unblocked() -> None:
    """connection.blocked: flow control is a set of reasons; nothing is published while it is not empty."""
    p = Play()
    p.blocked("sink broker blocked: memory")
    p.deliver(1)
    assert p.stage(1) == []
    assert p.book.blocked_by == {"sink broker blocked: memory"}
    assert p.blocked("sink broker blocked: memory", on=False) == ["publish(1)"]


def test_a_lost_sink_channel_publishes_the_unconfirmed_again_in_order() -> None:
    p = Play()
    for t in (1, 2, 3):
        p.deliver(t)
    p.stage(1, 2, 3)
    p.ack(1)
    assert p.sink_lost(2, 3) == ["republished(2)", "publish(2)", "publish(3)"]


def test_a_lost_source_channel_makes_its_deliveries_stale_and_acknowledges_none() -> None:
    """Restart, don't repair: a confirm after the loss still records the delivery (dedup), acks nothing."""
    p = Play()
    p.deliver(1)
    p.deliver(2)
    p.stage(1, 2)
    p.source_lost()
    assert p.items[1].state is State.STALE
    assert p.ack(1) == ["delivered(1)"]  # it did reach the sink: dedup must know it
    assert p.flush() == []


def test_channel_loss_mid_confirm_the_redelivered_copy_waits_for_the_first() -> None:
    """A redelivery of an id still unconfirmed joins that publish; a nack then retries it, never loses it."""
    p = Play()
    p.deliver(1)
    p.stage(1)
    p.source_lost()
    p.reopen()
    p.deliver(7, id="m1")  # the broker redelivers it on the new channel
    assert p.stage(7) == []
    assert p.nack(1) == ["retried(1)", "aside(retry:nacked, 1)"]
    assert p.legs["aside 1"].parents[0].tag == 7  # the live copy goes to the retry tier
    assert p.aside_ok(1) == ["flush-later"]
    assert p.flush() == ["ack(7)"]


def test_a_stale_unpublished_leg_is_dropped_and_frees_its_key() -> None:
    p = Play(ordered=True)
    p.deliver(1, key="a")
    p.deliver(2, key="a")
    p.stage(1, 2)
    p.source_lost()
    p.reopen()
    assert p.ack(1) == ["delivered(1)"]
    p.deliver(5, id="m2", key="a")
    assert p.stage(5) == ["publish(2)"]


def test_drain_flushes_and_the_book_goes_idle() -> None:
    p = Play()
    p.deliver(1)
    p.stage(1)
    p.ack(1)
    assert p.render(p.book.drain()) == ["ack(1)"]
    assert p.book.idle


# ------------------------------------------------------------------------ N:M settlement


def _packed(p: Play, tags: tuple[int, ...]) -> list[str]:
    items = p.take()
    env = Message(message_id="mP", route="r", body=b"env")
    return p.staged(items, [Output(tuple(range(len(items))), message=env)])


def test_several_items_packed_into_one_leg_are_acknowledged_after_its_confirm() -> None:
    """N:1: every source item of a packed envelope is acknowledged once the envelope is durable."""
    p = Play()
    for t in (1, 2, 3):
        p.deliver(t)
    assert _packed(p, (1, 2, 3)) == ["publish(P)"]
    assert p.ack("P") == ["delivered(P)", "flush-later"]
    assert p.flush() == ["ack(1, 2, 3)"]


def test_a_packed_leg_dead_lettered_sets_aside_each_original_alone() -> None:
    p = Play(retry=())
    for t in (1, 2):
        p.deliver(t)
    _packed(p, (1, 2))
    assert p.nack("P") == ["aside(dead-letter:nacked, 1)", "aside(dead-letter:nacked, 2)"]


def test_one_item_unpacked_into_several_legs_is_acknowledged_after_all_of_them() -> None:
    """1:N: an envelope is acknowledged only when every inner message is durable at the sink."""
    p = Play()
    p.deliver(1)
    items = p.take()
    inner = [Message(message_id=f"m1{i}", route="r", body=b"i") for i in range(3)]
    outs = [Output((0,), message=m) for m in inner]
    assert p.staged(items, outs) == ["publish(10)", "publish(11)", "publish(12)"]
    assert p.ack(10) == ["delivered(10)"]
    assert p.ack(12) == ["delivered(12)"]
    assert p.flush() == []
    assert p.ack(11) == ["delivered(11)", "flush-later"]
    assert p.flush() == ["ack(1)"]


def test_one_bad_inner_message_is_quarantined_alone() -> None:
    """After unpacking, a refused inner message is set aside by itself; its neighbours go on."""
    p = Play()
    p.deliver(1)
    items = p.take()
    good = Message(message_id="m10", route="r", body=b"ok")
    bad = Message(message_id="m11", route="r", body=b"no")
    outs = [Output((0,), message=good),
            Output((0,), refusal=Refusal("personal-number", "offset 3"), refused=bad)]
    assert p.staged(items, outs) == ["aside(quarantine:personal-number, 11)", "publish(10)"]
    aside = p.legs["aside 11"]
    assert not aside.original and aside.message is bad
    assert p.aside_ok(11) == ["quarantined(11)"]
    assert p.ack(10) == ["delivered(10)", "flush-later"]
    assert p.flush() == ["ack(1)"]


def test_an_unpacked_leg_that_fails_is_retried_in_place_not_sent_to_the_source_tier() -> None:
    """An inner message cannot go back to a source queue that expects envelopes: retry in place."""
    p = Play()
    p.deliver(1)
    items = p.take()
    outs = [Output((0,), message=Message(message_id=f"m1{i}", route="r", body=b"i")) for i in range(2)]
    p.staged(items, outs)
    assert p.returned(10) == ["retried(10)", "later(5s, 10)"]


def test_a_packed_leg_on_an_ordered_route_holds_every_key_it_carries() -> None:
    p = Play(ordered=True)
    p.deliver(1, key="a")
    p.deliver(2, key="b")
    _packed(p, (1, 2))
    p.deliver(3, key="b")
    assert p.stage(3) == []  # waits: key b is on its way inside the packed leg
    assert p.ack("P") == ["delivered(P)", "flush-later", "publish(3)"]


# ------------------------------------------------------------------------ a sink's refusal with a reason


def test_a_sink_refusal_with_a_quarantine_reason_sets_the_original_aside_at_once() -> None:
    """A file sink finds a chunk that does not fit: no retry tier, quarantine with the sink's reason."""
    p = Play(retry=(5.0, 30.0))
    p.deliver(1)
    p.stage(1)
    assert p.refuse(1, "chunk-altered", "chunk 3 sha256 differs") == ["aside(quarantine:chunk-altered, 1)"]
    aside = p.legs["aside 1"]
    assert aside.original and aside.wire == {"tag": 1} and aside.detail == "chunk 3 sha256 differs"
    assert p.aside_ok(1) == ["quarantined(1)", "flush-later"]
    assert p.flush() == ["ack(1)"]


def test_a_conflict_is_dead_lettered_with_its_reason() -> None:
    """Another file holds the name at the sink: dead-lettered (never overwritten), reason conflict."""
    p = Play()
    p.deliver(1)
    p.stage(1)
    assert p.refuse(1, "conflict") == ["aside(dead-letter:conflict, 1)"]
    assert p.legs["aside 1"].detail == "the sink refused it (conflict)"
    assert p.aside_ok(1) == ["dead-lettered(1)", "flush-later"]


def test_a_refusal_with_a_retry_reason_is_a_failed_attempt_under_that_reason() -> None:
    p = Play(ordered=True, retry=(5.0,))
    p.deliver(1, key="f")
    p.stage(1)
    assert p.refuse(1, "disk-full") == ["retried(1)", "later(5s, 1)"]
    assert p.fire() == ["publish(1)"]
    assert p.refuse(1, "disk-full") == ["aside(dead-letter:disk-full, 1)"]


def test_a_refusal_on_an_ordered_route_frees_the_key_for_the_next_leg() -> None:
    """Chunks of one file are one key: a refused chunk is set aside, the next one goes on."""
    p = Play(ordered=True)
    p.deliver(1, key="f")
    p.deliver(2, key="f")
    assert p.stage(1, 2) == ["publish(1)"]
    assert p.refuse(1, "chunk-missing") == ["aside(quarantine:chunk-missing, 1)", "publish(2)"]


def test_a_refused_leg_of_several_made_from_one_item_sets_aside_only_itself() -> None:
    p = Play()
    p.deliver(1)
    items = p.take()
    outs = [Output((0,), message=Message(message_id=f"m1{i}", route="r", body=b"i")) for i in range(2)]
    p.staged(items, outs)
    assert p.refuse(11, "conflict") == ["aside(dead-letter:conflict, 11)"]
    assert not p.legs["aside 11"].original
    assert p.aside_ok(11) == ["dead-lettered(11)"]
    assert p.ack(10) == ["delivered(10)", "flush-later"]
    assert p.flush() == ["ack(1)"]


def test_a_refusal_of_a_stale_leg_sets_nothing_aside() -> None:
    """Its source channel is gone: the source gives the item again; nothing is set aside for it."""
    p = Play()
    p.deliver(1)
    p.stage(1)
    p.source_lost()
    assert p.refuse(1, "conflict") == []
    assert p.book.published == 0
