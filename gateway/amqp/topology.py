"""The queues and exchanges jgw declares for a route, as data.

For each route, on the source broker:
- the source queue: quorum, ``x-delivery-limit`` (a message that keeps failing in jgw's hands is
  dead-lettered by the broker itself, so nothing loops forever), dead-lettering to
  ``jgw.dead-letter`` with the at-least-once strategy (which needs ``x-overflow=reject-publish``:
  without it RabbitMQ silently falls back to at-most-once);
- one delayed-retry queue per tier, ``jgw.retry.<route>.<delay>``: quorum, message TTL, and
  at-least-once dead-lettering back into the source queue when the TTL expires;
- ``jgw.quarantine`` and ``jgw.dead-letter``: plain quorum queues, no limits, no TTL: what is set
  aside stays until an operator acts.
With ``replicas`` every quorum queue of the route asks for that many members
(``x-quorum-initial-group-size``); a ``single-active`` route's source queue has
``x-single-active-consumer`` (one instance consumes, the others stand by); a route that replicates its
dedup state has a stream ``jgw.delivered.<route>`` (``gateway.cluster.stream``).
On the sink broker: the sink exchange is checked (or declared, when the route gives its type) and an
optional final delivery queue is declared and bound.

Security: pure data; names come from the validated config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.config import RouteConfig

QUARANTINE_QUEUE = "jgw.quarantine"
DEAD_LETTER_QUEUE = "jgw.dead-letter"
SET_ASIDE_QUEUES = (QUARANTINE_QUEUE, DEAD_LETTER_QUEUE)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: str | None  # None: must already exist (passive check)


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...] = ()
    queues: tuple[QueueSpec, ...] = field(default_factory=tuple)


def format_delay(seconds: float) -> str:
    ms = round(seconds * 1000)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def retry_queue(route: RouteConfig, tier: int) -> str:
    """Name of retry tier ``tier`` (0-based). The delay is in the name: changing it makes a new
    queue instead of a 406 'inequivalent arg' on the old one, whose messages still flow back."""
    return f"jgw.retry.{route.name}.{format_delay(route.retry[tier])}"


def delivered_stream(route: RouteConfig) -> str:
    """The stream of the ids a route delivered (its replicated dedup state)."""
    return f"jgw.delivered.{route.name}"


def _replicas(route: RouteConfig) -> dict[str, Any]:
    return {} if route.replicas is None else {"x-quorum-initial-group-size": route.replicas}


def source_topology(route: RouteConfig) -> Topology:
    source_args: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": route.delivery_limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": DEAD_LETTER_QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **_replicas(route),
    }
    if route.consumers == "single-active":
        source_args["x-single-active-consumer"] = True
    exchanges = tuple(ExchangeSpec(b.exchange, b.exchange_type) for b in route.source.bind)
    queues = [QueueSpec(route.source.queue, source_args,
                        tuple((b.exchange, b.routing_key) for b in route.source.bind))]
    if route.ordering_header is None:  # ordered routes retry in place (see gateway.route.runner)
        for tier, delay in enumerate(route.retry):
            queues.append(QueueSpec(retry_queue(route, tier), {
                "x-queue-type": "quorum",
                "x-message-ttl": round(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": route.source.queue,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
                **_replicas(route),
            }))
    for name in SET_ASIDE_QUEUES:
        queues.append(QueueSpec(name, {"x-queue-type": "quorum"}))
    if route.replicate:
        stream: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": f"{max(1, round(route.dedup_window))}s"}
        if route.replicas is not None:
            stream["x-initial-cluster-size"] = route.replicas
        queues.append(QueueSpec(delivered_stream(route), stream))
    return Topology(exchanges=exchanges, queues=tuple(queues))


def sink_topology(route: RouteConfig) -> Topology:
    sink = route.sink
    exchanges: tuple[ExchangeSpec, ...] = ()
    if sink.exchange:
        exchanges = (ExchangeSpec(sink.exchange, sink.exchange_type),)
    queues: tuple[QueueSpec, ...] = ()
    if sink.queue:
        bindings = ((sink.exchange, sink.routing_key),) if sink.exchange else ()
        queues = (QueueSpec(sink.queue, {"x-queue-type": "quorum"}, bindings),)
    return Topology(exchanges=exchanges, queues=queues)
