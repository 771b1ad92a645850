"""The ``seal`` and ``open`` route stages: envelopes on the way out, checks on the way in.

``seal`` (outbound) moves the body, every source header and every AMQP property into the encrypted
inner record and leaves in clear only jgw's own ``x-jgw-*`` hop headers, the envelope content type
and, on ordered routes, ``x-jgw-order``: the HMAC of the ordering header's value (never the value).
``open`` (inbound) runs ``Opener``'s checks and restores the message exactly; any refusal becomes a
``Refusal`` whose reason is the envelope reason code, so the relay quarantines the original bytes.

Config tables (read strictly; errors name ``routes.NAME.seal.KEY``), see docs/envelope.md:

    [routes.NAME.seal]  suite, recipients, batch_max, epoch_messages, epoch_seconds,
                        order_key_secret, route_name, header_correlation_id
    [routes.NAME.open]  senders, suites, routes, replay_window, clock_skew

Both stages take the keyring from ``node.services["keyring"]`` (a zero-argument callable returning
the current ``Keyring``) once per batch, and the time from ``node.clock()``.

Security: reads hostile bytes (open) and the order-key secret file (mode 0600 or stricter, read
once at build time). Refusal details carry ids, key ids and sizes, never contents.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.config import NAME_RE, Options, RouteConfig
from gateway.envelope import inner
from gateway.envelope.codec import CONTENT_TYPE, DEFAULT_LIMITS
from gateway.envelope.errors import EnvelopeError
from gateway.envelope.opener import Opener, OpenPolicy
from gateway.envelope.sealer import MAX_EPOCH_MESSAGES, Sealer, SealItem, order_key_hmac
from gateway.errors import ConfigError, PermissionError_
from gateway.keyring import SUITE_DEFAULT, SUITE_NAMES, Keyring, KeyringError
from gateway.message import JGW_HEADER_PREFIX, Message
from gateway.stage import NodeContext, Refusal, StageResult

#: Clear header carrying the order key HMAC (hex) on ordered routes.
H_ORDER = "x-jgw-order"
KEYRING_SERVICE = "keyring"
MIN_ORDER_SECRET_BYTES = 32

KeyringProvider = Callable[[], Keyring]


def _keyring_provider(options: Options, node: NodeContext) -> KeyringProvider:
    provider = node.services.get(KEYRING_SERVICE)
    if not callable(provider):
        raise options.error("", f"node {node.node_id} has no envelope keys loaded (service "
                                f"{KEYRING_SERVICE!r} missing); check the certificates in {node.certs_dir}")
    checked: KeyringProvider = provider
    return checked


def _node_ids(options: Options, name: str, default: Any = None) -> list[str]:
    values = options.list(name) if default is None else options.list(name, default)
    if not values:
        raise options.error(name, "list at least one node id")
    for i, value in enumerate(values):
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise options.error(f"{name}[{i}]",
                                f"expected a node id matching {NAME_RE.pattern}, got {value!r}")
    if len(set(values)) != len(values):
        raise options.error(name, "a node id is listed twice")
    return list(values)


def read_order_secret(options: Options, name: str) -> bytes:
    """The HMAC key for order keys: a file of at least 32 bytes, mode 0600 or stricter."""
    path = Path(options.path_value(name))
    try:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise PermissionError_(f"{options.file}: {options.key(name)}: {path} has mode "
                                   f"{stat.S_IMODE(st.st_mode):04o}; a secret must be 0600 or stricter")
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise options.error(name, f"{path}: file not found") from exc
    except OSError as exc:
        raise options.error(name, f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) < MIN_ORDER_SECRET_BYTES:
        raise options.error(name, f"{path}: a secret must hold at least {MIN_ORDER_SECRET_BYTES} bytes")
    return data


class SealStage:
    """Outbound: sign and encrypt each message for the route's recipients."""

    name = "seal"
    blocking = True

    def __init__(self, sealer: Sealer, keyring: KeyringProvider, clock: Callable[[], float], batch_max: int,
                 ordering_header: str | None, order_secret: bytes | None) -> None:
        self.sealer = sealer
        self.keyring = keyring
        self.clock = clock
        self.batch_max = batch_max
        self.ordering_header = ordering_header
        self.order_secret = order_secret

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        keyring = self.keyring()
        now = self.clock()
        out: list[StageResult] = []
        for start in range(0, len(batch), self.batch_max):
            out += self._seal_chunk(batch[start:start + self.batch_max], keyring, now)
        return out

    def _seal_chunk(self, chunk: Sequence[Message], keyring: Keyring, now: float) -> list[StageResult]:
        items: list[SealItem | Refusal] = [self._item(m) for m in chunk]
        sealable = [i for i in items if isinstance(i, SealItem)]
        sealed = iter(self.sealer.seal(sealable, keyring, now))
        out: list[StageResult] = []
        for message, item in zip(chunk, items, strict=True):
            if isinstance(item, Refusal):
                out.append(item)
                continue
            result = next(sealed)
            if isinstance(result, EnvelopeError):
                out.append(Refusal(result.reason, result.detail))
                continue
            clear = {k: v for k, v in message.headers.items()
                     if k.startswith(JGW_HEADER_PREFIX) and k not in (self.ordering_header, H_ORDER)}
            order_hex = item.order_key.hex() if item.order_key is not None else None
            if order_hex is not None:
                clear[H_ORDER] = order_hex
            out.append(message.replace(body=result, headers=clear, content_type=CONTENT_TYPE,
                                       content_encoding=None, correlation_id=None, type=None, app_id=None,
                                       timestamp=None, order_key=order_hex))
        return out

    def _item(self, m: Message) -> SealItem | Refusal:
        source_headers = {k: v for k, v in m.headers.items() if not k.startswith(JGW_HEADER_PREFIX)}
        order_key = None
        if self.ordering_header is not None and self.order_secret is not None:
            value = m.headers.get(self.ordering_header, m.order_key)
            if value is not None:
                if isinstance(value, str):
                    raw = value.encode("utf-8", "surrogatepass")
                elif isinstance(value, bytes):
                    raw = value
                elif isinstance(value, int) and not isinstance(value, bool):
                    raw = str(value).encode("ascii")
                else:
                    return Refusal("unsealable", f"ordering header holds a {type(value).__name__}, "
                                                 "not text, bytes or an integer")
                order_key = order_key_hmac(self.order_secret, self.sealer.route, raw)
        contents = inner.Contents(body=m.body, headers=source_headers, content_type=m.content_type,
                                  content_encoding=m.content_encoding, correlation_id=m.correlation_id,
                                  type=m.type, app_id=m.app_id, timestamp=m.timestamp)
        return SealItem(m.message_id, contents, order_key)


