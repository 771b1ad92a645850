"""The hop contract of one route: where a message is taken, passed, published and acknowledged.

    source queue ──deliver──▶ stages ──publish(mandatory, confirm)──▶ sink exchange
         ▲                                       │
         └───────── basic.ack ◀── settled ◀──────┘  (confirmed, or set aside and confirmed)

A source delivery is acknowledged only after the message is durably elsewhere: the sink confirmed
it; or it was found to be a duplicate of a delivered id; or it was set aside — published with
confirm to a retry tier, ``jgw.dead-letter`` or ``jgw.quarantine`` on the source broker. No
message is ever held only in memory: until it is acknowledged it is still in the source queue, and
a crash or a lost channel simply redelivers it (the ``RouteRunner`` restarts channels rather than
repair state). Dedup ids and evidence are committed before the acknowledgement that depends on
them (``_flush_acks``, the one place a source delivery is acknowledged).

Per-message failures at the sink (returned as unroutable, or nacked) go to the next delayed-retry
tier, then to the dead-letter queue with the reason. Routes with an ordering header keep per-key
FIFO: at most one message per key is between source and sink at a time, the others wait behind it
(unacknowledged), and a failing message is retried *in place* after the tier delay instead of
going to a retry queue it could be overtaken from; a crash therefore leaves the order intact in
the source queue. Sink outages are not failures: messages wait (unacknowledged, within the
prefetch window) and are published when the sink returns; publishes that were not confirmed when
a channel was lost are published again, in order, with the same message id.

Security: reads message properties and ids; passes bodies between stages and brokers without
looking at them. Logs and metrics carry route names, ids, sizes and reason codes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pika
from pika.exceptions import AMQPError

from gateway.amqp import AsyncChannel, ChannelClosed, ConfirmChannel, Link
from gateway.audit import payload_digest
from gateway.commit import Committer, Evidence, NoEvidence
from gateway.config import RouteConfig
from gateway.confirms import Confirm
from gateway.dedup import DedupStore
from gateway.ledger import SourceLedger
from gateway.message import (
    H_ATTEMPT,
    H_DETAIL,
    H_FAILED_AT,
    H_NODE,
    H_ORIGIN_QUEUE,
    H_REASON,
    H_ROUTE,
    Message,
    sent_at,
)
from gateway.metrics import Metrics
from gateway.stage import Refusal, Stage, chain_is_blocking, run_chain
from gateway.topology import DEAD_LETTER_QUEUE, QUARANTINE_QUEUE, retry_queue, sink_topology, source_topology

log = logging.getLogger("jgw.hop")

BATCH_MAX = 512
STALL_SECONDS = 30.0  # a worker that has not taken its next batch for this long is stuck (watchdog)
# Headers that describe a message's past at this hop; they are not forwarded to the sink.
_HOP_HEADERS = frozenset({H_ATTEMPT, H_REASON, H_DETAIL, H_FAILED_AT, H_ORIGIN_QUEUE})


class Dest(Enum):
    SINK = "sink"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"
    QUARANTINE = "quarantine"


@dataclass(slots=True, eq=False)
class Item:
    """One source delivery on its way. ``body`` and ``props`` are as received: what is set aside is
    always the original, never a half-processed form. ``out_*`` is what goes to the sink."""

    gen: int
    tag: int
    message_id: str
    body: bytes
    props: pika.BasicProperties
    attempt: int
    order_key: str | None
    received_at: float
    out_id: str = ""
    out_body: bytes = b""
    out_props: pika.BasicProperties | None = None
    dest: Dest = Dest.SINK
    tier: int = 0
    reason: str = ""
    detail: str = ""
    counted: bool = False  # holds an entry in RouteRunner._active_ids
    in_tracker: bool = False  # published, confirm outstanding

    def message(self, route: str) -> Message:
        """The delivery as stages see it."""
        p = self.props
        return Message(message_id=self.message_id, route=route, body=self.body, headers=p.headers or {},
                       content_type=p.content_type, content_encoding=p.content_encoding,
                       correlation_id=p.correlation_id, type=p.type, app_id=p.app_id, timestamp=p.timestamp,
                       attempt=self.attempt, order_key=self.order_key, received_at=self.received_at)

    @property
    def sent_at(self) -> float | None:
        return sent_at(self.props.headers, self.props.timestamp)


@dataclass
class RouteStatus:
    route: str
    state: str
    source: str
    sink: str
    in_flight: int
    waiting_to_publish: int
    held_for_order: int
    oldest_age_seconds: float
    errors: dict[str, str] = field(default_factory=dict)
    stages: str = ""


class RouteRunner:
    """Runs one route: three channel supervisors (consume, sink publish, side publish) and a worker."""

    def __init__(self, cfg: RouteConfig, stages: Sequence[Stage], *, node_id: str, metrics: Metrics,
                 dedup: DedupStore, executor: Executor, consume_link: Link, side_link: Link, sink_link: Link,
                 committer: Committer, evidence: Evidence | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.stages = list(stages)
        self.blocking = chain_is_blocking(self.stages)
        self.node_id = node_id
        self.metrics = metrics
        self.dedup = dedup
        self.executor = executor
        self.consume_link = consume_link
        self.side_link = side_link
        self.sink_link = sink_link
        self.evidence: Evidence = evidence or NoEvidence()
        self.committer = committer
        self._evidence_on = not isinstance(self.evidence, NoEvidence)
        # acks wait for a commit only when there is something to make durable first
        self._commit_first = cfg.dedup or self._evidence_on
        self._flush_waiting = False
        self._flush_again = False
        self._seed = cfg.seed or ""
        self._peer = f"{cfg.sink.broker}/{cfg.sink.exchange}/{cfg.sink.routing_key}"
        self.ordered = cfg.ordering_header is not None
        self.ack_batch = max(1, cfg.prefetch // 10)

        self._gen = 0
        self._ledger = SourceLedger()
        self._consume_ch: AsyncChannel | None = None
        self._consumer_tag: str | None = None
        self._sink_ch: ConfirmChannel[Item] | None = None
        self._side_ch: ConfirmChannel[Item] | None = None
        self._items: dict[int, Item] = {}  # tag -> item, current generation
        self._inbox: deque[Item] = deque()
        self._inbox_event = asyncio.Event()
        self._sink_pending: deque[Item] = deque()
        self._side_pending: deque[Item] = deque()
        self._keys: dict[str, deque[Item]] = {}  # ordering key -> items waiting behind the active one
        self._active_ids: dict[str, int] = {}  # message id -> copies between stages and sink
        self._ack_timer: asyncio.TimerHandle | None = None
        self._errors: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._worker_beat = time.monotonic()
        self.started = asyncio.Event()  # first consume attempt finished (ok or not)
        self._labels = (self.name,)
        metrics.init_route(self.name)
        # labelled children looked up once: .labels() costs more than the increment itself
        self._m_received = metrics.received.labels(self.name)
        self._m_delivered = metrics.messages.labels(self.name, "delivered")
        self._m_duplicate = metrics.messages.labels(self.name, "duplicate")
        self._m_dedup_hits = metrics.dedup_hits.labels(self.name)
        self._m_e2e = metrics.e2e_latency.labels(self.name)
        sink_link.subscribe(self)
        if side_link is not sink_link:
            side_link.subscribe(self)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        from gateway.amqp import spawn
        spawn(self._run_consumer(), f"{self.name} consume", self._tasks)
        spawn(self._run_sink(), f"{self.name} sink", self._tasks)
        spawn(self._run_side(), f"{self.name} side", self._tasks)
        spawn(self._work(), f"{self.name} worker", self._tasks)
        spawn(self._poll_depth(), f"{self.name} depth", self._tasks)

    async def drain(self, deadline: float) -> int:
        """Stop taking messages and wait (until ``deadline``, loop time) for those in hand to settle.
        Returns how many were still unsettled (they stay in the source queue)."""
        self._stopping = True
        ch, tag = self._consume_ch, self._consumer_tag
        if ch is not None and tag is not None and ch.is_open:
            with contextlib.suppress(ChannelClosed, TimeoutError):
                await asyncio.wait_for(ch.rpc(ch.channel.basic_cancel, tag), 5)
        loop = asyncio.get_running_loop()
        while (self._items or self._ledger.ackable or self._flush_waiting) and loop.time() < deadline \
                and self._consume_ch is not None:
            if self._ledger.ackable and not self._flush_waiting:
                self._flush_acks()
            await asyncio.sleep(0.02)
        return len(self._items)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):  # failures were logged by spawn()
                await task
        for ch in (self._sink_ch, self._side_ch):
            if ch is not None:
                ch.close()
        if self._consume_ch is not None:
            self._consume_ch.close()

    # ---------------------------------------------------------------- supervisors

    async def _run_consumer(self) -> None:
        backoff = 1.0
        while True:
            await self.consume_link.up_event.wait()
            if not self.committer.healthy.is_set():
                self._error("evidence", f"cannot make evidence durable: {self.committer.last_error}")
                await self.committer.healthy.wait()
                self._errors.pop("evidence", None)
            try:
                topo = await self.consume_link.open_channel()
                try:
                    await topo.declare(source_topology(self.cfg))
                finally:
                    topo.close()
                ch = await self.consume_link.open_channel()
                await ch.rpc(ch.channel.basic_qos, prefetch_count=self.cfg.prefetch)
                self._gen += 1
                gen = self._gen
                self._ledger = SourceLedger()
                self._consume_ch = ch
                if self._stopping:
                    self.started.set()
                    await asyncio.shield(ch.closed)
                    continue
                frame = await ch.rpc(ch.channel.basic_consume, self.cfg.source.queue,
                                     lambda _c, m, p, b, gen=gen: self._on_message(gen, m, p, b))
                self._consumer_tag = frame.method.consumer_tag
            except ChannelClosed as exc:
                self._error("source", f"queue {self.cfg.source.queue!r}: {exc}")
                self._consume_lost()
                self.started.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            self._errors.pop("source", None)
            self._update_up()
            self.started.set()
            log.info("route consuming", extra={"route": self.name, "queue": self.cfg.source.queue})
            reason = await asyncio.shield(ch.closed)
            if not self._stopping:
                log.warning("route source channel closed", extra={"route": self.name, "error": str(reason)})
            self._consume_lost()
            await asyncio.sleep(0.2)

    async def _run_sink(self) -> None:
        backoff = 1.0
        while True:
            await self.sink_link.up_event.wait()
            try:
                topo = await self.sink_link.open_channel()
                try:
                    await topo.declare(sink_topology(self.cfg))
                finally:
                    topo.close()
                ch: ConfirmChannel[Item] = await ConfirmChannel.open(await self.sink_link.open_channel(), self)
            except ChannelClosed as exc:
                sink = self.cfg.sink
                self._error("sink", f"exchange {sink.exchange!r} on {sink.broker}: {exc}")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            backoff = 1.0
            self._errors.pop("sink", None)
            self._sink_ch = ch
            self._update_up()
            self._pump_sink()
            await asyncio.shield(ch.achannel.closed)
            self._sink_ch = None
            self._update_up()
            await asyncio.sleep(0.2)

    async def _run_side(self) -> None:
        while True:
            await self.side_link.up_event.wait()
            try:
                ch: ConfirmChannel[Item] = await ConfirmChannel.open(await self.side_link.open_channel(), self)
            except ChannelClosed as exc:
                self._error("side", f"set-aside channel on {self.cfg.source.broker}: {exc}")
                await asyncio.sleep(2.0)
                continue
            self._errors.pop("side", None)
            self._side_ch = ch
            self._pump_side()
            await asyncio.shield(ch.achannel.closed)
            self._side_ch = None
            await asyncio.sleep(0.2)

    async def _poll_depth(self) -> None:
        ch: AsyncChannel | None = None
        await self.started.wait()
        while True:
            try:
                await self.consume_link.up_event.wait()
                if ch is None or not ch.is_open:
                    ch = await self.consume_link.open_channel()
                depth = await ch.queue_depth(self.cfg.source.queue)
                self.metrics.queue_depth.labels(*self._labels).set(depth)
                if depth == 0 and not self._items and self._consume_ch is not None:
                    # consuming with nothing to do is progress too: a quiet night is not a stall
                    self.metrics.progress.set(time.time())
            except ChannelClosed:
                ch = None
            self.metrics.oldest_age.labels(*self._labels).set(self.oldest_age())
            await asyncio.sleep(5.0)

    # ---------------------------------------------------------------- intake

    def _on_message(self, gen: int, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        if gen != self._gen:
            return  # a delivery on a channel we already gave up: the broker requeues it
        headers = props.headers
        message_id = props.message_id
        if not message_id:
            message_id = f"jgw-{uuid.uuid4().hex}"  # stable from here on: every republish carries it
            props.message_id = message_id
        attempt = 0
        order_key = None
        if headers:
            raw_attempt = headers.get(H_ATTEMPT, 0)
            attempt = raw_attempt if isinstance(raw_attempt, int) else 0
            if self.cfg.ordering_header is not None:
                raw = headers.get(self.cfg.ordering_header)
                if raw is not None:
                    order_key = raw.hex() if isinstance(raw, bytes) else str(raw)
        tag = method.delivery_tag
        item = Item(gen, tag, message_id, body, props, attempt, order_key, time.time())
        self._ledger.delivered(tag)
        self._items[tag] = item
        self._inbox.append(item)
        self._inbox_event.set()

    async def _work(self) -> None:
        while True:
            await self._inbox_event.wait()
            self._inbox_event.clear()
            while self._inbox:
                self._worker_beat = time.monotonic()
                batch: list[Item] = []
                while self._inbox and len(batch) < BATCH_MAX:
                    item = self._inbox.popleft()
                    if item.gen == self._gen:
                        batch.append(item)
                if batch:
                    await self._process(batch)
            self._worker_beat = time.monotonic()

    async def _process(self, batch: list[Item]) -> None:
        self._m_received.inc(len(batch))
        live: list[Item] = []
        for item in batch:
            size = len(item.body)
            if size > self.cfg.max_size:
                self._set_aside(item, Dest.QUARANTINE, "too-large",
                                f"{size} bytes is over max_size {self.cfg.max_size}")
            elif self.ordered and item.order_key is None:
                self._set_aside(item, Dest.QUARANTINE, "order-key-missing",
                                f"ordered route needs header {self.cfg.ordering_header!r}")
            else:
                live.append(item)
        if not live:
            return
        if self.stages:
            messages = [i.message(self.name) for i in live]
            timings: list[tuple[str, float]] = []
            try:
                if self.blocking:
                    loop = asyncio.get_running_loop()
                    results = await loop.run_in_executor(self.executor, run_chain, self.stages, messages, timings)
                else:
                    results = run_chain(self.stages, messages, timings)
            except Exception as exc:  # a stage bug must not lose the batch
                log.error("stage failed", extra={"route": self.name, "error": type(exc).__name__}, exc_info=exc)
                for item in live:
                    if item.gen == self._gen:
                        self._set_aside(item, Dest.DEAD_LETTER, "stage-error", f"internal error {type(exc).__name__}")
                return
            for name, seconds in timings:
                self.metrics.stage_latency.labels(self.name, name).observe(seconds)
            passed: list[Item] = []
            for item, result in zip(live, results, strict=True):
                if item.gen != self._gen:
                    continue
                if isinstance(result, Refusal):
                    self._set_aside(item, Dest.QUARANTINE, result.reason, result.detail)
                else:
                    item.out_id, item.out_body = result.message_id, result.body
                    item.out_props = self._sink_properties(result)
                    passed.append(item)
            live = passed
        else:
            for item in live:
                item.out_id, item.out_body, item.out_props = item.message_id, item.body, _forwarded(item.props)
        if self.cfg.dedup and live:
            seen = self.dedup.seen(self.name, [i.out_id for i in live])
            for item in live:
                mid = item.out_id
                if mid in seen or mid in self._active_ids:
                    self._m_dedup_hits.inc()
                    self._m_duplicate.inc()
                    self.evidence.record("duplicate", msg=mid, route=self.name, seed=self._seed,
                                         size=len(item.out_body), outcome="suppressed")
                    self._settle(item)
                else:
                    self._to_sink(item)
        else:
            for item in live:
                self._to_sink(item)
        self._pump_sink()

    # ---------------------------------------------------------------- sink side

    def _to_sink(self, item: Item) -> None:
        mid = item.out_id
        self._active_ids[mid] = self._active_ids.get(mid, 0) + 1
        item.counted = True
        if self.ordered:
            key = item.order_key or ""
            waiting = self._keys.get(key)
            if waiting is not None:
                waiting.append(item)  # behind the message of this key that is on its way
                return
            self._keys[key] = deque()
        self._sink_pending.append(item)

    def _pump_sink(self) -> None:
        ch = self._sink_ch
        if ch is None or not ch.is_open or self.sink_link.state.blocked:
            return
        window = self.cfg.window
        sink = self.cfg.sink
        pending = self._sink_pending
        try:
            while pending and len(ch) < window:
                item = pending.popleft()
                if item.gen != self._gen:
                    self._release(item)
                    continue
                ch.publish(sink.exchange, sink.routing_key, item.out_body, item.out_props, item)
                item.in_tracker = True
        except AMQPError as exc:  # the channel is closing: its close callback requeues what it held
            log.warning("sink publish failed", extra={"route": self.name, "error": str(exc)})
            pending.appendleft(item)

    def _sink_properties(self, msg: Message) -> pika.BasicProperties:
        headers = {k: v for k, v in msg.headers.items() if k not in _HOP_HEADERS}
        return pika.BasicProperties(message_id=msg.message_id, delivery_mode=2, headers=headers,
                                    content_type=msg.content_type, content_encoding=msg.content_encoding,
                                    correlation_id=msg.correlation_id, type=msg.type, app_id=msg.app_id,
                                    timestamp=msg.timestamp)

    def on_confirm(self, item: Item, result: Confirm) -> None:
        """A publish of ours was settled by a broker (sink or side channel)."""
        item.in_tracker = False
        if item.dest is Dest.SINK:
            if result is Confirm.ACK:
                self._delivered(item)
            else:
                self._sink_failed(item, "unroutable" if result is Confirm.RETURNED else "nacked")
            self._pump_sink()
        else:
            if result is Confirm.ACK:
                self._set_aside_done(item)
            else:
                log.error("set-aside publish refused; will try again", extra={
                    "route": self.name, "message_id": item.message_id, "dest": item.dest.value,
                    "result": result.value})
                asyncio.get_running_loop().call_later(5.0, self._side_again, item)

    def on_publish_channel_lost(self, tokens: list[Item], reason: ChannelClosed) -> None:
        """A publishing channel closed with unconfirmed publishes: publish them again, in order."""
        for item in tokens:
            item.in_tracker = False
        sink_items = [i for i in tokens if i.dest is Dest.SINK]
        side_items = [i for i in tokens if i.dest is not Dest.SINK]
        again = 0
        for item in reversed(sink_items):
            if item.gen == self._gen:
                self._sink_pending.appendleft(item)
                again += 1
            else:
                self._release(item)
        for item in reversed(side_items):
            if item.gen == self._gen:
                self._side_pending.appendleft(item)
        if again:
            self.metrics.republished.labels(*self._labels).inc(again)
            log.warning("republishing unconfirmed messages", extra={"route": self.name, "count": again,
                                                                    "error": str(reason)})

    def link_blocked(self, link: Link, blocked: bool) -> None:
        self._update_up()
        if not blocked:
            self._pump_sink()
            self._pump_side()

    def _delivered(self, item: Item) -> None:
        mid = item.out_id
        if self.cfg.dedup:
            self.dedup.record(self.name, mid)
        self._m_delivered.inc()
        sent = item.sent_at
        if sent is not None:
            self._m_e2e.observe(max(0.0, time.time() - sent))
        # the correlation id (処理通番) of what was delivered: an opened envelope's is inside it
        if self._evidence_on:
            out = item.out_props
            corr = (out.correlation_id if out is not None else None) or item.props.correlation_id
            self.evidence.record("deliver", msg=mid, route=self.name, seed=self._seed, peer=self._peer,
                                 size=len(item.out_body), digest=payload_digest(item.out_body),
                                 corr=corr, outcome="confirmed")
        self._settle(item)

    def _sink_failed(self, item: Item, reason: str) -> None:
        if item.gen != self._gen:
            self._release(item)
            return
        item.attempt += 1
        tiers = self.cfg.retry
        if item.attempt > len(tiers):
            self._set_aside(item, Dest.DEAD_LETTER, reason,
                            f"sink {self.cfg.sink.exchange!r}/{self.cfg.sink.routing_key!r} refused it "
                            f"{item.attempt} times ({reason})")
            return
        self.metrics.retries.labels(self.name, reason).inc()
        delay = tiers[item.attempt - 1]
        log.info("sink refused message; retrying", extra={"route": self.name, "message_id": item.message_id,
                                                           "reason": reason, "attempt": item.attempt,
                                                           "delay_s": delay})
        if self.ordered:
            asyncio.get_running_loop().call_later(delay, self._retry_in_place, item)
        else:
            self._set_aside(item, Dest.RETRY, reason, f"attempt {item.attempt}", tier=item.attempt - 1)

    def _retry_in_place(self, item: Item) -> None:
        if item.gen != self._gen:
            self._release(item)
            return
        self._sink_pending.append(item)
        self._pump_sink()

    # ---------------------------------------------------------------- set aside

    def _set_aside(self, item: Item, dest: Dest, reason: str, detail: str, tier: int = 0) -> None:
        item.dest, item.reason, item.detail, item.tier = dest, reason, detail, tier
        self._side_pending.append(item)
        self._pump_side()

    def _side_again(self, item: Item) -> None:
        if item.gen == self._gen:
            self._side_pending.append(item)
            self._pump_side()

    def _pump_side(self) -> None:
        ch = self._side_ch
        if ch is None or not ch.is_open or self.side_link.state.blocked:
            return
        while self._side_pending:
            item = self._side_pending.popleft()
            if item.gen != self._gen:
                self._release(item)
                continue
            queue = self._set_aside_queue(item)
            try:
                ch.publish("", queue, item.body, self._set_aside_properties(item), item)
                item.in_tracker = True
            except AMQPError:
                self._side_pending.appendleft(item)
                return

    def _set_aside_queue(self, item: Item) -> str:
        if item.dest is Dest.RETRY:
            return retry_queue(self.cfg, item.tier)
        return QUARANTINE_QUEUE if item.dest is Dest.QUARANTINE else DEAD_LETTER_QUEUE

    def _set_aside_properties(self, item: Item) -> pika.BasicProperties:
        p = item.props
        headers = {k: v for k, v in (p.headers or {}).items() if k not in _HOP_HEADERS}
        headers[H_ATTEMPT] = item.attempt
        headers[H_REASON] = item.reason
        headers[H_ROUTE] = self.name
        if item.dest is not Dest.RETRY:
            headers[H_DETAIL] = item.detail
            headers[H_FAILED_AT] = int(time.time() * 1000)
            headers[H_NODE] = self.node_id
            headers[H_ORIGIN_QUEUE] = self.cfg.source.queue
        return pika.BasicProperties(message_id=p.message_id, delivery_mode=2, headers=headers,
                                    content_type=p.content_type, content_encoding=p.content_encoding,
                                    correlation_id=p.correlation_id, type=p.type, app_id=p.app_id,
                                    timestamp=p.timestamp, priority=p.priority, reply_to=p.reply_to,
                                    user_id=None)

    def _set_aside_done(self, item: Item) -> None:
        mid = item.message_id
        if item.dest is Dest.RETRY:
            self._settle(item)  # not an outcome: the message comes back to this route
            return
        elif item.dest is Dest.QUARANTINE:
            self.metrics.messages.labels(self.name, "quarantined").inc()
            self.metrics.quarantined.labels(self.name, item.reason).inc()
            log.warning("message quarantined", extra={"route": self.name, "message_id": mid,
                                                      "reason": item.reason, "detail": item.detail})
        else:
            self.metrics.messages.labels(self.name, "dead_lettered").inc()
            self.metrics.dead_lettered.labels(self.name, item.reason).inc()
            log.warning("message dead-lettered", extra={"route": self.name, "message_id": mid,
                                                        "reason": item.reason, "detail": item.detail})
        self.evidence.record(item.dest.value, msg=mid, route=self.name, seed=self._seed, reason=item.reason,
                             size=len(item.body), digest=payload_digest(item.body), attempt=item.attempt,
                             outcome=_SET_ASIDE_QUEUE[item.dest])
        self._settle(item)

    # ---------------------------------------------------------------- acknowledgement

    def _settle(self, item: Item) -> None:
        """The message is durably elsewhere: its source delivery may be acknowledged."""
        self._release(item)
        if item.gen != self._gen or self._items.pop(item.tag, None) is None:
            return
        self._ledger.settle(item.tag)
        if self._ledger.ackable >= self.ack_batch:
            self._flush_acks()
        elif self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(self.cfg.ack_interval, self._flush_acks)

    def _release(self, item: Item) -> None:
        """The item no longer occupies its message id or its ordering key."""
        if item.counted:
            item.counted = False
            mid = item.out_id
            left = self._active_ids.get(mid, 1) - 1
            if left > 0:
                self._active_ids[mid] = left
            else:
                self._active_ids.pop(mid, None)
            if self.ordered and item.gen == self._gen:
                key = item.order_key or ""
                waiting = self._keys.get(key)
                if waiting is not None:
                    if waiting:
                        self._sink_pending.append(waiting.popleft())
                    else:
                        del self._keys[key]

    def _flush_acks(self) -> None:
        """The one place a source delivery is acknowledged: after the dedup ids and evidence that
        depend on it are durable (group commit, off the event loop)."""
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._flush_waiting:
            self._flush_again = True
            return
        if not self._ledger.ackable or self._consume_ch is None:
            return
        gen, ch = self._gen, self._consume_ch
        upto, singles = self._ledger.take_acks()
        if not self._commit_first:
            self._send_acks(gen, ch, upto, singles)
            return
        self._flush_waiting = True
        self.committer.request(lambda exc: self._committed(exc, gen, ch, upto, singles))

    def _committed(self, exc: BaseException | None, gen: int, ch: AsyncChannel, upto: int | None,
                   singles: list[int]) -> None:
        self._flush_waiting = False
        if exc is not None:
            # nothing is acknowledged: give the deliveries back to the queue and pause (see commit.py)
            if gen == self._gen:
                ch.close()
            return
        self._send_acks(gen, ch, upto, singles)
        if self._flush_again or self._ledger.ackable >= self.ack_batch:
            self._flush_again = False
            self._flush_acks()
        elif self._ledger.ackable and self._ack_timer is None:
            self._ack_timer = asyncio.get_running_loop().call_later(self.cfg.ack_interval, self._flush_acks)

    def _send_acks(self, gen: int, ch: AsyncChannel, upto: int | None, singles: list[int]) -> None:
        if gen != self._gen or not ch.is_open:
            return  # that channel is gone: its deliveries went back to the queue; dedup catches them
        try:
            if upto is not None:
                ch.channel.basic_ack(upto, multiple=True)
            for tag in singles:
                ch.channel.basic_ack(tag)
        except AMQPError as exc:
            log.warning("ack failed", extra={"route": self.name, "error": str(exc)})
        self.metrics.progress.set(time.time())

    def _consume_lost(self) -> None:
        """The source channel is gone: every delivery we held is back in the queue. Start over."""
        self._gen += 1
        self._consume_ch = None
        self._consumer_tag = None
        stale = list(self._items.values())
        self._items.clear()
        self._inbox.clear()
        self._keys.clear()
        for item in stale:
            if not item.in_tracker:  # those still awaiting a confirm are released when it comes
                self._release(item)
        self._sink_pending.clear()
        self._side_pending.clear()
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        self._update_up()

    # ---------------------------------------------------------------- status

    def _error(self, where: str, text: str) -> None:
        if self._errors.get(where) != text:
            log.error("route problem", extra={"route": self.name, "where": where, "error": text})
        self._errors[where] = text
        self._update_up()

    def _update_up(self) -> None:
        up = (self._consume_ch is not None and self._sink_ch is not None and not self.sink_link.state.blocked)
        self.metrics.route_up.labels(*self._labels).set(1 if up else 0)
        self.metrics.in_flight.labels(*self._labels).set(len(self._items))

    def progressing(self) -> bool:
        """False when messages wait in the inbox and the worker has not moved for STALL_SECONDS."""
        return not self._inbox or time.monotonic() - self._worker_beat < STALL_SECONDS

    def oldest_age(self) -> float:
        now = time.time()
        oldest = min((i.sent_at or i.received_at for i in self._items.values()), default=now)
        return max(0.0, now - oldest)

    def status(self) -> RouteStatus:
        self.metrics.in_flight.labels(*self._labels).set(len(self._items))
        if self._errors:
            state = "error"
        elif self._consume_ch is None:
            state = "waiting for source"
        elif self._sink_ch is None:
            state = "waiting for sink"
        elif self.sink_link.state.blocked:
            state = "blocked by sink broker"
        elif not self.progressing():  # what stops the watchdog pings; staff see it here first
            state = "stalled"
        else:
            state = "running"
        sink = self.cfg.sink
        return RouteStatus(route=self.name, state=state,
                           source=f"{self.cfg.source.broker}:{self.cfg.source.queue}",
                           sink=f"{sink.broker}:{sink.exchange or '(default)'}/{sink.routing_key}",
                           in_flight=len(self._items), waiting_to_publish=len(self._sink_pending),
                           held_for_order=sum(len(q) for q in self._keys.values()),
                           oldest_age_seconds=round(self.oldest_age(), 3), errors=dict(self._errors),
                           stages=" → ".join(s.name for s in self.stages) or "(none)")


_SET_ASIDE_QUEUE = {Dest.QUARANTINE: QUARANTINE_QUEUE, Dest.DEAD_LETTER: DEAD_LETTER_QUEUE, Dest.RETRY: "retry"}


def _forwarded(props: pika.BasicProperties) -> pika.BasicProperties:
    """The source's properties as the sink gets them on a route without stages: as they are, minus
    this hop's own bookkeeping headers (a copy is made only when there are some)."""
    headers = props.headers
    if not headers or _HOP_HEADERS.isdisjoint(headers):
        return props
    out = copy.copy(props)
    out.headers = {k: v for k, v in headers.items() if k not in _HOP_HEADERS}
    return out
