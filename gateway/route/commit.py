"""Group commit: make dedup ids and evidence durable, off the event loop, before acks go out.

Every route asks the node's one ``Committer`` before it acknowledges source deliveries; requests
that arrive while a commit is running share the next one (one write + one fsync for all of them).
The caller acknowledges only in its callback, and only if the commit succeeded: evidence first,
then the ack. If a commit fails (disk full, fsync error), ``healthy`` is cleared, routes stop
consuming (their unacknowledged deliveries go back to the queue) and the commit is retried every
few seconds until it succeeds.

Security: moves ids and audit records to local files; no message content.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

from gateway.route.dedup import DedupStore
from gateway.tasks import resolve

log = logging.getLogger("jgw.commit")

RETRY_SECONDS = 5.0

Done = Callable[[BaseException | None], None]


class Evidence(Protocol):
    """Where the hop records what happened (the audit trail). ``commit`` makes it durable."""

    def record(self, event: str, **fields: Any) -> None: ...
    def commit(self) -> Any: ...


class NoEvidence:
    """Used when a node keeps no audit trail ([audit] enabled = false: tests of the relay alone,
    benchmarks)."""

    def record(self, event: str, **fields: Any) -> None:
        pass

    def commit(self) -> None:
        pass


class Committer:
    def __init__(self, dedup: DedupStore, evidence: Evidence, executor: Executor) -> None:
        self.dedup = dedup
        self.evidence = evidence
        self.executor = executor
        self.healthy = asyncio.Event()
        self.healthy.set()
        self.last_error = ""
        self._waiting: list[Done] = []
        self._busy = False
        #: called (on the loop) right before each commit takes what is recorded: a route hands over
        #: the group record of its deliveries, so no dedup id is ever written without its evidence
        self.before_commit: list[Callable[[], None]] = []

    def request(self, done: Done) -> None:
        """Call ``done(None)`` once everything recorded so far is durable, ``done(exc)`` if it failed."""
        self._waiting.append(done)
        if not self._busy:
            self._start()

    async def flush(self) -> None:
        """Commit now and wait (shutdown)."""
        fut: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self.request(lambda exc: resolve(fut, exc))
        await fut

    def _start(self) -> None:
        batch, self._waiting = self._waiting, []
        self._busy = True
        for hand_over in self.before_commit:
            hand_over()
        rows = self.dedup.begin_commit()
        future = asyncio.get_running_loop().run_in_executor(self.executor, self._write, rows)
        future.add_done_callback(lambda f: self._done(f, batch))

    def _write(self, rows: list[tuple[str, str, float]]) -> None:
        # evidence first: the dedup store may only ever hold ids the trail already has a deliver
        # record for (a crash between the two then costs a duplicate at the sink, never a message
        # suppressed as a duplicate of a delivery nobody recorded)
        self.evidence.commit()
        self.dedup.write(rows)

    def _done(self, future: asyncio.Future[None], batch: list[Done]) -> None:
        self._busy = False
        exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
        if exc is None:
            self.dedup.end_commit()
            if not self.healthy.is_set():
                log.warning("evidence commits work again; routes resume", extra={"error": self.last_error})
                self.last_error = ""
                self.healthy.set()
        else:
            text = f"{type(exc).__name__}: {exc}"
            if self.healthy.is_set() or text != self.last_error:
                log.error("cannot make evidence durable; not acknowledging, routes pause",
                          extra={"error": text})
            self.last_error = text
            self.healthy.clear()
            asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retry)
        for done in batch:
            done(exc)
        if self._waiting and not self._busy:
            self._start()

    def _retry(self) -> None:
        if not self.healthy.is_set() and not self._busy:
            self.request(lambda _exc: None)