class OpenStage:
    """Inbound: verify, authorise, decrypt and restore each message, or refuse it with the reason."""

    name = "open"
    blocking = True

    def __init__(self, opener: Opener, keyring: KeyringProvider, clock: Callable[[], float]) -> None:
        self.opener = opener
        self.keyring = keyring
        self.clock = clock

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        keyring = self.keyring()
        now = self.clock()
        out: list[StageResult] = []
        for m in batch:
            try:
                opened = self.opener.open(m.body, keyring, now, expected_message_id=m.message_id)
            except EnvelopeError as exc:
                out.append(Refusal(exc.reason, exc.detail))
                continue
            c = opened.contents
            headers: dict[str, Any] = dict(c.headers)
            for k, v in m.headers.items():
                if k.startswith(JGW_HEADER_PREFIX) and k != H_ORDER and k not in headers:
                    headers[k] = v
            order_key = opened.envelope.header.order_key
            out.append(m.replace(message_id=opened.envelope.header.message_id, body=c.body, headers=headers,
                                 content_type=c.content_type, content_encoding=c.content_encoding,
                                 correlation_id=c.correlation_id, type=c.type, app_id=c.app_id,
                                 timestamp=c.timestamp,
                                 order_key=order_key.hex() if order_key is not None else m.order_key))
        return out


