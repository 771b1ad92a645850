"""Blocking broker access for the operator CLI (pika's BlockingConnection): one session, a few verbs.

NAME
    blocking - connect, queue depth, get without ack, ack one, return one, publish with a confirm

DESCRIPTION
    ``session(broker)`` opens one connection (trying the broker's URLs in turn) and one channel;
    ``Session.get`` takes a message without acknowledging it: until ``ack`` it is the broker's, and
    whatever is not acknowledged goes back to its queue when the channel closes (``release``
    returns it explicitly). ``Session.publish_confirmed`` publishes mandatory on a second channel in
    confirm mode and raises unless the broker routed and confirmed it.

    The daemon never uses this module; ``jgw send``, ``status``, ``dlq`` and ``quarantine`` do.
    pika's exceptions are translated here into ``UnavailableError`` / ``NoInputError``.

Security: talks to the configured brokers with the node's credentials; the password is read from its
source (``gateway.config.with_password``) and never shown; URLs only through ``redact_url``.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError, ChannelClosedByBroker

from gateway.config import BrokerConfig, with_password
from gateway.errors import NoInputError, UnavailableError
from gateway.options import redact_url
from gateway.pki.tls import describe_failure

SslFactory = Callable[[BrokerConfig], ssl.SSLContext | None]

#: AMQP basic properties, for the commands that build a message (they may not import pika).
Properties = pika.BasicProperties


@dataclass
class Got:
    """One message taken with basic.get and not acknowledged."""

    delivery_tag: int
    properties: pika.BasicProperties
    body: bytes = field(repr=False)
    redelivered: bool


def url_parameters(broker: BrokerConfig, url: str) -> pika.URLParameters:
    """pika parameters for ``url``, with the user from the URL and the password from the URL or
    from the broker's password source (already read, ``broker.password``)."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else broker.password
    host = parts.netloc.rsplit("@", 1)[-1]
    params = pika.URLParameters(urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)))
    if user is not None:
        params.credentials = pika.PlainCredentials(user, password or "")
    return params


def connect(broker: BrokerConfig, ssl_factory: SslFactory | None = None, timeout: float = 10.0) -> BlockingConnection:
    """Open a blocking connection, trying the broker's URLs in turn."""
    broker = with_password(broker)
    errors = []
    for url in broker.urls:
        params = url_parameters(broker, url)
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


class Session:
    """One connection and channel to one broker, for one command."""

    def __init__(self, broker: BrokerConfig, conn: BlockingConnection) -> None:
        self.broker = broker
        self.conn = conn
        self.ch: BlockingChannel = conn.channel()
        self._pub: BlockingChannel | None = None
        #: Highest delivery tag taken with get, and how many were acknowledged (for give_back).
        self.last_tag = 0
        self.acked = 0

    @property
    def server_version(self) -> str:
        props = getattr(self.conn._impl, "server_properties", None) or {}
        value = props.get("version", b"")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def _reopen(self) -> None:
        if self.ch.is_closed:
            self.ch = self.conn.channel()

    def depth(self, queue: str) -> int | None:
        """Messages ready in ``queue``, or None when it does not exist."""
        try:
            frame = self.ch.queue_declare(queue, passive=True)
        except ChannelClosedByBroker:
            self._reopen()
            return None
        except (AMQPError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return int(frame.method.message_count)

    def get(self, queue: str) -> Got | None:
        """The next message of ``queue``, not acknowledged; None when none is ready."""
        try:
            method, props, body = self.ch.basic_get(queue, auto_ack=False)
        except (AMQPError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if method is None:
            return None
        self.last_tag = max(self.last_tag, int(method.delivery_tag))
        return Got(delivery_tag=method.delivery_tag, properties=props, body=body,
                   redelivered=bool(method.redelivered))

    def ack(self, delivery_tag: int) -> None:
        """Acknowledge exactly this one message (never ``multiple``)."""
        try:
            self.ch.basic_ack(delivery_tag, multiple=False)
            self.conn.process_data_events(0)
            self.acked += 1
        except (AMQPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def release(self, delivery_tag: int) -> None:
        """Give this one message back to its queue (nack with requeue)."""
        try:
            self.ch.basic_nack(delivery_tag, multiple=False, requeue=True)
        except (AMQPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def give_back(self, queue: str, expected: int, timeout: float = 5.0) -> int | None:
        """Return every message taken and not acknowledged (one nack with requeue), then wait until
        the queue shows at least ``expected`` ready messages again, so the next command sees what
        this one saw (a quorum queue applies returns a moment after the nack). The depth now."""
        import time

        if self.last_tag:
            try:
                self.ch.basic_nack(self.last_tag, multiple=True, requeue=True)
            except (AMQPError, OSError) as exc:
                raise self._unavailable(exc) from exc
            self.last_tag = 0
        deadline = time.monotonic() + timeout
        while True:
            depth = self.depth(queue)
            if depth is None or depth >= expected or time.monotonic() > deadline:
                return depth
            self.conn.sleep(0.05)

    def publish_confirmed(self, exchange: str, routing_key: str, body: bytes, props: pika.BasicProperties) -> None:
        """Publish mandatory and wait for the broker's confirm. Raises when it was not routed or refused."""
        try:
            if self._pub is None or self._pub.is_closed:
                self._pub = self.conn.channel()
                self._pub.confirm_delivery()
            self._pub.basic_publish(exchange, routing_key, body, props, mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            raise NoInputError(f"no queue took the message: exchange {exchange!r} routing key "
                               f"{routing_key!r}") from exc
        except pika.exceptions.NackError as exc:
            raise UnavailableError(f"the broker refused the message (exchange {exchange!r})") from exc
        except (AMQPError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: BaseException) -> UnavailableError:
        return UnavailableError(f"broker {self.broker.name!r}: {type(exc).__name__} {exc}".strip())

    def close(self) -> None:
        with contextlib.suppress(AMQPError, OSError):
            self.conn.close()


@contextlib.contextmanager
def session(broker: BrokerConfig, ssl_factory: SslFactory | None = None) -> Iterator[Session]:
    s = Session(broker, connect(broker, ssl_factory))
    try:
        yield s
    finally:
        s.close()


def plain(value: Any) -> Any:
    """A header value as JSON can show it: bytes as text, tables and arrays rebuilt."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def check_login(host: str, port: int, ctx: ssl.SSLContext, *, server_hostname: str | None = None,
                vhost: str = "/", timeout: float = 10.0) -> None:
    """Connect with ``ctx`` and log in with EXTERNAL, then close. Raises ``UnavailableError`` with one
    line saying why the broker (or we) refused."""
    params = pika.ConnectionParameters(
        host=host, port=port, virtual_host=vhost, ssl_options=pika.SSLOptions(ctx, server_hostname or host),
        credentials=pika.credentials.ExternalCredentials(), connection_attempts=1, socket_timeout=timeout,
        stack_timeout=timeout + 5, blocked_connection_timeout=timeout, heartbeat=30,
        client_properties={"connection_name": "jgw certificate check"})
    try:
        conn = pika.BlockingConnection(params)
    except (OSError, pika.exceptions.AMQPError) as exc:
        raise UnavailableError(f"{host}:{port}: {describe_failure(exc)}") from exc
    with contextlib.suppress(pika.exceptions.AMQPError):
        conn.close()
