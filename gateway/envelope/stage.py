"""The ``seal`` and ``open`` route stages: envelopes on the way out, checks on the way in.

``seal`` (outbound) moves the body, every source header and every AMQP property into the encrypted
inner record and leaves in clear only jgw's own ``x-jgw-*`` hop headers, the envelope content type
and, on ordered routes, ``x-jgw-order``: the HMAC of the ordering header's value (never the value).
``open`` (inbound) runs ``Opener``'s checks and restores the message exactly; any refusal becomes a
``Refusal`` whose reason is the envelope reason code, so the relay quarantines the original bytes.

Header names are whatever the AMQP client hands over: text, or bytes when a name is not UTF-8.
``seal`` carries every source header inside, whatever its name or value type, or refuses that one
message (``unsealable``: a value the inner record cannot carry exactly, nesting or item counts over
the receiver's limits). ``open`` restores the inner headers exactly and takes from the clear AMQP
headers only jgw's own ``x-jgw-*`` hop headers (text names); any other clear header, of any name or
type, is not part of the sealed message and is not passed on.

Config tables (read strictly; errors name ``routes.NAME.seal.KEY``), see docs/envelope.md:

    [routes.NAME.seal]  suite, recipients, batch_max, epoch_messages, epoch_seconds,
                        order_key_secret, route_name, header_correlation_id, pack, pack_bytes
    [routes.NAME.open]  senders, suites, routes, replay_window, clock_skew

Both stages take the keyring from ``node.services["keyring"]`` (a zero-argument callable returning
the current ``Keyring``) once per batch, and the time from ``node.clock()``.

Security: reads hostile bytes (open) and the order-key secret file (mode 0600 or stricter, read
once at build time). Refusal details carry ids, key ids and sizes, never contents.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.config import NAME_RE, RouteConfig
from gateway.envelope import inner, packed
from gateway.envelope.codec import CONTENT_TYPE, DEFAULT_LIMITS
from gateway.envelope.errors import EnvelopeError
from gateway.envelope.opener import Opener, OpenPolicy
from gateway.envelope.sealer import MAX_EPOCH_MESSAGES, Sealer, SealItem, order_key_hmac
from gateway.errors import ConfigError, PermissionError_
from gateway.files.settings import H_FILE
from gateway.ids import new_message_id
from gateway.keyring import SUITE_DEFAULT, SUITE_NAMES, Keyring, KeyringError
from gateway.message import JGW_HEADER_PREFIX, Message
from gateway.options import Options
from gateway.route.stages import Made, NodeContext, Refusal, StageResult

#: Clear header carrying the order key HMAC (hex) on ordered routes.
H_ORDER = "x-jgw-order"
#: Clear header of a packed envelope: how many messages it carries (docs/envelope.md §14).
H_PACKED = "x-jgw-packed"
DEFAULT_PACK_MAX = 1  # off unless the route says so: a receiver must run a jgw that opens packed envelopes
DEFAULT_PACK_BYTES = 256 * 1024
_PACK_ENTRY_OVERHEAD = 96  # id, key and record framing of one entry, roughly (a budget, not a limit)
KEYRING_SERVICE = "keyring"
MIN_ORDER_SECRET_BYTES = 32

KeyringProvider = Callable[[], Keyring]


def is_hop_header(name: object) -> bool:
    """A header jgw itself sets (``x-jgw-*``): its name is text. A header name may be anything the
    client library hands over (bytes when it is not UTF-8): such a name is never a hop header."""
    return isinstance(name, str) and name.startswith(JGW_HEADER_PREFIX)


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
                 ordering_header: str | None, order_secret: bytes | None, *, pack_max: int = 1,
                 pack_bytes: int = DEFAULT_PACK_BYTES) -> None:
        self.sealer = sealer
        self.keyring = keyring
        self.clock = clock
        self.batch_max = batch_max
        self.ordering_header = ordering_header
        self.order_secret = order_secret
        self.pack_max = pack_max
        self.pack_bytes = pack_bytes

    def regroup(self, batch: Sequence[Message]) -> list[Made]:
        """Seal the batch, packing up to ``pack_max`` consecutive messages (``pack_bytes`` at most)
        into one envelope (docs/envelope.md §14). A message alone in its pack is sealed as before, so
        a quiet route sends plain envelopes and no message waits for company."""
        if self.pack_max <= 1:
            return [Made(r, (i,)) for i, r in enumerate(self.process(batch))]
        out: list[Made] = []
        packs: list[list[tuple[int, SealItem, bytes]]] = []
        size = 0
        for i, m in enumerate(batch):
            item = self._item(m, packed=True)
            if isinstance(item, Refusal):
                out.append(Made(item, (i,)))
                continue
            if H_FILE in (m.headers or {}):
                # a file's frame travels alone: the receiving file route orders frames by the file id,
                # which only a plain envelope carries in clear (a pack would arrive without one)
                packs.append([(i, item, b"")])
                size = self.pack_bytes + 1  # the next message starts a new pack
                continue
            try:
                entry = packed.encode_entry(packed.Entry(
                    item.message_id, item.order_key.hex() if item.order_key is not None else None, item.contents))
            except EnvelopeError as exc:
                out.append(Made(Refusal(exc.reason, exc.detail), (i,)))
                continue
            if not packs or len(packs[-1]) >= self.pack_max or size + len(entry) > self.pack_bytes:
                packs.append([])
                size = 0
            packs[-1].append((i, item, entry))
            size += len(entry)
        units: list[tuple[list[tuple[int, SealItem, bytes]], SealItem | Refusal]] = []
        for pack in packs:
            if len(pack) == 1:
                units.append((pack, self._item(batch[pack[0][0]])))  # alone: a plain envelope, hop headers clear
            else:
                units.append((pack, SealItem(new_message_id(), inner.Contents(
                    body=packed.assemble([entry for _, _, entry in pack]), content_type=packed.PACKED_TYPE),
                    pack[0][1].order_key)))
        keyring = self.keyring()
        now = self.clock()
        sealable = [u for u in units if isinstance(u[1], SealItem)]
        results: list[bytes | EnvelopeError] = []
        for start in range(0, len(sealable), self.batch_max):
            results += self.sealer.seal([u[1] for u in sealable[start:start + self.batch_max]],  # type: ignore[misc]
                                        keyring, now)
        sealed = iter(results)
        for pack, unit in units:
            parents = tuple(i for i, _, _ in pack)
            if isinstance(unit, Refusal):
                out.append(Made(unit, parents))
                continue
            result = next(sealed)
            if isinstance(result, EnvelopeError):
                out.append(Made(Refusal(result.reason, result.detail), parents))
            elif len(pack) == 1:
                out.append(Made(self._sealed(batch[parents[0]], unit, result), parents))
            else:
                first = batch[parents[0]]
                order_hex = unit.order_key.hex() if unit.order_key is not None else None
                clear: dict[Any, Any] = {H_PACKED: len(pack)}
                if order_hex is not None:
                    clear[H_ORDER] = order_hex
                out.append(Made(Message(message_id=unit.message_id, route=first.route, body=result, headers=clear,
                                        content_type=CONTENT_TYPE, order_key=order_hex,
                                        received_at=first.received_at), parents))
        return sorted(out, key=lambda made: made.parents[0])

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
            out.append(self._sealed(message, item, result))
        return out

    def _sealed(self, message: Message, item: SealItem, envelope: bytes) -> Message:
        """The message as it leaves: the envelope, jgw's hop headers in clear, the order key's HMAC."""
        clear = {k: v for k, v in (message.headers or {}).items()
                 if is_hop_header(k) and k not in (self.ordering_header, H_ORDER)}
        order_hex = item.order_key.hex() if item.order_key is not None else None
        if order_hex is not None:
            clear[H_ORDER] = order_hex
        return message.replace(body=envelope, headers=clear, content_type=CONTENT_TYPE, content_encoding=None,
                               correlation_id=None, type=None, app_id=None, timestamp=None, order_key=order_hex)

    def _item(self, m: Message, *, packed: bool = False) -> SealItem | Refusal:
        """What the sealer takes for one message. Inside a packed payload jgw's own hop headers
        (send time, replays) travel sealed with the message, as there is no clear place for them."""
        source_headers = {k: v for k, v in (m.headers or {}).items()
                          if k != H_ORDER and (packed or not is_hop_header(k))}
        order_key = None
        if self.ordering_header is not None and self.order_secret is not None:
            value = (m.headers or {}).get(self.ordering_header, m.order_key)
            if isinstance(value, inner.Typed):
                value = value.value
            if value is not None:
                if isinstance(value, str):
                    raw = value.encode("utf-8", "surrogatepass")
                elif isinstance(value, bytes):
                    raw = bytes(value)
                elif isinstance(value, int) and not isinstance(value, bool):
                    raw = str(int(value)).encode("ascii")
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
        """One opened message per envelope (a packed envelope is refused here: use ``regroup``)."""
        out: list[StageResult] = []
        for made in self.regroup(batch):
            if out and made.parents[0] == len(out) - 1:
                out[-1] = Refusal("envelope-malformed", "a packed envelope where one message was expected")
            else:
                out.append(made.result)
        return out

    def regroup(self, batch: Sequence[Message]) -> list[Made]:
        """Open each envelope: one message, or every message of a packed envelope (§14), each on its
        own from here (policy, dedup, ordering, quarantine). An envelope that fails a check is
        refused whole."""
        keyring = self.keyring()
        now = self.clock()
        out: list[Made] = []
        for i, m in enumerate(batch):
            try:
                opened = self.opener.open(m.body, keyring, now, expected_message_id=m.message_id)
            except EnvelopeError as exc:
                out.append(Made(Refusal(exc.reason, exc.detail), (i,)))
                continue
            c = opened.contents
            clear = {k: v for k, v in (m.headers or {}).items()  # the clear headers: hostile, any name type
                     if is_hop_header(k) and k not in (H_ORDER, H_PACKED)}
            if opened.envelope.header.content_type == packed.PACKED_TYPE:  # signed: packing is declared
                try:
                    entries = packed.decode(c.body)
                except EnvelopeError as exc:
                    out.append(Made(Refusal(exc.reason, exc.detail), (i,)))
                    continue
                for e in entries:
                    out.append(Made(self._restored(m, e.message_id, e.contents, clear, e.order_key), (i,)))
                continue
            order_key = opened.envelope.header.order_key
            out.append(Made(self._restored(m, opened.envelope.header.message_id, c, clear,
                                           order_key.hex() if order_key is not None else m.order_key), (i,)))
        return out

    @staticmethod
    def _restored(m: Message, message_id: str, c: inner.Contents, clear: Mapping[Any, Any],
                  order_key: str | None) -> Message:
        headers: dict[Any, Any] = dict(c.headers)
        for k, v in clear.items():
            if k not in headers:
                headers[k] = v
        return m.replace(message_id=message_id, body=c.body, headers=headers, content_type=c.content_type,
                         content_encoding=c.content_encoding, correlation_id=c.correlation_id, type=c.type,
                         app_id=c.app_id, timestamp=c.timestamp, order_key=order_key)


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
    pack_max = options.int("pack", DEFAULT_PACK_MAX, min=1, max=packed.MAX_COUNT)
    pack_bytes = options.size("pack_bytes", DEFAULT_PACK_BYTES)
    if pack_bytes > route.max_size:
        raise options.error("pack_bytes", f"{pack_bytes} bytes is over the route's max_size ({route.max_size}): "
                                          "a packed envelope must fit what a receiving route accepts")
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
    return SealStage(sealer, provider, node.clock, batch_max, route.ordering_header, secret, pack_max=pack_max,
                     pack_bytes=pack_bytes)


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
    if route.ordering_header is not None and route.ordering_header not in (H_ORDER, H_FILE):
        # the business header travels sealed: in clear an inbound route only sees the HMAC (or, on a
        # file route, the file id: a keyed hash the sender made, see gateway.files.source)
        raise ConfigError(options.file, f"routes.{route.name}.ordering.header",
                          f"an inbound (open) route can only order on {H_ORDER!r}, the HMAC of the sender's "
                          f"order key that travels in clear; {route.ordering_header!r} is inside the envelope")
    provider = _keyring_provider(options, node)
    policy = OpenPolicy(senders=frozenset(senders), suites=frozenset(suites_raw), routes=frozenset(routes),
                        replay_window=replay_window, clock_skew=clock_skew)
    return OpenStage(Opener(policy), provider, node.clock)
