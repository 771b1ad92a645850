"""Set-aside messages as an operator sees them: read one at a time from jgw.dead-letter or jgw.quarantine.

NAME
    setaside - ``scan()`` streams the messages of a set-aside queue, unacknowledged; ``SetAside``
    says which route, why and when; ``replay_properties`` rebuilds a dead letter for its route

DESCRIPTION
    ``scan(session, queue, ...)`` takes the messages that were in the queue when it started, one
    ``basic.get`` at a time, without acknowledging any: memory holds one message body at a time,
    whatever the depth. A message the caller does not ``ack`` goes back to the queue when the
    channel closes. How many deliveries a look costs a message, and why that never drops one, is in
    docs/operations.md ("Set-aside messages").

    ``shown_id()`` is the one place an id or correlation id is made fit to print: every operator
    view (list, show, replay, delete, export) goes through it, with the same masking as the logs.

Security: reads set-aside messages (hostile input) and shows ids, reasons, sizes and jgw headers;
payloads and the source system's header values only when asked for explicitly.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.amqp.blocking import Got, Properties, Session, plain
from gateway.config import Config, RouteConfig
from gateway.errors import NoInputError
from gateway.message import (
    H_ATTEMPT,
    H_DETAIL,
    H_FAILED_AT,
    H_ORIGIN_QUEUE,
    H_REASON,
    H_REPLAYED,
    H_ROUTE,
    JGW_HEADER_PREFIX,
)
from gateway.policy.redact import redact_text, redact_value


def shown_id(value: str | None) -> str:
    """A message id or correlation id as operator output may show it: masked like the logs mask it
    (``gateway.policy.redact``) when it holds a 個人番号-shaped number."""
    return redact_text(value) if value else (value or "")


def shown_value(value: Any) -> Any:
    """A header value (or a table of them) as operator output may show it, masked like the logs."""
    return redact_value(plain(value))


@dataclass
class SetAside:
    """One message in jgw.dead-letter or jgw.quarantine."""

    delivery_tag: int
    message_id: str
    route: str
    reason: str
    detail: str
    failed_at: float | None
    attempt: int
    size: int
    origin_queue: str
    properties: Properties
    body: bytes = field(repr=False)
    #: Deliveries the broker counted for this message (quorum queues' ``x-delivery-count``).
    delivery_count: int = 0

    @property
    def age(self) -> float | None:
        return None if self.failed_at is None else max(0.0, time.time() - self.failed_at)

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.properties.headers or {})

    def jgw_headers(self) -> dict[str, Any]:
        return {k: shown_value(v) for k, v in self.headers.items() if k.startswith(JGW_HEADER_PREFIX)}

    def other_header_names(self) -> list[str]:
        return sorted(k for k in self.headers if not k.startswith(JGW_HEADER_PREFIX))

    def summary(self) -> dict[str, Any]:
        return {"id": shown_id(self.message_id), "route": self.route, "reason": self.reason,
                "detail": redact_text(self.detail), "failed_at": local_time(self.failed_at),
                "age_seconds": None if self.age is None else round(self.age, 1), "attempt": self.attempt,
                "size": self.size, "origin_queue": self.origin_queue}


def local_time(ts: float | None) -> str | None:
    """A time for an operator: ISO 8601 in the operator's time zone, with its offset (+09:00 in JST)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def route_of(headers: dict[str, Any], config: Config, broker: str) -> tuple[str, str]:
    """(route, origin queue): from jgw's headers, or from x-death when the broker dead-lettered it."""
    route = headers.get(H_ROUTE)
    origin = headers.get(H_ORIGIN_QUEUE)
    if not origin:
        deaths = headers.get("x-death") or []
        if deaths and isinstance(deaths[0], dict):
            origin = plain(deaths[0].get("queue", ""))
    if not route and origin:
        for r in config.routes.values():
            if r.source.broker == broker and r.source.queue == origin:
                route = r.name
    return str(plain(route) or "?"), str(plain(origin) or "?")


def reason_of(headers: dict[str, Any]) -> str:
    reason = headers.get(H_REASON)
    if reason:
        return str(plain(reason))
    first = headers.get("x-first-death-reason")
    return f"broker-{plain(first)}".replace("_", "-") if first else "unknown"


