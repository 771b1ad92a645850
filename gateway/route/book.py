"""The route book: the hop contract as a pure state machine (no I/O, no asyncio, no clock).

NAME
    book - what each message of one route is waiting for, and what to do next

SYNOPSIS
    book = RouteBook(RouteRules(...))
    actions = book.delivered(gen, tag, message, wire, now)      # the source handed over a delivery
    items = book.take(512)                                      # what the stages may work on
    actions = book.staged(items, outputs, already_delivered)    # what the stages made of them
    actions = book.confirmed(leg, Confirm.ACK)                  # the sink (or a set-aside) is durable
    ...                                                         # the runner performs the actions

DESCRIPTION
    An **item** is one source delivery (an AMQP delivery, a file). A **leg** is one thing the book
    waits on to become durable somewhere else: a publish to the sink, or a set-aside (a retry tier,
    ``jgw.dead-letter``, ``jgw.quarantine``, done by the source). Settlement is N:M: the stages may
    make several legs from one item (an unpacked envelope, a file in chunks) or one leg from several
    items (a packed envelope); each leg names its parents. The one rule:

        an item is acknowledged at its source only when every leg made from it is durable,
        and after the evidence and dedup ids recorded for those legs are committed.

    Item states: RECEIVED → IN_STAGES → AT_SINK / SET_ASIDE → CONFIRMED → SETTLED; an item whose
    source channel was lost is STALE (the source redelivers it; nothing of it is repaired in place).

    Decisions taken here, each a rule of docs/architecture.md's hop-contract table:

    * intake: over ``max_size`` or (ordered route) without its ordering key → quarantine;
    * a refusal from a stage → set aside with its reason (quarantine, or dead-letter for
      ``stage-error``); what is set aside is the source's original when the refused message is its
      only descendant, else the refused message itself (one inner message of a packed envelope);
    * duplicates: an id already delivered → settled without publishing; an id still on its way (a
      redelivery after a channel loss, or the source sent it twice) → the new item joins that leg
      as a parent and settles with it, so a copy is never acknowledged before the first is durable;
    * ordered routes: per-key FIFO, at most one leg per key between stages and sink; a leg of a
      packed envelope holds every key it carries; failures are retried in place after the tier
      delay (a retry queue could be overtaken);
    * sink failures (returned as unroutable, nacked) → next retry tier, then dead-letter; legs that
      are not a source original (unpacked) are always retried in place: their source queue expects
      the packed form;
    * a sink's refusal with a reason (``Refuse``: a file sink that holds another file under the
      name, a chunk that does not fit) → given up at once and set aside with that reason when the
      reason's disposition is quarantine or dead-letter; a retry code is a failed attempt as above;
    * a lost sink channel: its unconfirmed legs are published again, in order, unless every parent
      is stale; a lost source channel: every item of it is stale, legs not yet published are dropped;
    * flow control is data: ``blocked_by`` is a set of reasons (sink down, broker blocked, draining);
      while it is not empty nothing is published;
    * acknowledgement: settled items are acknowledged in batches (``ack_batch`` or ``ack_interval``),
      each batch after one commit when evidence or dedup must be durable first.

    Actions out: ``Publish``, ``SetAside``, ``Later`` (a timer), ``FlushLater``, ``Commit``, ``Ack``,
    ``Restart`` (give the source's deliveries back), ``Outcome`` (delivered, duplicate, quarantined,
    dead-lettered, retried, republished: for metrics, evidence and logs, emitted before the commit
    that covers it).

Security: reads ids, sizes and ordering keys; never looks at bodies.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from gateway.message import Message
from gateway.reasons import Disposition, reason
from gateway.route.stages import Refusal


class State(Enum):
    RECEIVED = "received"
    IN_STAGES = "in stages"
    AT_SINK = "at sink"
    SET_ASIDE = "set aside"
    CONFIRMED = "confirmed"
    SETTLED = "settled"
    STALE = "stale"


class Dest(Enum):
    SINK = "sink"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"
    QUARANTINE = "quarantine"


class LegState(Enum):
    WAITING_KEY = "waiting for its key"
    PENDING = "pending"
    PUBLISHED = "published"
    DELAYED = "delayed"
    DONE = "done"


class Confirm(Enum):
    ACK = "ack"  # the broker (or the filesystem) took responsibility
    NACK = "nack"  # refused (internal error, or a queue at its limit with reject-publish)
    RETURNED = "returned"  # unroutable: no queue matched (mandatory); acked but stored nowhere


@dataclass(frozen=True, slots=True)
class Refuse:
    """A sink's answer that it will not take this put, with a code of ``gateway.reasons``: a
    quarantine or dead-letter code gives the leg up at once (set aside with that reason, as a stage
    refusal is); a retry code counts as a failed attempt, like a nack, under that reason."""

    reason: str
    detail: str = ""

    def __post_init__(self) -> None:
        reason(self.reason)  # a code from the one table, or a bug


Result = Confirm | Refuse


@dataclass(eq=False, slots=True)
class Item:
    """One source delivery. ``message`` and ``wire`` (the source's own properties object) are as
    received: what is set aside is always the original, never a half-processed form."""

    gen: int
    tag: int
    message: Message
    wire: Any
    received_at: float
    state: State = State.RECEIVED
    legs_open: int = 0
    acked: bool = False

    @property
    def message_id(self) -> str:
        return self.message.message_id

    def __repr__(self) -> str:
        return f"Item(gen={self.gen}, tag={self.tag}, id={self.message_id!r}, {self.state.value})"


@dataclass(eq=False, slots=True)
class Leg:
    """One thing that must become durable: ``message`` to the sink, or set aside to ``dest``.
    ``wire`` is the parent's original properties when the leg carries a source original."""

    dest: Dest
    parents: list[Item]
    message: Message
    wire: Any = None
    original: bool = False  # the content is a source original (``wire`` holds its properties)
    sole: bool = True  # the only leg made from its parents: they can be set aside as they came
    keys: tuple[str, ...] = ()
    attempt: int = 0
    reason: str = ""
    detail: str = ""
    tier: int = 0
    state: LegState = LegState.PENDING
    #: joined later (an id already on its way): they settle with this leg, as duplicates
    joined: list[Item] = field(default_factory=list)

    @property
    def message_id(self) -> str:
        return self.message.message_id

    def live(self, gen: int) -> bool:
        """Some parent (or joined copy) belongs to the source channel generation ``gen``."""
        for p in self.parents:
            if p.gen == gen:
                return True
        return bool(self.joined) and any(p.gen == gen for p in self.joined)

    def __repr__(self) -> str:
        return f"Leg({self.dest.value}, id={self.message_id!r}, {self.state.value}, parents={len(self.parents)})"


@dataclass(slots=True)
class Output:
    """What the stages made of a batch: ``message`` for the sink, or ``refusal`` of ``refused``.
    ``parents`` index the batch. An output is its parents' *sole* output when none of them made
    another: then what is set aside for it is the parents' originals."""

    parents: tuple[int, ...]
    message: Message | None = None
    refusal: Refusal | None = None
    refused: Message | None = None


# ---------------------------------------------------------------------------------------- actions

@dataclass(frozen=True, slots=True)
class Publish:
    leg: Leg


@dataclass(frozen=True, slots=True)
class SetAside:
    leg: Leg


@dataclass(frozen=True, slots=True)
class Later:
    """Call ``book.due(leg)`` after ``delay`` seconds."""
    delay: float
    leg: Leg


@dataclass(frozen=True, slots=True)
class FlushLater:
    """Call ``book.flush()`` after ``delay`` seconds."""
    delay: float


@dataclass(frozen=True, slots=True)
class Commit:
    """Make the evidence and dedup ids recorded so far durable; then ``book.committed(token, ok)``."""
    token: int


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledge these deliveries of source channel generation ``gen``."""
    gen: int
    tags: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Restart:
    """Close the source channel of ``gen``: its unacknowledged deliveries go back to the queue."""
    gen: int
    why: str


class Event(Enum):
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    DEAD_LETTERED = "dead-lettered"
    RETRIED = "retried"
    REPUBLISHED = "republished"
    SET_ASIDE_FAILED = "set-aside-failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """Something worth a metric, an audit record or a log line. ``item`` for a duplicate."""
    event: Event
    leg: Leg | None = None
    item: Item | None = None
    count: int = 1


Action = Publish | SetAside | Later | FlushLater | Commit | Ack | Restart | Outcome


@dataclass(frozen=True, slots=True)
class RouteRules:
    """What the book needs of a route's config (``gateway.config.RouteConfig``)."""

    route: str
    retry: tuple[float, ...] = (5.0, 30.0, 300.0)
    max_size: int = 8 * 1024 * 1024
    ordered: bool = False
    ordering_header: str | None = None
    dedup: bool = True
    window: int = 1000
    ack_batch: int = 100
    ack_interval: float = 0.05
    commit_first: bool = True
    side_retry: float = 5.0


class RouteBook:
    """The state of one route's messages between its source and its sink."""

    def __init__(self, rules: RouteRules) -> None:
        self.rules = rules
        self.gen = 0
        self.source_up = False
        self.blocked_by: set[str] = {"sink down", "set-aside down"}
        self.draining = False
        self._items: dict[int, Item] = {}  # tag -> item of the current generation, until acknowledged
        self._inbox: deque[Item] = deque()  # received, waiting for the stages
        self._pending: deque[Leg] = deque()  # sink legs ready to publish
        self._side: deque[Leg] = deque()  # set-aside legs ready to publish
        self._published = 0  # sink legs published, confirm outstanding
        self._keys: dict[str, deque[Leg]] = {}  # ordering key -> its legs; the head one is on its way
        self._active: dict[str, Leg] = {}  # message id -> the sink leg carrying it
        self._settled: list[Item] = []  # waiting for commit + ack
        self._commit_token = 0
        self._committing: tuple[int, list[Item]] | None = None
        self._flush_timer = False
        self._flush_again = False

    # ------------------------------------------------------------------------------ intake

    def source_opened(self) -> int:
        """A new source channel starts consuming; returns its generation (deliveries carry it)."""
        self.gen += 1
        self.source_up = True
        return self.gen

    def delivered(self, gen: int, tag: int, message: Message, wire: Any, now: float) -> list[Action]:
        if gen != self.gen:
            return []  # a delivery on a channel already given up: the broker requeues it
        item = Item(gen, tag, message, wire, now)
        self._items[tag] = item
        r = self.rules
        if message.size > r.max_size:
            return self._set_aside_items([item], Dest.QUARANTINE, "too-large",
                                         f"{message.size} bytes is over max_size {r.max_size}")
        if r.ordered and message.order_key is None:
            return self._set_aside_items([item], Dest.QUARANTINE, "order-key-missing",
                                         f"ordered route needs header {r.ordering_header!r}")
        self._inbox.append(item)
        return []

    def take(self, limit: int) -> list[Item]:
        """Items for the stages, oldest first; they are IN_STAGES until ``staged``."""
        out: list[Item] = []
        while self._inbox and len(out) < limit:
            item = self._inbox.popleft()
            if item.gen == self.gen:
                item.state = State.IN_STAGES
                out.append(item)
        return out

    @property
    def inbox(self) -> int:
        return len(self._inbox)

    def staged(self, items: Sequence[Item], outputs: Sequence[Output],
               already_delivered: Iterable[str] = ()) -> list[Action]:
        """What the stages made of ``items``. ``already_delivered``: ids of outputs the dedup store
        knows as delivered."""
        actions: list[Action] = []
        gen = self.gen
        done_before = set(already_delivered)
        made = [0] * len(items)
        for out in outputs:
            for i in out.parents:
                made[i] += 1
        for out in outputs:
            ps = out.parents
            if len(ps) == 1:  # the usual case: one output of one item
                first = items[ps[0]]
                if first.gen != gen:
                    continue
                live = [first]
                sole = made[ps[0]] == 1
            else:
                live = [items[i] for i in ps if items[i].gen == gen]
                if not live:
                    continue
                sole = all(made[i] == 1 for i in ps)
            if out.refusal is not None:
                actions += self._refused(live, out, sole)
            elif out.message is not None:
                done = self._to_sink(live, out, sole, done_before)
                if done:
                    actions += done
        for i, item in enumerate(items):
            if item.gen != gen:
                continue
            if not made[i]:  # a stage that lost a message is a bug: keep it
                actions += self._set_aside_items([item], Dest.DEAD_LETTER, "stage-error",
                                                 "no stage output for this message")
            elif item.state is State.IN_STAGES and item.legs_open == 0:
                actions += self._settle(item)  # nothing of it on its way (a duplicate)
        actions += self._pump()
        return actions

    def _refused(self, parents: list[Item], out: Output, sole: bool) -> list[Action]:
        refusal = out.refusal
        assert refusal is not None
        dest = Dest.QUARANTINE if reason(refusal.reason).disposition is Disposition.QUARANTINE else Dest.DEAD_LETTER
        if sole or out.refused is None:
            return self._set_aside_items(parents, dest, refusal.reason, refusal.detail)
        leg = Leg(dest, parents, out.refused, sole=False, reason=refusal.reason, detail=refusal.detail,
                  attempt=parents[0].message.attempt)
        return self._open_side(leg)

    def _to_sink(self, parents: list[Item], out: Output, sole: bool, done_before: set[str]) -> list[Action]:
        msg = out.message
        assert msg is not None
        mid = msg.message_id
        if self.rules.dedup:
            if mid in done_before:  # they settle below, with nothing on its way
                return [Outcome(Event.DUPLICATE, item=p) for p in parents]
            other = self._active.get(mid)
            if other is not None:
                for p in parents:  # on its way already: settle together with that copy
                    other.joined.append(p)
                    p.legs_open += 1
                    p.state = State.AT_SINK
                return []
        ordered = self.rules.ordered
        if sole and len(parents) == 1:  # one item, one leg: its original goes on as it came
            p = parents[0]
            leg = Leg(Dest.SINK, parents, msg, wire=p.wire, original=True, sole=True,
                      keys=(p.message.order_key or "",) if ordered else (), attempt=p.message.attempt)
            p.legs_open += 1
            p.state = State.AT_SINK
        else:
            # the keys a leg holds: its parents' (packed), or its own (one of several made of one)
            keys = tuple(p.message.order_key or "" for p in parents) if sole else (msg.order_key or "",)
            leg = Leg(Dest.SINK, parents, msg, sole=sole, keys=tuple(dict.fromkeys(keys)) if ordered else (),
                      attempt=max(p.message.attempt for p in parents))
            for p in parents:
                p.legs_open += 1
                p.state = State.AT_SINK
        self._active[mid] = leg
        if leg.keys:
            for k in leg.keys:
                self._keys.setdefault(k, deque()).append(leg)
            leg.state = LegState.PENDING if self._at_head(leg) else LegState.WAITING_KEY
            if leg.state is LegState.WAITING_KEY:
                return []
        self._pending.append(leg)
        return []

    def _at_head(self, leg: Leg) -> bool:
        return all(self._keys[k][0] is leg for k in leg.keys)

    # ------------------------------------------------------------------------------ sink

    def sink_ready(self, ready: bool, why: str = "sink down") -> list[Action]:
        return self._flow(why, not ready)

    def side_ready(self, ready: bool, why: str = "set-aside down") -> list[Action]:
        return self._flow(why, not ready)

    def blocked(self, why: str, on: bool) -> list[Action]:
        """A broker blocked (``connection.blocked``) or unblocked publishing: ``why`` names it."""
        return self._flow(why, on)

    def _flow(self, why: str, on: bool) -> list[Action]:
        if on:
            self.blocked_by.add(why)
            return []
        self.blocked_by.discard(why)
        return self._pump()

    def _sink_blocked(self) -> bool:
        return any(not b.startswith("set-aside") for b in self.blocked_by)

    def _side_blocked(self) -> bool:
        return any(b.startswith("set-aside") for b in self.blocked_by)

    def _pump(self) -> list[Action]:
        actions: list[Action] = []
        if not self._side_blocked():
            while self._side:
                leg = self._side.popleft()
                if not leg.live(self.gen):
                    continue
                leg.state = LegState.PUBLISHED
                actions.append(SetAside(leg))
        if not self._sink_blocked():
            while self._pending and self._published < self.rules.window:
                leg = self._pending.popleft()
                if leg.state is not LegState.PENDING:
                    continue
                if not leg.live(self.gen):
                    self._release(leg)
                    continue
                leg.state = LegState.PUBLISHED
                self._published += 1
                actions.append(Publish(leg))
        return actions

    def confirmed(self, leg: Leg, result: Result) -> list[Action]:
        """The sink (or, for a set-aside, the source's broker) settled a publish of ours."""
        if leg.state is not LegState.PUBLISHED:
            return []
        if leg.dest is not Dest.SINK:
            return self._side_confirmed(leg, Confirm.NACK if isinstance(result, Refuse) else result)
        self._published -= 1
        if isinstance(result, Refuse):
            return self._refused_by_sink(leg, result) + self._pump()
        if result is Confirm.ACK:
            actions: list[Action] = [Outcome(Event.DELIVERED, leg=leg)]
            if leg.joined:
                actions += [Outcome(Event.DUPLICATE, item=p) for p in leg.joined]
            actions += self._leg_done(leg)
            if self._pending or self._side:
                actions += self._pump()
            return actions
        return self._sink_failed(leg, "unroutable" if result is Confirm.RETURNED else "nacked") + self._pump()

    def _refused_by_sink(self, leg: Leg, refusal: Refuse) -> list[Action]:
        disposition = reason(refusal.reason).disposition
        if disposition not in (Disposition.QUARANTINE, Disposition.DEAD_LETTER):
            return self._sink_failed(leg, refusal.reason)
        if not leg.live(self.gen):
            self._release(leg)
            return []
        dest = Dest.QUARANTINE if disposition is Disposition.QUARANTINE else Dest.DEAD_LETTER
        return self._give_up(leg, dest, refusal.reason, refusal.detail or f"the sink refused it ({refusal.reason})")

    def sink_lost(self, legs: Sequence[Leg]) -> list[Action]:
        """The sink channel closed with these publishes unconfirmed: publish them again, in order."""
        again: list[Leg] = []
        for leg in legs:
            if leg.state is not LegState.PUBLISHED or leg.dest is not Dest.SINK:
                continue
            self._published -= 1
            if leg.live(self.gen):
                leg.state = LegState.PENDING
                again.append(leg)
            else:
                self._release(leg)
        self._pending.extendleft(reversed(again))
        actions: list[Action] = [Outcome(Event.REPUBLISHED, count=len(again))] if again else []
        return actions + self._pump()

    def _sink_failed(self, leg: Leg, why: str) -> list[Action]:
        if not leg.live(self.gen):
            self._release(leg)
            return []
        leg.attempt += 1
        tiers = self.rules.retry
        if leg.attempt > len(tiers):
            return self._give_up(leg, Dest.DEAD_LETTER, why, f"the sink refused it {leg.attempt} times ({why})")
        delay = tiers[leg.attempt - 1]
        leg.reason = why
        if self.rules.ordered or not leg.sole:
            leg.state = LegState.DELAYED
            return [Outcome(Event.RETRIED, leg=leg), Later(delay, leg)]
        # unordered, made of source originals: a retry tier queue holds each (and brings it back)
        aside = self._replace(leg, Dest.RETRY, why, f"attempt {leg.attempt}", tier=leg.attempt - 1)
        return [Outcome(Event.RETRIED, leg=leg), *aside]

    def due(self, leg: Leg) -> list[Action]:
        """A timer of ``Later`` fired: retry a delayed leg in place."""
        if leg.state is not LegState.DELAYED:
            return []
        if leg.dest is not Dest.SINK:  # a set-aside the broker refused: try it again
            leg.state = LegState.PENDING
            self._side.append(leg)
            return self._pump()
        if not leg.live(self.gen):
            self._release(leg)
            return []
        leg.state = LegState.PENDING
        self._pending.append(leg)
        return self._pump()

    def _give_up(self, leg: Leg, dest: Dest, why: str, detail: str) -> list[Action]:
        """A sink leg will not be delivered: set aside what it carries instead."""
        return self._replace(leg, dest, why, detail)

    def _replace(self, leg: Leg, dest: Dest, why: str, detail: str, tier: int = 0) -> list[Action]:
        """Set aside, instead of the sink leg, the source originals it was made of (each on its own),
        or, for a leg that is one of several made from its parent, the leg's own message."""
        holders = self._current(leg.parents + leg.joined)
        self._release(leg)
        if leg.sole:
            actions: list[Action] = []
            for item in holders:  # each held one count for the sink leg: it passes to its set-aside
                aside = Leg(dest, [item], item.message, wire=item.wire, original=True, sole=True,
                            attempt=leg.attempt, reason=why, detail=detail, tier=tier)
                actions += self._open_side(aside, counted=True)
            return actions
        aside = Leg(dest, holders, leg.message, sole=False, attempt=leg.attempt, reason=why, detail=detail, tier=tier)
        return self._open_side(aside, counted=True)

    # ------------------------------------------------------------------------------ set aside

    def _set_aside_items(self, items: Sequence[Item], dest: Dest, why: str, detail: str, *,
                         attempt: int | None = None, counted: bool = False) -> list[Action]:
        actions: list[Action] = []
        for item in items:
            leg = Leg(dest, [item], item.message, wire=item.wire, original=True, reason=why, detail=detail,
                      attempt=item.message.attempt if attempt is None else attempt)
            actions += self._open_side(leg, counted=counted)
        return actions

    def _open_side(self, leg: Leg, counted: bool = False) -> list[Action]:
        """Queue a set-aside leg; ``counted``: its parents already count a leg being replaced."""
        for p in leg.parents:
            if not counted:
                p.legs_open += 1
            if p.state is not State.AT_SINK:
                p.state = State.SET_ASIDE
        leg.state = LegState.PENDING
        self._side.append(leg)
        return self._pump()

    def _side_confirmed(self, leg: Leg, result: Confirm) -> list[Action]:
        if result is not Confirm.ACK:
            leg.state = LegState.DELAYED
            return [Outcome(Event.SET_ASIDE_FAILED, leg=leg), Later(self.rules.side_retry, leg)]
        actions: list[Action] = []
        if leg.dest is Dest.QUARANTINE:
            actions.append(Outcome(Event.QUARANTINED, leg=leg))
        elif leg.dest is Dest.DEAD_LETTER:
            actions.append(Outcome(Event.DEAD_LETTERED, leg=leg))
        return actions + self._leg_done(leg) + self._pump()

    def side_lost(self, legs: Sequence[Leg]) -> list[Action]:
        """The set-aside channel closed with these unconfirmed: publish them again."""
        again = [leg for leg in legs if leg.state is LegState.PUBLISHED and leg.live(self.gen)]
        for leg in again:
            leg.state = LegState.PENDING
        self._side.extendleft(reversed(again))
        return self._pump()

    # ------------------------------------------------------------------------------ settlement

    def _leg_done(self, leg: Leg) -> list[Action]:
        self._release(leg)
        actions: list[Action] = []
        gen = self.gen
        for holders in (leg.parents, leg.joined):
            for p in holders:
                p.legs_open -= 1
                if p.legs_open == 0 and p.state is not State.STALE and p.gen == gen:
                    actions += self._settle(p)
        return actions

    def _current(self, items: Iterable[Item]) -> list[Item]:
        return [i for i in items if i.gen == self.gen]

    def _release(self, leg: Leg) -> None:
        """The leg no longer occupies its message id or its ordering keys."""
        if leg.state is LegState.DONE:
            return
        leg.state = LegState.DONE
        if leg.dest is not Dest.SINK:
            return
        if self._active.get(leg.message_id) is leg:
            del self._active[leg.message_id]
        for k in leg.keys:
            waiting = self._keys.get(k)
            if not waiting:
                continue
            if waiting[0] is leg:
                waiting.popleft()
            else:
                with contextlib.suppress(ValueError):
                    waiting.remove(leg)
            if not waiting:
                del self._keys[k]
                continue
            head = waiting[0]
            if head.state is LegState.WAITING_KEY and self._at_head(head):
                head.state = LegState.PENDING
                self._pending.append(head)

    def _settle(self, item: Item) -> list[Action]:
        item.state = State.CONFIRMED
        self._settled.append(item)
        if len(self._settled) >= self.rules.ack_batch:
            return self.flush()
        if not self._flush_timer:
            self._flush_timer = True
            return [FlushLater(self.rules.ack_interval)]
        return []

    def flush(self) -> list[Action]:
        """Acknowledge what is settled (after a commit when evidence must be durable first)."""
        self._flush_timer = False
        if self._committing is not None:
            self._flush_again = True
            return []
        batch = [i for i in self._settled if i.gen == self.gen]
        self._settled = []
        if not batch:
            return []
        if not self.rules.commit_first:
            return self._ack(batch)
        self._commit_token += 1
        self._committing = (self._commit_token, batch)
        return [Commit(self._commit_token)]

    def committed(self, token: int, ok: bool) -> list[Action]:
        if self._committing is None or self._committing[0] != token:
            return []
        _, batch = self._committing
        self._committing = None
        if not ok:
            # nothing acknowledged: give the deliveries back to the queue (they come back; dedup
            # knows what reached the sink once the commit works again)
            return [Restart(self.gen, "cannot make evidence durable")]
        actions = self._ack(batch)
        if self._flush_again or len(self._settled) >= self.rules.ack_batch:
            self._flush_again = False
            actions += self.flush()
        elif self._settled and not self._flush_timer:
            self._flush_timer = True
            actions.append(FlushLater(self.rules.ack_interval))
        return actions

    def _ack(self, batch: list[Item]) -> list[Action]:
        tags = []
        for item in batch:
            if item.gen != self.gen:
                continue
            item.state = State.SETTLED
            item.acked = True
            self._items.pop(item.tag, None)
            tags.append(item.tag)
        return [Ack(self.gen, tuple(tags))] if tags else []

    # ------------------------------------------------------------------------------ channel loss, drain

    def source_lost(self, gen: int) -> list[Action]:
        """The source channel of ``gen`` is gone: every delivery of it is back in the queue."""
        if gen != self.gen:
            return []
        self.source_up = False
        self.gen += 1
        for item in self._items.values():
            item.state = State.STALE
        self._items.clear()
        self._inbox.clear()
        self._settled = []
        if self._committing is not None:
            self._committing = (self._committing[0], [])
        self._flush_again = False
        for leg in list(self._pending) + [leg for q in self._keys.values() for leg in q]:
            if leg.state in (LegState.PENDING, LegState.WAITING_KEY, LegState.DELAYED) and not leg.live(self.gen):
                self._release(leg)
        self._pending = deque(leg for leg in self._pending if leg.state is LegState.PENDING)
        self._side = deque(leg for leg in self._side if leg.live(self.gen))
        return []

    def drain(self) -> list[Action]:
        """Stop taking messages (the runner cancels the consumer); finish what is in hand."""
        self.draining = True
        return self.flush()

    # ------------------------------------------------------------------------------ views

    @property
    def idle(self) -> bool:
        """Nothing in hand: every delivery of the current generation is acknowledged."""
        return not self._items and self._committing is None

    @property
    def in_flight(self) -> int:
        return len(self._items)

    @property
    def waiting_to_publish(self) -> int:
        return sum(1 for leg in self._pending if leg.state is LegState.PENDING)

    @property
    def held_for_order(self) -> int:
        return sum(1 for q in self._keys.values() for leg in q if leg.state is LegState.WAITING_KEY)

    @property
    def published(self) -> int:
        return self._published

    def items(self) -> list[Item]:
        return list(self._items.values())
