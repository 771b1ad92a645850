"""The message as it travels through a route, and the jgw headers it carries.

Security: pure data. ``body`` is hostile, opaque bytes: never decoded, normalised or logged.
``headers`` come from the source system and are forwarded as they are; only ids, counts and
codes of our own go into ``x-jgw-*`` headers, never personal data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Headers jgw sets. The source system's own headers pass through untouched.
H_ROUTE = "x-jgw-route"  # route name at the hop that set it
H_NODE = "x-jgw-node"  # node id of the jgw that forwarded the message
H_ATTEMPT = "x-jgw-attempt"  # delivery attempts already spent on retry tiers
H_REASON = "x-jgw-reason"  # short reason code (quarantine / dead-letter)
H_DETAIL = "x-jgw-detail"  # operator text for the reason: ids and sizes only
H_FAILED_AT = "x-jgw-failed-ms"  # unix time in milliseconds when the message was set aside
H_SENT_AT = "x-jgw-sent-ms"  # unix time in milliseconds when the source published it (jgw send)
# (AMQP tables carry no floats in pika: times are integer milliseconds.)
H_REPLAYED = "x-jgw-replayed"  # number of times an operator replayed this message
H_ORIGIN_QUEUE = "x-jgw-origin-queue"  # the source queue a set-aside message came from

JGW_HEADER_PREFIX = "x-jgw-"


def sent_at(headers: Mapping[str, Any] | None, timestamp: int | None) -> float | None:
    """When the source published a message, as well as we can tell (for end-to-end latency)."""
    raw = headers.get(H_SENT_AT) if headers else None
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw / 1000.0
    return float(timestamp) if timestamp is not None else None


@dataclass(slots=True, eq=True)
class Message:
    """One message between source and sink. Treat it as immutable: a stage makes a changed copy
    with ``replace`` (not frozen only because a frozen dataclass costs the hot path 1.3 µs a message).

    ``message_id`` is the identity used for dedup and evidence; every stage keeps it (``open``
    may replace it with the id proven by the signed envelope header, which must match).
    """

    message_id: str
    route: str
    body: bytes
    headers: Mapping[str, Any] = field(default_factory=dict)
    content_type: str | None = None
    content_encoding: str | None = None
    correlation_id: str | None = None
    type: str | None = None
    app_id: str | None = None
    timestamp: int | None = None  # AMQP timestamp property, seconds
    attempt: int = 0
    order_key: str | None = None  # never logged, never a metric label
    received_at: float = 0.0  # time.time() when jgw took it from the source

    def replace(self, **changes: Any) -> Message:
        return dataclasses.replace(self, **changes)

    @property
    def size(self) -> int:
        return len(self.body)

    @property
    def sent_at(self) -> float | None:
        return sent_at(self.headers, self.timestamp)

    def __repr__(self) -> str:  # never show the body or source headers
        return f"Message(id={self.message_id!r}, route={self.route!r}, size={self.size}, attempt={self.attempt})"
