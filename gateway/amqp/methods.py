"""AMQP 0-9-1 methods as frozen dataclasses: one class per method the gateway sends or receives.

Each class names its wire fields, in wire order, in ``SPEC`` (one letter per field): ``o`` octet,
``h`` short (uint16), ``i`` long (uint32), ``q`` longlong (uint64), ``?`` bit, ``s`` shortstr
(``str``; bytes that are not UTF-8 are kept with ``surrogateescape``, so they round-trip),
``S`` longstr (``bytes``), ``F`` field table (``dict``, see ``gateway.amqp.fields``). Reserved
fields (the ``ticket`` shorts, ``reserved-1`` strings and the ``insist`` bit) are written as zero /
empty and skipped when read: ``r`` short, ``R`` shortstr, ``Z`` longstr, ``!`` bit. The dataclass
fields follow the non-reserved letters in order; ``channel`` (keyword-only, last) says which
channel the method travels on. Content-bearing methods (publish, return, deliver, get-ok) also carry
``properties`` and ``body``: the parser hands them over complete, with their content.

Covered: connection start/start-ok/secure/secure-ok/tune/tune-ok/open/open-ok/close/close-ok/
blocked/unblocked; channel open/open-ok/flow/flow-ok/close/close-ok; exchange declare/-ok,
delete/-ok; queue declare/-ok, bind/-ok, unbind/-ok, purge/-ok, delete/-ok; basic qos/-ok,
consume/-ok, cancel/-ok, publish, return, deliver, get/get-ok/get-empty, ack, reject, nack;
confirm select/-ok. Not covered (unknown to the parser, so a peer sending them is refused):
basic.recover*, tx.*, access.*, exchange.bind/unbind, connection.update-secret.

Events are built per received method, so they stay small: no behaviour, only data
(h11's "Don't subclass these"). They are values: treat them as read-only. They are not frozen
dataclasses because a frozen dataclass's ``__init__`` costs 0.75 µs more per basic.deliver (eight
``object.__setattr__`` calls), a sixth of what decoding a whole delivery costs.

Security: pure data; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from gateway.amqp.fields import FieldTable
from gateway.amqp.properties import Properties

__all__ = ["BY_ID", "CONTENT_METHODS", "Heartbeat", "Method"]


@dataclass(slots=True)
class Method:
    """Base of every method event."""

    CLASS_ID: ClassVar[int] = 0
    METHOD_ID: ClassVar[int] = 0
    SPEC: ClassVar[str] = ""
    #: the reply a client awaits after sending this (synchronous methods), else None
    SYNCHRONOUS: ClassVar[bool] = False
    channel: int = field(default=0, kw_only=True)

    @property
    def name(self) -> str:
        return _NAMES[type(self)]


@dataclass(slots=True)
class Heartbeat:
    """A heartbeat frame (always channel 0)."""

    channel: int = 0


# -- connection (10) --------------------------------------------------------------------------

@dataclass(slots=True)
class ConnectionStart(Method):
    CLASS_ID = 10
    METHOD_ID = 10
    SPEC = "ooFSS"
    version_major: int = 0
    version_minor: int = 9
    server_properties: FieldTable = field(default_factory=dict)
    mechanisms: bytes = b"PLAIN"
    locales: bytes = b"en_US"


@dataclass(slots=True)
class ConnectionStartOk(Method):
    CLASS_ID = 10
    METHOD_ID = 11
    SPEC = "FsSs"
    client_properties: FieldTable = field(default_factory=dict)
    mechanism: str = "PLAIN"
    response: bytes = b""
    locale: str = "en_US"


@dataclass(slots=True)
class ConnectionSecure(Method):
    CLASS_ID = 10
    METHOD_ID = 20
    SPEC = "S"
    challenge: bytes = b""


@dataclass(slots=True)
class ConnectionSecureOk(Method):
    CLASS_ID = 10
    METHOD_ID = 21
    SPEC = "S"
    response: bytes = b""


@dataclass(slots=True)
class ConnectionTune(Method):
    CLASS_ID = 10
    METHOD_ID = 30
    SPEC = "hih"
    channel_max: int = 0
    frame_max: int = 0
    heartbeat: int = 0


@dataclass(slots=True)
class ConnectionTuneOk(Method):
    CLASS_ID = 10
    METHOD_ID = 31
    SPEC = "hih"
    channel_max: int = 0
    frame_max: int = 0
    heartbeat: int = 0


@dataclass(slots=True)
class ConnectionOpen(Method):
    CLASS_ID = 10
    METHOD_ID = 40
    SPEC = "sR!"
    SYNCHRONOUS = True
    virtual_host: str = "/"


@dataclass(slots=True)
class ConnectionOpenOk(Method):
    CLASS_ID = 10
    METHOD_ID = 41
    SPEC = "R"


@dataclass(slots=True)
class ConnectionClose(Method):
    CLASS_ID = 10
    METHOD_ID = 50
    SPEC = "hshh"
    SYNCHRONOUS = True
    reply_code: int = 200
    reply_text: str = ""
    class_id: int = 0
    method_id: int = 0


@dataclass(slots=True)
class ConnectionCloseOk(Method):
    CLASS_ID = 10
    METHOD_ID = 51
    SPEC = ""


@dataclass(slots=True)
class ConnectionBlocked(Method):
    CLASS_ID = 10
    METHOD_ID = 60
    SPEC = "s"
    reason: str = ""


@dataclass(slots=True)
class ConnectionUnblocked(Method):
    CLASS_ID = 10
    METHOD_ID = 61
    SPEC = ""


# -- channel (20) -----------------------------------------------------------------------------

@dataclass(slots=True)
class ChannelOpen(Method):
    CLASS_ID = 20
    METHOD_ID = 10
    SPEC = "R"
    SYNCHRONOUS = True


@dataclass(slots=True)
class ChannelOpenOk(Method):
    CLASS_ID = 20
    METHOD_ID = 11
    SPEC = "Z"


@dataclass(slots=True)
class ChannelFlow(Method):
    CLASS_ID = 20
    METHOD_ID = 20
    SPEC = "?"
    SYNCHRONOUS = True
    active: bool = True


@dataclass(slots=True)
class ChannelFlowOk(Method):
    CLASS_ID = 20
    METHOD_ID = 21
    SPEC = "?"
    active: bool = True


@dataclass(slots=True)
class ChannelClose(Method):
    CLASS_ID = 20
    METHOD_ID = 40
    SPEC = "hshh"
    SYNCHRONOUS = True
    reply_code: int = 200
    reply_text: str = ""
    class_id: int = 0
    method_id: int = 0


@dataclass(slots=True)
class ChannelCloseOk(Method):
    CLASS_ID = 20
    METHOD_ID = 41
    SPEC = ""


# -- exchange (40) ----------------------------------------------------------------------------

@dataclass(slots=True)
class ExchangeDeclare(Method):
    CLASS_ID = 40
    METHOD_ID = 10
    SPEC = "rss?????F"
    SYNCHRONOUS = True
    exchange: str = ""
    type: str = "direct"
    passive: bool = False
    durable: bool = False
    auto_delete: bool = False
    internal: bool = False
    nowait: bool = False
    arguments: FieldTable = field(default_factory=dict)


@dataclass(slots=True)
class ExchangeDeclareOk(Method):
    CLASS_ID = 40
    METHOD_ID = 11
    SPEC = ""


@dataclass(slots=True)
class ExchangeDelete(Method):
    CLASS_ID = 40
    METHOD_ID = 20
    SPEC = "rs??"
    SYNCHRONOUS = True
    exchange: str = ""
    if_unused: bool = False
    nowait: bool = False


@dataclass(slots=True)
class ExchangeDeleteOk(Method):
    CLASS_ID = 40
    METHOD_ID = 21
    SPEC = ""


# -- queue (50) -------------------------------------------------------------------------------

@dataclass(slots=True)
class QueueDeclare(Method):
    CLASS_ID = 50
    METHOD_ID = 10
    SPEC = "rs?????F"
    SYNCHRONOUS = True
    queue: str = ""
    passive: bool = False
    durable: bool = False
    exclusive: bool = False
    auto_delete: bool = False
    nowait: bool = False
    arguments: FieldTable = field(default_factory=dict)


@dataclass(slots=True)
class QueueDeclareOk(Method):
    CLASS_ID = 50
    METHOD_ID = 11
    SPEC = "sii"
    queue: str = ""
    message_count: int = 0
    consumer_count: int = 0


@dataclass(slots=True)
class QueueBind(Method):
    CLASS_ID = 50
    METHOD_ID = 20
    SPEC = "rsss?F"
    SYNCHRONOUS = True
    queue: str = ""
    exchange: str = ""
    routing_key: str = ""
    nowait: bool = False
    arguments: FieldTable = field(default_factory=dict)


@dataclass(slots=True)
class QueueBindOk(Method):
    CLASS_ID = 50
    METHOD_ID = 21
    SPEC = ""


@dataclass(slots=True)
class QueuePurge(Method):
    CLASS_ID = 50
    METHOD_ID = 30
    SPEC = "rs?"
    SYNCHRONOUS = True
    queue: str = ""
    nowait: bool = False


@dataclass(slots=True)
class QueuePurgeOk(Method):
    CLASS_ID = 50
    METHOD_ID = 31
    SPEC = "i"
    message_count: int = 0


@dataclass(slots=True)
class QueueDelete(Method):
    CLASS_ID = 50
    METHOD_ID = 40
    SPEC = "rs???"
    SYNCHRONOUS = True
    queue: str = ""
    if_unused: bool = False
    if_empty: bool = False
    nowait: bool = False


@dataclass(slots=True)
class QueueDeleteOk(Method):
    CLASS_ID = 50
    METHOD_ID = 41
    SPEC = "i"
    message_count: int = 0


@dataclass(slots=True)
class QueueUnbind(Method):
    CLASS_ID = 50
    METHOD_ID = 50
    SPEC = "rsssF"
    SYNCHRONOUS = True
    queue: str = ""
    exchange: str = ""
    routing_key: str = ""
    arguments: FieldTable = field(default_factory=dict)


@dataclass(slots=True)
class QueueUnbindOk(Method):
    CLASS_ID = 50
    METHOD_ID = 51
    SPEC = ""


# -- basic (60) -------------------------------------------------------------------------------

@dataclass(slots=True)
class BasicQos(Method):
    CLASS_ID = 60
    METHOD_ID = 10
    SPEC = "ih?"
    SYNCHRONOUS = True
    prefetch_size: int = 0
    prefetch_count: int = 0
    global_: bool = False


@dataclass(slots=True)
class BasicQosOk(Method):
    CLASS_ID = 60
    METHOD_ID = 11
    SPEC = ""


@dataclass(slots=True)
class BasicConsume(Method):
    CLASS_ID = 60
    METHOD_ID = 20
    SPEC = "rss????F"
    SYNCHRONOUS = True
    queue: str = ""
    consumer_tag: str = ""
    no_local: bool = False
    no_ack: bool = False
    exclusive: bool = False
    nowait: bool = False
    arguments: FieldTable = field(default_factory=dict)


@dataclass(slots=True)
class BasicConsumeOk(Method):
    CLASS_ID = 60
    METHOD_ID = 21
    SPEC = "s"
    consumer_tag: str = ""


@dataclass(slots=True)
class BasicCancel(Method):
    CLASS_ID = 60
    METHOD_ID = 30
    SPEC = "s?"
    SYNCHRONOUS = True
    consumer_tag: str = ""
    nowait: bool = False


@dataclass(slots=True)
class BasicCancelOk(Method):
    CLASS_ID = 60
    METHOD_ID = 31
    SPEC = "s"
    consumer_tag: str = ""


@dataclass(slots=True)
class BasicPublish(Method):
    CLASS_ID = 60
    METHOD_ID = 40
    SPEC = "rss??"
    exchange: str = ""
    routing_key: str = ""
    mandatory: bool = False
    immediate: bool = False
    properties: Properties = field(default_factory=Properties)
    body: bytes = field(default=b"", repr=False)


@dataclass(slots=True)
class BasicReturn(Method):
    CLASS_ID = 60
    METHOD_ID = 50
    SPEC = "hsss"
    reply_code: int = 0
    reply_text: str = ""
    exchange: str = ""
    routing_key: str = ""
    properties: Properties = field(default_factory=Properties)
    body: bytes = field(default=b"", repr=False)


@dataclass(slots=True)
class BasicDeliver(Method):
    CLASS_ID = 60
    METHOD_ID = 60
    SPEC = "sq?ss"
    consumer_tag: str = ""
    delivery_tag: int = 0
    redelivered: bool = False
    exchange: str = ""
    routing_key: str = ""
    properties: Properties = field(default_factory=Properties)
    body: bytes = field(default=b"", repr=False)


@dataclass(slots=True)
class BasicGet(Method):
    CLASS_ID = 60
    METHOD_ID = 70
    SPEC = "rs?"
    SYNCHRONOUS = True
    queue: str = ""
    no_ack: bool = False


@dataclass(slots=True)
class BasicGetOk(Method):
    CLASS_ID = 60
    METHOD_ID = 71
    SPEC = "q?ssi"
    delivery_tag: int = 0
    redelivered: bool = False
    exchange: str = ""
    routing_key: str = ""
    message_count: int = 0
    properties: Properties = field(default_factory=Properties)
    body: bytes = field(default=b"", repr=False)


@dataclass(slots=True)
class BasicGetEmpty(Method):
    CLASS_ID = 60
    METHOD_ID = 72
    SPEC = "R"


@dataclass(slots=True)
class BasicAck(Method):
    CLASS_ID = 60
    METHOD_ID = 80
    SPEC = "q?"
    delivery_tag: int = 0
    multiple: bool = False


@dataclass(slots=True)
class BasicReject(Method):
    CLASS_ID = 60
    METHOD_ID = 90
    SPEC = "q?"
    delivery_tag: int = 0
    requeue: bool = True


@dataclass(slots=True)
class BasicNack(Method):
    CLASS_ID = 60
    METHOD_ID = 120
    SPEC = "q??"
    delivery_tag: int = 0
    multiple: bool = False
    requeue: bool = True


# -- confirm (85) -----------------------------------------------------------------------------

@dataclass(slots=True)
class ConfirmSelect(Method):
    CLASS_ID = 85
    METHOD_ID = 10
    SPEC = "?"
    SYNCHRONOUS = True
    nowait: bool = False


@dataclass(slots=True)
class ConfirmSelectOk(Method):
    CLASS_ID = 85
    METHOD_ID = 11
    SPEC = ""


ALL_METHODS: tuple[type[Method], ...] = (
    ConnectionStart, ConnectionStartOk, ConnectionSecure, ConnectionSecureOk, ConnectionTune, ConnectionTuneOk,
    ConnectionOpen, ConnectionOpenOk, ConnectionClose, ConnectionCloseOk, ConnectionBlocked, ConnectionUnblocked,
    ChannelOpen, ChannelOpenOk, ChannelFlow, ChannelFlowOk, ChannelClose, ChannelCloseOk,
    ExchangeDeclare, ExchangeDeclareOk, ExchangeDelete, ExchangeDeleteOk,
    QueueDeclare, QueueDeclareOk, QueueBind, QueueBindOk, QueuePurge, QueuePurgeOk, QueueDelete, QueueDeleteOk,
    QueueUnbind, QueueUnbindOk,
    BasicQos, BasicQosOk, BasicConsume, BasicConsumeOk, BasicCancel, BasicCancelOk, BasicPublish, BasicReturn,
    BasicDeliver, BasicGet, BasicGetOk, BasicGetEmpty, BasicAck, BasicReject, BasicNack,
    ConfirmSelect, ConfirmSelectOk,
)

#: (class id << 16 | method id) -> method class
BY_ID: dict[int, type[Method]] = {cls.CLASS_ID << 16 | cls.METHOD_ID: cls for cls in ALL_METHODS}
CONTENT_METHODS: frozenset[type[Method]] = frozenset({BasicPublish, BasicReturn, BasicDeliver, BasicGetOk})
_CLASS_NAMES = {10: "connection", 20: "channel", 40: "exchange", 50: "queue", 60: "basic", 85: "confirm"}


def _dotted(cls: type[Method]) -> str:
    base = cls.__name__
    for prefix in ("Connection", "Channel", "Exchange", "Queue", "Basic", "Confirm"):
        if base.startswith(prefix):
            rest = base[len(prefix):]
            words: list[str] = []
            for ch in rest:
                if ch.isupper() and words:
                    words.append("-")
                words.append(ch.lower())
            return f"{_CLASS_NAMES[cls.CLASS_ID]}.{''.join(words)}"
    return base


_NAMES: dict[type[Any], str] = {cls: _dotted(cls) for cls in ALL_METHODS}


def method_name(class_id: int, method_id: int) -> str:
    """``queue.declare`` for (50, 10); ``60.99`` for an unknown pair."""
    cls = BY_ID.get(class_id << 16 | method_id)
    return _NAMES[cls] if cls is not None else f"{class_id}.{method_id}"
