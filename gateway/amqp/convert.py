"""The AMQP property set, converted in one place: delivery → ``Message``, ``Message`` → publish.

A source delivery becomes a ``Message`` here (id, headers, ordering key, attempts spent); what
goes to a sink or to the side is built here. The source's own ``Properties`` (the codec's, which
keep the property block as it came) travel with the message as its *wire* form, so:

* a route without stages forwards the property block **byte for byte** (``forwarded``): nothing
  the source system set is lost, re-encoded or re-typed (a float stays a float, a decimal keeps its
  scale); only this hop's own bookkeeping headers are taken off when present;
* a set-aside copy is the wire form with jgw's headers added (``set_aside``), the other headers kept
  as their wire bytes;
* what a stage made (an envelope, an opened message) is built from the ``Message``
  (``from_message``), every header value with its field type (``gateway.amqp.fields``).

Headers are decoded only when something reads them (``LazyHeaders``): a stage-less route that does
not order never decodes them.

Text properties that are not UTF-8 on the wire reach a ``Message`` decoded with surrogate escapes
(the wire form keeps the bytes; a stage that must re-encode such text refuses it with a reason).

Security: reads properties and headers of hostile messages (through the codec's limits); never the
body.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from gateway.amqp.properties import Properties
from gateway.ids import new_message_id
from gateway.message import (
    H_ATTEMPT,
    H_DETAIL,
    H_FAILED_AT,
    H_NODE,
    H_ORIGIN_QUEUE,
    H_REASON,
    H_ROUTE,
    H_SENT_AT,
    Message,
)

#: Headers that describe a message's past at this hop; they are not forwarded to the sink.
HOP_HEADERS = frozenset({H_ATTEMPT, H_REASON, H_DETAIL, H_FAILED_AT, H_ORIGIN_QUEUE})
_JGW = b"x-jgw-"
_ATTEMPT = H_ATTEMPT.encode()
_SENT = H_SENT_AT.encode()


def text(value: str | bytes | None) -> str | None:
    """A text property as a ``str`` (bytes that are not UTF-8 keep their bytes as surrogate escapes)."""
    if value is None or isinstance(value, str):
        return value
    return value.decode("utf-8", "surrogateescape")


class LazyHeaders(Mapping[Any, Any]):
    """A delivery's headers, decoded from the wire on first use."""

    __slots__ = ("_props", "_table")

    def __init__(self, props: Properties) -> None:
        self._props = props
        self._table: Mapping[Any, Any] | None = None

    def _get(self) -> Mapping[Any, Any]:
        table = self._table
        if table is None:
            table = self._table = self._props.headers or {}
        return table

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, key: object) -> bool:
        return key in self._get()

    def __repr__(self) -> str:
        return f"LazyHeaders({len(self)} headers)"


def to_message(route: str, props: Properties, body: bytes, ordering_header: str | None,
               received_at: float) -> tuple[Message, Properties]:
    """A delivery as stages see it, and its wire properties. A message without an id gets one
    here, kept from then on (every republish and set-aside carries it)."""
    message_id = text(props.message_id)
    if not message_id:
        message_id = new_message_id()
        props = props.replace(message_id=message_id)
    raw = props.encode()
    headers: Mapping[Any, Any] = LazyHeaders(props)
    attempt = 0
    if _ATTEMPT in raw:
        found = headers.get(H_ATTEMPT, 0)
        attempt = found if isinstance(found, int) and not isinstance(found, bool) else 0
    order_key = None
    if ordering_header is not None:
        value = headers.get(ordering_header)
        if value is not None:
            order_key = value.hex() if isinstance(value, bytes) else str(value)
    timestamp = props.timestamp
    return Message(message_id=message_id, route=route, body=body, headers=headers,
                   content_type=text(props.content_type), content_encoding=text(props.content_encoding),
                   correlation_id=text(props.correlation_id), type=text(props.type), app_id=text(props.app_id),
                   timestamp=int(timestamp) if timestamp is not None else None, attempt=attempt,
                   order_key=order_key, received_at=received_at), props


def sent_at_header(props: Properties) -> bool:
    """Whether the properties may carry ``x-jgw-sent-ms`` (cheap: looks at the wire bytes)."""
    return _SENT in props.encode()


def forwarded(props: Properties) -> Properties:
    """The source's properties as the sink gets them on a route without stages: the property block
    as it came, minus this hop's own bookkeeping headers (re-encoded only when there are some)."""
    if _JGW not in props.encode():  # no header of jgw's at all: the usual case, one scan of the block
        return props
    headers = props.headers or {}
    if HOP_HEADERS.isdisjoint(headers):
        return props
    return props.replace(headers={k: v for k, v in headers.items() if k not in HOP_HEADERS})


def from_message(msg: Message) -> Properties:
    """What a stage made of a message, as the sink gets it (persistent)."""
    headers = {k: v for k, v in msg.headers.items() if k not in HOP_HEADERS}
    return Properties(message_id=msg.message_id, delivery_mode=2, headers=headers,
                      content_type=msg.content_type, content_encoding=msg.content_encoding,
                      correlation_id=msg.correlation_id, type=msg.type, app_id=msg.app_id,
                      timestamp=msg.timestamp)


def for_sink(msg: Message, wire: Any, unchanged: bool) -> Properties:
    """The sink's properties: the source's own when no stage changed the message."""
    if unchanged and isinstance(wire, Properties):
        return forwarded(wire)
    return from_message(msg)


def set_aside(msg: Message, wire: Any, *, route: str, node_id: str, origin_queue: str, attempt: int,
              reason: str, detail: str, retry: bool) -> Properties:
    """A set-aside copy: the original properties (or, for a message that is not a source original,
    those of the message itself) plus why and where it was set aside."""
    p = wire if isinstance(wire, Properties) else from_message(msg)
    headers: dict[Any, Any] = {k: v for k, v in (p.headers or {}).items() if k not in HOP_HEADERS}
    headers[H_ATTEMPT] = attempt
    headers[H_REASON] = reason
    headers[H_ROUTE] = route
    if not retry:
        headers[H_DETAIL] = detail
        headers[H_FAILED_AT] = int(time.time() * 1000)
        headers[H_NODE] = node_id
        headers[H_ORIGIN_QUEUE] = origin_queue
    return p.replace(message_id=p.message_id or msg.message_id, delivery_mode=2, headers=headers, user_id=None,
                     expiration=None)