def seal_stage(options: Options, route: RouteConfig, node: NodeContext) -> SealStage:
    """Build the ``seal`` stage from ``[routes.NAME.seal]``."""
    suite = options.str("suite", SUITE_DEFAULT, choices=SUITE_NAMES)
    recipients = _node_ids(options, "recipients")
    if len(recipients) > DEFAULT_LIMITS.max_recipients:
        raise options.error("recipients", f"at most {DEFAULT_LIMITS.max_recipients} recipients")
    batch_max = options.int("batch_max", 64, min=1, max=4096)
    epoch_messages = options.int("epoch_messages", 100_000, min=1, max=MAX_EPOCH_MESSAGES)
    epoch_seconds = options.duration("epoch_seconds", "1h", min=1.0)
    route_name = options.str("route_name", route.name, pattern=NAME_RE)
    header_correlation_id = options.bool("header_correlation_id", True)
    secret = None
    if options.has("order_key_secret"):
        secret = read_order_secret(options, "order_key_secret")
    elif route.ordering_header is not None:
        raise options.error("order_key_secret",
                            f"required: route orders by header {route.ordering_header!r}, and its value "
                            "may only leave sealed as an HMAC under this key")
    options.done()
    provider = _keyring_provider(options, node)
    keyring = provider()
    for i, r in enumerate(recipients):
        try:
            keyring.encryption_key_for(r, suite)
        except KeyringError as exc:
            raise options.error(f"recipients[{i}]", str(exc)) from exc
    if keyring.signing is None:
        raise options.error("", f"node {node.node_id} has no signing key; it cannot seal")
    if suite != SUITE_DEFAULT and keyring.signing.mldsa_private_key is None:
        raise options.error("suite", f"suite {suite} needs an ML-DSA-65 signing key; node {node.node_id} "
                                     "has none")
    sealer = Sealer(suite=suite, route=route_name, recipients=recipients, epoch_messages=epoch_messages,
                    epoch_seconds=epoch_seconds, header_correlation_id=header_correlation_id)
    return SealStage(sealer, provider, node.clock, batch_max, route.ordering_header, secret)


def open_stage(options: Options, route: RouteConfig, node: NodeContext) -> OpenStage:
    """Build the ``open`` stage from ``[routes.NAME.open]``."""
    senders = _node_ids(options, "senders")
    suites_raw = options.list("suites", [SUITE_DEFAULT])
    if not suites_raw:
        raise options.error("suites", "list at least one suite")
    for i, s in enumerate(suites_raw):
        if s not in SUITE_NAMES:
            raise options.error(f"suites[{i}]",
                                f"must be one of {', '.join(map(repr, SUITE_NAMES))}, got {s!r}")
    routes = _node_ids(options, "routes", [route.name])
    default_window = route.dedup_window if route.dedup else 86400.0
    replay_window = options.duration("replay_window", default_window, min=1.0)
    if route.dedup and replay_window > route.dedup_window:
        raise options.error("replay_window", f"{replay_window:.0f}s is longer than the route's dedup_window "
                                             f"({route.dedup_window:.0f}s): a replay older than the dedup "
                                             "memory would be delivered again")
    clock_skew = options.duration("clock_skew", "5m")
    options.done()
    if route.ordering_header is not None and route.ordering_header != H_ORDER:
        # the business header travels sealed: in clear an inbound route only sees the HMAC
        raise ConfigError(options.file, f"routes.{route.name}.ordering.header",
                          f"an inbound (open) route can only order on {H_ORDER!r}, the HMAC of the sender's "
                          f"order key that travels in clear; {route.ordering_header!r} is inside the envelope")
    provider = _keyring_provider(options, node)
    policy = OpenPolicy(senders=frozenset(senders), suites=frozenset(suites_raw), routes=frozenset(routes),
                        replay_window=replay_window, clock_skew=clock_skew)
    return OpenStage(Opener(policy), provider, node.clock)
