"""Operator-side broker access for the CLI (blocking pika): inject, inspect and replay messages.

The daemon never uses this module; ``jgw send``, ``jgw status``, ``jgw dlq`` and
``jgw quarantine`` do. Set-aside queues are read with ``basic_get`` without acknowledging, so
listing changes nothing: whatever is not explicitly replayed goes back when the channel closes.

Security: talks to the configured brokers with the node's credentials. Shows ids, reasons, sizes
and jgw headers; payloads and the source system's header values only when asked for explicitly.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError, ChannelClosedByBroker

from gateway.config import BrokerConfig, Config, RouteConfig, redact_url
from gateway.errors import NoInputError, UnavailableError
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

SslFactory = Callable[[BrokerConfig], ssl.SSLContext | None]


def connect(broker: BrokerConfig, ssl_factory: SslFactory | None = None, timeout: float = 10.0) -> BlockingConnection:
    """Open a blocking connection, trying the broker's URLs in turn."""
    errors = []
    for url in broker.urls:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = timeout
        params.blocked_connection_timeout = timeout
        params.client_properties = {"connection_name": "jgw cli"}
        if broker.tls is not None and ssl_factory is not None:
            ctx = ssl_factory(broker)
            if ctx is not None:
                params.ssl_options = pika.SSLOptions(ctx, broker.tls.server_hostname or params.host)
                if broker.tls.external_auth:
                    params.credentials = pika.credentials.ExternalCredentials()
        try:
            return BlockingConnection(params)
        except (AMQPError, OSError) as exc:
            errors.append(f"{redact_url(url)}: {type(exc).__name__} {exc}".strip())
    raise UnavailableError(f"broker {broker.name!r} unreachable: " + "; ".join(errors))


@contextlib.contextmanager
def channel(broker: BrokerConfig, ssl_factory: SslFactory | None = None) -> Iterator[BlockingChannel]:
    conn = connect(broker, ssl_factory)
    try:
        yield conn.channel()
    finally:
        with contextlib.suppress(AMQPError, OSError):
            conn.close()


def queue_depth(ch: BlockingChannel, queue: str) -> int | None:
    """Messages ready in ``queue``, or None if it does not exist (the channel is then reopened)."""
    try:
        frame = ch.queue_declare(queue, passive=True)
    except ChannelClosedByBroker:
        return None
    return int(frame.method.message_count)


@dataclass
class SetAside:
    """One message in jgw.dead-letter or jgw.quarantine, as an operator sees it."""

    delivery_tag: int
    message_id: str
    route: str
    reason: str
    detail: str
    failed_at: float | None
    attempt: int
    size: int
    origin_queue: str
    properties: pika.BasicProperties
    body: bytes = field(repr=False)

    @property
    def age(self) -> float | None:
        return None if self.failed_at is None else max(0.0, time.time() - self.failed_at)

    def jgw_headers(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in (self.properties.headers or {}).items() if k.startswith(JGW_HEADER_PREFIX)}

    def other_header_names(self) -> list[str]:
        return sorted(k for k in (self.properties.headers or {}) if not k.startswith(JGW_HEADER_PREFIX))

    def summary(self) -> dict[str, Any]:
        return {"id": self.message_id, "route": self.route, "reason": self.reason, "detail": self.detail,
                "age_seconds": None if self.age is None else round(self.age, 1), "attempt": self.attempt,
                "size": self.size, "origin_queue": self.origin_queue}


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _route_of(headers: dict[str, Any], config: Config, broker: str) -> tuple[str, str]:
    """(route, origin queue): from jgw's headers, or from x-death when the broker dead-lettered it."""
    route = headers.get(H_ROUTE)
    origin = headers.get(H_ORIGIN_QUEUE)
    if not origin:
        deaths = headers.get("x-death") or []
        if deaths and isinstance(deaths[0], dict):
            origin = _plain(deaths[0].get("queue", ""))
    if not route and origin:
        for r in config.routes.values():
            if r.source.broker == broker and r.source.queue == origin:
                route = r.name
    return str(_plain(route) or "?"), str(_plain(origin) or "?")


