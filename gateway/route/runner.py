"""The route runner: the asyncio shell around the route book, for any source and any sink.

It feeds the book the events of its two ends (``gateway.route.behaviour``), runs the stages over
batches off the event loop when they are CPU-heavy, and performs the actions the book returns:
puts to the sink, set-asides at the source, timers, commits and acknowledgements. Every decision
of the hop contract is the book's (``gateway.route.book``); this module does the I/O and turns the
book's outcomes into metrics, audit records and log lines, in that order, before the commit that
covers them.

Security: reads message properties and ids; passes bodies between stages and ends without looking
at them. Logs and metrics carry route names, ids, sizes and reason codes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from gateway.audit import payload_digest
from gateway.cluster.fence import PauseFence
from gateway.cluster.members import QueueMembers
from gateway.cluster.replication import Replication
from gateway.cluster.stream import StreamError
from gateway.config import RouteConfig
from gateway.files.chunks import Abort, peek
from gateway.files.names import fingerprint
from gateway.files.settings import H_FILE
from gateway.message import Message
from gateway.metrics import Metrics
from gateway.route.behaviour import Sink, Source
from gateway.route.book import (
    Ack,
    Action,
    Commit,
    Confirm,
    Dest,
    Event,
    FlushLater,
    Item,
    Later,
    Leg,
    Outcome,
    Output,
    Publish,
    Restart,
    Result,
    RouteBook,
    RouteRules,
    SetAside,
)
from gateway.route.commit import Committer, Evidence, NoEvidence
from gateway.route.dedup import DedupStore
from gateway.route.stages import Refusal, Stage, chain_is_blocking, run_stages
from gateway.tasks import spawn

log = logging.getLogger("jgw.hop")

BATCH_MAX = 512
STALL_SECONDS = 30.0  # a worker that has not taken its next batch for this long is stuck (watchdog)
DEPTH_EVERY = 5.0

_OUTCOME_QUEUE = {Dest.QUARANTINE: "jgw.quarantine", Dest.DEAD_LETTER: "jgw.dead-letter", Dest.RETRY: "retry"}


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
    #: a file source's files not yet finished (name shown printable, fingerprint, size, state, age)
    files: list[dict[str, Any]] = field(default_factory=list)
    #: "active", "standby" (single-active), "shared", or "down" (the only instance, not consuming);
    #: and how it is known ("broker" or "deliveries")
    role: str = "shared"
    role_from: str = ""
    #: the source quorum queue's members, online members and leader (management API), when known
    replicas: dict[str, Any] = field(default_factory=dict)


def rules_of(cfg: RouteConfig, *, commit_first: bool) -> RouteRules:
    # a file source orders its frames by file id itself (Message.order_key): one frame of a file at a time
    return RouteRules(route=cfg.name, retry=tuple(cfg.retry), max_size=cfg.max_size,
                      ordered=cfg.ordering_header is not None or cfg.source.is_file,
                      ordering_header=cfg.ordering_header or (H_FILE if cfg.source.is_file else None),
                      dedup=cfg.dedup, window=cfg.window, ack_batch=max(1, cfg.prefetch // 10),
                      ack_interval=cfg.ack_interval, commit_first=commit_first)


class RouteRunner:
    """Runs one route: its source, its sink, a worker over the stages, and the book between them."""

    def __init__(self, cfg: RouteConfig, stages: Sequence[Stage], *, node_id: str, metrics: Metrics,
                 dedup: DedupStore, executor: Executor, source: Source, sink: Sink, committer: Committer,
                 evidence: Evidence | None = None, replication: Replication | None = None) -> None:
        self.cfg = cfg
        self.replication = replication
        #: one instance of several consumes: a pause must not let it publish what another now has
        self.fence = (PauseFence(cfg.fence_after, self._paused)
                      if cfg.consumers == "single-active" and not cfg.source.is_file else None)
        #: the source generation that delivered last (single-active: this instance is the active one)
        self._active_gen = -1
        self.members: QueueMembers | None = None
        self.name = cfg.name
        self.stages = list(stages)
        self.blocking = chain_is_blocking(self.stages)
        self.node_id = node_id
        self.metrics = metrics
        self.dedup = dedup
        self.executor = executor
        self.source = source
        self.sink = sink
        self.committer = committer
        self.evidence: Evidence = evidence or NoEvidence()
        self._evidence_on = not isinstance(self.evidence, NoEvidence)
        self.book = RouteBook(rules_of(cfg, commit_first=cfg.dedup or self._evidence_on))
        self._seed = cfg.seed or ""
        #: the route carries file frames: evidence names each file's digest, files are counted
        self._files = cfg.source.is_file or cfg.sink.is_file
        self._peer = (cfg.sink.describe() if cfg.sink.is_file
                      else f"{cfg.sink.broker}/{cfg.sink.exchange}/{cfg.sink.routing_key}")
        self._inbox_event = asyncio.Event()
        self._errors: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._worker_beat = time.monotonic()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started = asyncio.Event()  # first consume attempt finished (ok or not)
        self._labels = (self.name,)
        #: deliveries confirmed since the last commit: one audit record per group commit
        self._group: list[tuple[str, int, str, str | None]] = []
        committer.before_commit.append(self._hand_over_evidence)
        # the book's actions, by type: one dict lookup each (this runs once per message or more)
        self._handlers: dict[type, Callable[[Any], None]] = {
            Publish: self._publish, SetAside: self._set_aside,
            Outcome: self._outcome, Commit: self._do_commit, Ack: self._do_ack,
            FlushLater: lambda a: self._schedule_flush(a.delay), Later: self._do_later,
            Restart: lambda a: self.source.restart(a.gen, a.why)}
        metrics.init_route(self.name)
        # labelled children looked up once: .labels() costs more than the increment itself
        self._m_received = metrics.received.labels(self.name)
        self._m_delivered = metrics.messages.labels(self.name, "delivered")
        self._m_duplicate = metrics.messages.labels(self.name, "duplicate")
        self._m_dedup_hits = metrics.dedup_hits.labels(self.name)
        self._m_e2e = metrics.e2e_latency.labels(self.name)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        spawn(lambda: self.source.run(self), f"{self.name} source", self._tasks)
        spawn(lambda: self.sink.run(self), f"{self.name} sink", self._tasks)
        spawn(self._work, f"{self.name} worker", self._tasks)
        spawn(self._poll_depth, f"{self.name} depth", self._tasks)
        if self.replication is not None:
            spawn(self.replication.stream.run, f"{self.name} stream", self._tasks)
        if self.fence is not None:
            spawn(self.fence.run, f"{self.name} fence", self._tasks)

    async def drain(self, deadline: float) -> int:
        """Stop taking messages and wait (until ``deadline``, loop time) for those in hand to settle.
        Returns how many were still unsettled (they stay at the source)."""
        await self.source.stop_taking()
        self._perform(self.book.drain())
        loop = asyncio.get_running_loop()
        while not self.book.idle and loop.time() < deadline and self.book.source_up:
            self._perform(self.book.flush())
            await asyncio.sleep(0.02)
        return self.book.in_flight

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):  # failures were logged by spawn()
                await task
        await self.sink.close()
        await self.source.close()

    # ---------------------------------------------------------------- source feed

    async def may_consume(self) -> None:
        if not self.committer.healthy.is_set():
            self._problem("evidence", f"cannot make evidence durable: {self.committer.last_error}")
            await self.committer.healthy.wait()
            self._problem("evidence", None)

    def opened(self) -> int:
        gen = self.book.source_opened()
        self.started.set()
        self._update_up()
        return gen

    def delivered(self, gen: int, tag: int, message: Message, wire: Any) -> None:
        if gen != self._active_gen:
            self._active_gen = gen
            self.metrics.route_active.labels(*self._labels).set(1)
        self._perform(self.book.delivered(gen, tag, message, wire, message.received_at))
        if self.book.inbox:
            self._inbox_event.set()

    def lost(self, gen: int, why: str) -> None:
        self.started.set()
        self.metrics.route_active.labels(*self._labels).set(0)
        self._perform(self.book.source_lost(gen))  # a flush timer still pending fires harmlessly later
        self._update_up()

    def aside_ready(self, ready: bool, why: str) -> None:
        self._perform(self.book.side_ready(ready, why))

    def aside_done(self, leg: Leg, result: Confirm) -> None:
        self._perform(self.book.confirmed(leg, result))

    def aside_lost(self, legs: Sequence[Leg]) -> None:
        self._perform(self.book.side_lost(legs))

    # ---------------------------------------------------------------- sink feed

    def ready(self, ready: bool, why: str) -> None:
        self._perform(self.book.sink_ready(ready, why))
        self._update_up()

    def confirmed(self, leg: Leg, result: Result) -> None:
        self._perform(self.book.confirmed(leg, result))

    def unconfirmed(self, legs: Sequence[Leg]) -> None:
        self._perform(self.book.sink_lost(legs))

    def blocked(self, why: str, on: bool) -> None:
        self._perform(self.book.blocked(why, on))
        self._update_up()

    def problem(self, where: str, text: str | None) -> None:
        self._problem(where, text)

    # ---------------------------------------------------------------- the stages

    async def _work(self) -> None:
        while True:
            await self._inbox_event.wait()
            self._inbox_event.clear()
            while True:
                self._worker_beat = time.monotonic()
                items = self.book.take(BATCH_MAX)
                if not items:
                    break
                await self._process(items)
            self._worker_beat = time.monotonic()

    async def _process(self, items: list[Item]) -> None:
        self._m_received.inc(len(items))
        outputs = await self._run_stages(items)
        already: set[str] = set()
        if self.replication is not None and items and not await self._caught_up(items[0].gen):
            outputs = []  # the deliveries went back to the queue
        if self.cfg.dedup:
            ids = [o.message.message_id for o in outputs if o.message is not None]
            if ids:
                already = self.dedup.seen(self.name, ids)
                if self.replication is not None:
                    already |= self.replication.seen(ids)
        self._perform(self.book.staged(items, outputs, already))

    async def _run_stages(self, items: list[Item]) -> list[Output]:
        if not self.stages:
            return [Output((i,), message=item.message) for i, item in enumerate(items)]
        messages = [i.message for i in items]
        timings: list[tuple[str, float]] = []
        try:
            if self.blocking:
                loop = asyncio.get_running_loop()
                made = await loop.run_in_executor(self.executor, run_stages, self.stages, messages, timings)
            else:
                made = run_stages(self.stages, messages, timings)
        except Exception as exc:  # a stage bug must not lose the batch
            log.error("stage failed", extra={"route": self.name, "error": type(exc).__name__}, exc_info=exc)
            refusal = Refusal("stage-error", f"internal error {type(exc).__name__}")
            return [Output((i,), refusal=refusal, refused=m) for i, m in enumerate(messages)]
        for name, seconds in timings:
            self.metrics.stage_latency.labels(self.name, name).observe(seconds)
        return [Output(m.parents, refusal=m.result, refused=m.refused) if isinstance(m.result, Refusal)
                else Output(m.parents, message=m.result) for m in made]

    async def _caught_up(self, gen: int) -> bool:
        """Before a generation's first batch: read the delivered-ids stream up to now (a takeover
        then knows what the previous active instance delivered). False: deliveries given back."""
        assert self.replication is not None
        if self.replication.caught_up(gen):
            return True
        try:
            await self.replication.catch_up(gen)
        except (TimeoutError, StreamError) as exc:
            self._problem("replication", f"cannot read the delivered-ids stream: {exc or 'timeout'}")
            self._give_back(gen)
            return False
        self._problem("replication", None)
        log.info("route caught up on its delivered-ids stream", extra={
            "route": self.name, "seconds": round(self.replication.last_catch_up, 3),
            "known": len(self.replication.stream.known)})
        return True

    def _give_back(self, gen: int) -> None:
        """Close the source channel of ``gen`` now (its deliveries go back to the queue) and forget them."""
        if gen == self.book.gen and self.book.source_up:
            self.source.restart(gen, "given back")
            self.lost(gen, "given back")

    def _fenced(self) -> bool:
        """True when this process was just paused: its deliveries are given back, nothing published."""
        fence = self.fence
        if fence is None or not fence.closed():
            return False
        self._paused(fence.trip())
        return True

    def _paused(self, gap: float) -> None:
        self.metrics.fence_trips.labels(*self._labels).inc()
        log.warning("process was paused; giving deliveries back instead of publishing",
                    extra={"route": self.name, "seconds": round(gap, 3)})
        self._give_back(self.book.gen)

    def _publish(self, a: Publish) -> None:
        if self.fence is not None and (self._fenced() or not a.leg.live(self.book.gen)):
            self._perform(self.book.sink_lost([a.leg]))
            return
        self.sink.put(a.leg)

    def _set_aside(self, a: SetAside) -> None:
        if self.fence is not None and (self._fenced() or not a.leg.live(self.book.gen)):
            self._perform(self.book.side_lost([a.leg]))
            return
        self.source.set_aside(a.leg)

    # ---------------------------------------------------------------- performing the book's actions

    def _perform(self, actions: list[Action]) -> None:
        handlers = self._handlers
        for a in actions:
            handlers[type(a)](a)

    def _do_commit(self, a: Commit) -> None:
        token = a.token
        if self.replication is None:
            self.committer.request(lambda exc: self._perform(self.book.committed(token, exc is None)))
            return

        def replicated(exc: BaseException | None) -> None:
            # the delivered ids are in the stream before anything is acknowledged
            if exc is not None:
                self._problem("replication", f"cannot append to the delivered-ids stream: {exc}")
                self._perform(self.book.committed(token, False))
                return
            self._problem("replication", None)
            self.committer.request(lambda exc: self._perform(self.book.committed(token, exc is None)))

        self.replication.commit(replicated)

    def _do_ack(self, a: Ack) -> None:
        self.source.ack(a.gen, a.tags)
        self.metrics.progress.set(time.time())

    def _do_later(self, a: Later) -> None:
        leg = a.leg
        self._loop_().call_later(a.delay, lambda: self._perform(self.book.due(leg)))

    def _loop_(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _schedule_flush(self, delay: float) -> None:
        if self._flush_handle is None:
            self._flush_handle = self._loop_().call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        self._perform(self.book.flush())

    def _outcome(self, o: Outcome) -> None:
        ev = o.event
        if ev is Event.DELIVERED:
            assert o.leg is not None
            self._delivered(o.leg)
        elif ev is Event.DUPLICATE:
            assert o.item is not None
            self._m_dedup_hits.inc()
            self._m_duplicate.inc()
            m = o.item.message
            self.evidence.record("duplicate", msg=m.message_id, route=self.name, seed=self._seed, size=m.size,
                                 outcome="suppressed")
        elif ev in (Event.QUARANTINED, Event.DEAD_LETTERED):
            assert o.leg is not None
            self._set_aside_done(o.leg)
        elif ev is Event.RETRIED:
            assert o.leg is not None
            leg = o.leg
            self.metrics.retries.labels(self.name, leg.reason).inc()
            tiers = self.cfg.retry
            log.info("sink refused message; retrying", extra={
                "route": self.name, "message_id": leg.message_id, "reason": leg.reason, "attempt": leg.attempt,
                "delay_s": tiers[leg.attempt - 1] if 0 < leg.attempt <= len(tiers) else 0})
        elif ev is Event.REPUBLISHED:
            self.metrics.republished.labels(*self._labels).inc(o.count)
            log.warning("republishing unconfirmed messages", extra={"route": self.name, "count": o.count})
        elif ev is Event.SET_ASIDE_FAILED:
            assert o.leg is not None
            log.error("set-aside publish refused; will try again", extra={
                "route": self.name, "message_id": o.leg.message_id, "dest": o.leg.dest.value})

    def _delivered(self, leg: Leg) -> None:
        mid = leg.message_id
        if self.cfg.dedup:
            self.dedup.record(self.name, mid)
        if self.replication is not None:
            self.replication.delivered(mid)
        count = len(leg.parents) if leg.sole else 1
        self._m_delivered.inc(count)
        now = time.time()
        for parent in leg.parents if leg.sole else leg.parents[:1]:
            sent = parent.message.sent_at
            if sent is not None:
                self._m_e2e.observe(max(0.0, now - sent))
        if self._evidence_on:
            # the correlation id (処理通番) of what was delivered: an opened envelope's is inside it
            corr = leg.message.correlation_id or (leg.parents[0].message.correlation_id if leg.parents else None)
            body = leg.message.body
            if self._files:  # a file's frames: one record each, with the file's own facts
                self.evidence.record("deliver", msg=mid, route=self.name, seed=self._seed, peer=self._peer,
                                     size=len(body), digest=payload_digest(body), corr=corr, outcome="confirmed",
                                     **file_fields(leg))
            else:
                self._group.append((mid, len(body), payload_digest(body), corr))

    def _hand_over_evidence(self) -> None:
        """One ``deliver`` record for every delivery confirmed since the last commit (the committer
        calls this just before it takes what is recorded, so the ids and their evidence go together)."""
        if not self._group:
            return
        group, self._group = self._group, []
        self.evidence.record("deliver", route=self.name, seed=self._seed, peer=self._peer, outcome="confirmed",
                             n=len(group), msgs=[g[0] for g in group], sizes=[g[1] for g in group],
                             digests=[g[2] for g in group], corrs=[g[3] for g in group])

    def _set_aside_done(self, leg: Leg) -> None:
        mid = leg.message_id
        if leg.dest is Dest.QUARANTINE:
            self.metrics.messages.labels(self.name, "quarantined").inc()
            self.metrics.quarantined.labels(self.name, leg.reason).inc()
            log.warning("message quarantined", extra={"route": self.name, "message_id": mid,
                                                      "reason": leg.reason, "detail": leg.detail})
        else:
            self.metrics.messages.labels(self.name, "dead_lettered").inc()
            self.metrics.dead_lettered.labels(self.name, leg.reason).inc()
            log.warning("message dead-lettered", extra={"route": self.name, "message_id": mid,
                                                        "reason": leg.reason, "detail": leg.detail})
        body = leg.message.body
        fields = file_fields(leg) if self._files else {}
        self.evidence.record(leg.dest.value, msg=mid, route=self.name, seed=self._seed, reason=leg.reason,
                             size=len(body), digest=payload_digest(body), attempt=leg.attempt,
                             outcome=_OUTCOME_QUEUE[leg.dest], **fields)
        if self._files and not self.cfg.source.is_file and "file_sha256" in fields:
            # a file's last frame set aside here: the file is (a file source counts its own files)
            outcome = "quarantined" if leg.dest is Dest.QUARANTINE else "dead_lettered"
            self.metrics.files.labels(self.name, outcome).inc()
            self.metrics.file_bytes.labels(self.name, outcome).inc(int(fields["file_size"]))

    # ---------------------------------------------------------------- depth, status

    async def _poll_depth(self) -> None:
        await self.started.wait()
        while True:
            depth = await self.source.depth()
            if depth is not None:
                self.metrics.queue_depth.labels(*self._labels).set(depth)
                if depth == 0 and self.book.idle and self.book.source_up:
                    # consuming with nothing to do is progress too: a quiet night is not a stall
                    self.metrics.progress.set(time.time())
            self.metrics.oldest_age.labels(*self._labels).set(self.oldest_age())
            await asyncio.sleep(DEPTH_EVERY)

    def _problem(self, where: str, text: str | None) -> None:
        if text is None:
            self._errors.pop(where, None)
        else:
            if self._errors.get(where) != text:
                log.error("route problem", extra={"route": self.name, "where": where, "error": text})
            self._errors[where] = text
        self._update_up()

    def _update_up(self) -> None:
        up = self.book.source_up and not self.book.blocked_by
        self.metrics.route_up.labels(*self._labels).set(1 if up else 0)
        self.metrics.in_flight.labels(*self._labels).set(self.book.in_flight)

    def progressing(self) -> bool:
        """False when messages wait in the inbox and the worker has not moved for STALL_SECONDS."""
        return not self.book.inbox or time.monotonic() - self._worker_beat < STALL_SECONDS

    def oldest_age(self) -> float:
        now = time.time()
        oldest = min((i.message.sent_at or i.received_at for i in self.book.items()), default=now)
        return max(0.0, now - oldest)

    def status(self) -> RouteStatus:
        book = self.book
        self.metrics.in_flight.labels(*self._labels).set(book.in_flight)
        blocked = {b for b in book.blocked_by if not b.startswith("set-aside")}
        if self._errors:
            state = "error"
        elif not book.source_up:
            state = "waiting for source"
        elif "sink down" in blocked:
            state = "waiting for sink"
        elif blocked:
            state = "blocked by sink broker"
        elif not self.progressing():  # what stops the watchdog pings; staff see it here first
            state = "stalled"
        else:
            state = "running"
        waiting = getattr(self.source, "waiting", None)
        role, role_from = self.role()
        replicas: dict[str, Any] = {}
        if self.members is not None:
            m = self.members
            replicas = {"members": m.members, "online": m.online, "leader": m.leader,
                        "expected": self.cfg.replicas or len(m.members), "error": m.error}
        return RouteStatus(route=self.name, state=state, source=self.source.describe(), sink=self.sink.describe(),
                           in_flight=book.in_flight, waiting_to_publish=book.waiting_to_publish,
                           held_for_order=book.held_for_order, oldest_age_seconds=round(self.oldest_age(), 3),
                           errors=dict(self._errors), stages=" → ".join(s.name for s in self.stages) or "(none)",
                           files=waiting() if callable(waiting) else [], role=role, role_from=role_from,
                           replicas=replicas)

    def role(self) -> tuple[str, str]:
        """Whether this instance consumes the route: from the broker when its management API
        answers (the single active consumer's tag), else from the deliveries of this generation."""
        if self.cfg.consumers == "one" or self.cfg.source.is_file:
            return ("active" if self.book.source_up else "down"), ""
        if self.cfg.consumers == "shared":
            return ("shared" if self.book.source_up else "standby"), ""
        if not self.book.source_up:
            return "standby", ""
        if self._active_gen == self.book.gen:  # only the active consumer is given deliveries
            return "active", "deliveries"
        tag = getattr(self.source, "consumer_tag", None)
        m = self.members
        if m is not None and not m.error and tag:  # an idle queue: ask the broker
            return ("active" if m.active_consumer == tag else "standby"), "broker"
        return "standby", "deliveries"

    def set_members(self, members: QueueMembers) -> None:
        self.members = members
        if members.error:
            return
        self.metrics.queue_members_online.labels(*self._labels).set(len(members.online))
        self.metrics.queue_members_expected.labels(*self._labels).set(self.cfg.replicas or len(members.members))
        role, _ = self.role()
        self.metrics.route_active.labels(*self._labels).set(1 if role in ("active", "shared") else 0)


def file_fields(leg: Leg) -> dict[str, Any]:
    """What the evidence of a file frame says about its file: the file id, and for a file's last frame
    (manifest, or a whole file) the name's fingerprint, size and SHA-256 (never the name)."""
    for m in (leg.message, *(p.message for p in leg.parents[:1])):
        fid = m.headers.get(H_FILE)
        if fid is None:
            continue
        frame = peek(m.body)
        if frame is None or isinstance(frame, Abort):
            if frame is None and m is leg.message and leg.parents:
                continue  # sealed: the frame is the parent's
            return {"file_id": str(fid)}
        return {"file_id": frame.file_id, "file_name": fingerprint(frame.name), "file_size": frame.size,
                "file_sha256": frame.sha256}
    return {}