def failed_at(headers: dict[str, Any]) -> float | None:
    raw = headers.get(H_FAILED_AT)
    if isinstance(raw, int):
        return raw / 1000.0
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        t = deaths[0].get("time")
        if isinstance(t, dt.datetime):
            return t.timestamp()
        if isinstance(t, int | float):
            return float(t)
    return None


def entry(got: Got, config: Config, broker: str) -> SetAside:
    props = got.properties
    headers = props.headers or {}
    route, origin = route_of(headers, config, broker)
    attempt = headers.get(H_ATTEMPT, 0)
    count = headers.get("x-delivery-count", 0)
    return SetAside(delivery_tag=got.delivery_tag, message_id=props.message_id or "(none)", route=route,
                    reason=reason_of(headers), detail=str(plain(headers.get(H_DETAIL, ""))),
                    failed_at=failed_at(headers), attempt=attempt if isinstance(attempt, int) else 0,
                    size=len(got.body), origin_queue=origin, properties=props, body=got.body,
                    delivery_count=count if isinstance(count, int) else 0)


@dataclass
class Scan:
    """Progress of one pass over a set-aside queue."""

    broker: str
    queue: str
    depth: int | None = None
    read: int = 0
    #: Depth once the scan gave back what it did not take (None until then).
    after: int | None = None


class Progress:
    """``read N/M`` on stderr, rewritten in place, only when stderr is a terminal."""

    def __init__(self, label: str, enabled: bool | None = None, interval: float = 0.5) -> None:
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.interval = interval
        self._last = 0.0
        self._shown = False

    def __call__(self, scan: Scan) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval and scan.read != scan.depth:
            return
        self._last = now
        sys.stderr.write(f"\r{self.label}: {scan.queue} on {scan.broker}: read {scan.read}/{scan.depth}")
        sys.stderr.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = False


def scan(session: Session, scan_state: Scan, config: Config,
         progress: Callable[[Scan], None] | None = None) -> Iterator[SetAside]:
    """Every message that was in the queue when the scan started, one at a time, unacknowledged.

    The number taken is bounded by the depth at the start, so a queue that keeps filling cannot
    keep a listing going; messages that arrive meanwhile are seen by the next one."""
    depth = session.depth(scan_state.queue)
    scan_state.depth = depth
    if depth is None:
        return
    acked_before = session.acked
    try:
        while scan_state.read < depth:
            got = session.get(scan_state.queue)
            if got is None:
                break
            scan_state.read += 1
            if progress is not None:
                progress(scan_state)
            yield entry(got, config, session.broker.name)
    finally:
        # give back what was not acknowledged, and wait until the queue shows it again
        scan_state.after = session.give_back(scan_state.queue, depth - (session.acked - acked_before))


def replay_properties(item: SetAside) -> Properties:
    """The message as its source system sent it, plus how often an operator replayed it."""
    p = item.properties
    headers = {k: v for k, v in (p.headers or {}).items()
               if k not in (H_ATTEMPT, H_REASON, H_DETAIL, H_FAILED_AT, H_ORIGIN_QUEUE, H_ROUTE)
               and not k.startswith("x-death") and k not in ("x-first-death-exchange", "x-first-death-queue",
                                                              "x-first-death-reason", "x-delivery-count")}
    replayed = (p.headers or {}).get(H_REPLAYED, 0)
    headers[H_REPLAYED] = (replayed if isinstance(replayed, int) else 0) + 1
    return Properties(message_id=p.message_id, delivery_mode=2, headers=headers,
                      content_type=p.content_type, content_encoding=p.content_encoding,
                      correlation_id=p.correlation_id, type=p.type, app_id=p.app_id,
                      timestamp=p.timestamp, priority=p.priority, reply_to=p.reply_to)


def route_source(config: Config, name: str) -> RouteConfig:
    """The route of that name, or an error naming the routes there are."""
    try:
        return config.routes[name]
    except KeyError:
        known = ", ".join(sorted(config.routes)) or "(none)"
        raise NoInputError(f"no route {name!r} in {config.file} (routes: {known})") from None