def _reason_of(headers: dict[str, Any]) -> str:
    reason = headers.get(H_REASON)
    if reason:
        return str(_plain(reason))
    first = headers.get("x-first-death-reason")
    return f"broker-{_plain(first)}".replace("_", "-") if first else "unknown"


def _failed_at(headers: dict[str, Any], props: pika.BasicProperties) -> float | None:
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


def fetch_all(ch: BlockingChannel, queue: str, config: Config, broker: str, limit: int = 100000) -> list[SetAside]:
    """Take every message of ``queue`` without acknowledging it (it returns when the channel closes)."""
    out: list[SetAside] = []
    depth = queue_depth(ch, queue)
    if depth is None:
        return out
    for _ in range(min(depth, limit)):
        method, props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            break
        headers = props.headers or {}
        route, origin = _route_of(headers, config, broker)
        attempt = headers.get(H_ATTEMPT, 0)
        out.append(SetAside(delivery_tag=method.delivery_tag, message_id=props.message_id or "(none)", route=route,
                            reason=_reason_of(headers), detail=str(_plain(headers.get(H_DETAIL, ""))),
                            failed_at=_failed_at(headers, props),
                            attempt=attempt if isinstance(attempt, int) else 0, size=len(body),
                            origin_queue=origin, properties=props, body=body))
    return out


def replay_properties(entry: SetAside) -> pika.BasicProperties:
    """The message as its source system sent it, plus how often an operator replayed it."""
    p = entry.properties
    headers = {k: v for k, v in (p.headers or {}).items()
               if k not in (H_ATTEMPT, H_REASON, H_DETAIL, H_FAILED_AT, H_ORIGIN_QUEUE, H_ROUTE)
               and not k.startswith("x-death") and k not in ("x-first-death-exchange", "x-first-death-queue",
                                                              "x-first-death-reason", "x-delivery-count")}
    replayed = (p.headers or {}).get(H_REPLAYED, 0)
    headers[H_REPLAYED] = (replayed if isinstance(replayed, int) else 0) + 1
    return pika.BasicProperties(message_id=p.message_id, delivery_mode=2, headers=headers,
                                content_type=p.content_type, content_encoding=p.content_encoding,
                                correlation_id=p.correlation_id, type=p.type, app_id=p.app_id,
                                timestamp=p.timestamp, priority=p.priority, reply_to=p.reply_to)


def publish_confirmed(ch: BlockingChannel, exchange: str, routing_key: str, body: bytes,
                      props: pika.BasicProperties) -> None:
    """Publish mandatory with a confirm (the channel must be in confirm mode). Raises on refusal."""
    try:
        ch.basic_publish(exchange, routing_key, body, props, mandatory=True)
    except pika.exceptions.UnroutableError as exc:
        raise NoInputError(f"no queue took the message: exchange {exchange!r} routing key {routing_key!r}") from exc
    except pika.exceptions.NackError as exc:
        raise UnavailableError(f"the broker refused the message (exchange {exchange!r})") from exc


OPERATOR_EVENTS = ("replay", "operator")


def record_operator(config: Config, event: str, **fields: Any) -> None:
    """Put an operator action in the node's audit trail. The running daemon holds the log, so it is
    asked to write the record (control socket); when no daemon runs, the log is opened here."""
    if config.audit is None:
        return
    from gateway import control
    from gateway.audit import AuditLog

    fields = {"actor": _actor(), **fields}
    try:
        answer = control.request(config.node.control_socket, "record", event=event, fields=fields)
    except UnavailableError:
        a = config.audit
        with AuditLog.open(a.directory, config.node.id, retention=a.retention, segment_bytes=a.segment_bytes,
                           segment_age=a.segment_age) as log:
            log.record(event, **fields)
            log.commit()
        return
    if not answer.get("ok"):
        raise UnavailableError(f"the daemon did not record the {event}: {answer.get('error', 'no reason given')}")


def _actor() -> str:
    import getpass
    import os

    try:
        return f"{getpass.getuser()}(uid {os.getuid()})"
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def route_source(config: Config, name: str) -> RouteConfig:
    try:
        return config.routes[name]
    except KeyError:
        known = ", ".join(sorted(config.routes)) or "(none)"
        raise NoInputError(f"no route {name!r} in {config.file} (routes: {known})") from None
