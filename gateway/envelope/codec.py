"""Envelope bytes <-> frozen objects: the framing, the canonical signed header, the signature block.

Sans-I/O in the h11 sense: ``parse(data, limits)`` turns bytes into an ``Envelope`` or raises
``EnvelopeError``; ``Envelope.encode()`` and ``Header.encode()`` turn objects into the one canonical
encoding. Nothing here reads a clock, looks up a key or verifies a signature: that is ``opener``.
docs/envelope.md is the normative description of every byte; keep the two in step.

    envelope  = magic "JGWE" | version u8 (=1) | suite u8
                | u32 len | header | u32 len | key block | u32 len | payload      <- signed part
                | u32 len | signature block
    header    = TLV fields, tag u8 | len u16 | value, tags strictly increasing
    key block = count u8 | (u16 len | HPKE enc || AES-256-GCM(epoch key)) * count
    payload   = salt[32] | AES-256-GCM(inner record) with its 16-byte tag
    sig block = tree size u32 | leaf index u32 | root[32] | count u8 | hash[32] * count
                | count u8 | (u16 len | signature) * count

Security: reads hostile bytes. Every length is checked against what is left and against
``Limits`` before anything is sliced; strings must be strict UTF-8 or ASCII names; a trailing byte,
a duplicate or out-of-order field, or an unknown tag is malformed. Never raises anything but
``EnvelopeError`` on bad input (the fuzz test holds it to that).
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass

from gateway.envelope import suites
from gateway.envelope.errors import EnvelopeError
from gateway.envelope.merkle import HASH_BYTES

MAGIC = b"JGWE"
VERSION = 1
PREAMBLE_BYTES = 6  # magic, version, suite
KEY_ID_BYTES = 16
EPOCH_ID_BYTES = 16
DIGEST_BYTES = 32
ORDER_KEY_BYTES = 32
SALT_BYTES = 32
AEAD_TAG_BYTES = 16

#: 9999-12-31T23:59:59.999Z: beyond it a created-at could not become a datetime.
MAX_CREATED_AT_MS = 253402300799999

#: Media type of a sealed message (the clear AMQP content_type).
CONTENT_TYPE = "application/vnd.jgw.envelope"

NODE_ID_RE = re.compile(rb"^[a-z0-9][a-z0-9-]{0,62}\Z")
MESSAGE_ID_RE = re.compile(rb"^[\x20-\x7e]{1,255}\Z")

# Header field tags, in the only order they may appear.
T_MESSAGE_ID = 0x01
T_ROUTE = 0x02
T_SENDER = 0x03
T_CREATED_AT = 0x04
T_RECIPIENTS = 0x05
T_SIGNING_KEY_IDS = 0x06
T_EPOCH_ID = 0x07
T_PAYLOAD_DIGEST = 0x08
T_CONTENT_TYPE = 0x09
T_CORRELATION_ID = 0x0A
T_ORDER_KEY = 0x0B
REQUIRED_TAGS = frozenset(range(T_MESSAGE_ID, T_PAYLOAD_DIGEST + 1))
KNOWN_TAGS = frozenset(range(T_MESSAGE_ID, T_ORDER_KEY + 1))

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits on hostile input, checked before any allocation that depends on them."""

    max_envelope_bytes: int = 129 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_recipients: int = 16
    max_text_bytes: int = 255
    max_proof_hashes: int = 24  # trees of up to 2**24 leaves
    #: inner record (``gateway.envelope.inner``)
    max_inner_headers: int = 1024
    max_inner_depth: int = 8


DEFAULT_LIMITS = Limits()


def malformed(detail: str) -> EnvelopeError:
    return EnvelopeError("envelope-malformed", detail)


@dataclass(frozen=True, slots=True)
class Recipient:
    node_id: str
    key_id: bytes  # 16 bytes, see gateway.keyring.key_id


@dataclass(frozen=True, slots=True)
class Header:
    """The signed header. Everything an auditor may see without a key; never personal data."""

    message_id: str
    route: str
    sender: str
    created_at_ms: int
    recipients: tuple[Recipient, ...]
    signing_key_ids: tuple[bytes, ...]
    epoch_id: bytes
    payload_digest: bytes
    content_type: str | None = None
    correlation_id: str | None = None
    order_key: bytes | None = None

    @property
    def created_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.created_at_ms / 1000, dt.UTC)

    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(r.node_id for r in self.recipients)

    def encode(self) -> bytes:
        """The canonical encoding: the only byte string that decodes to this header."""
        template = HeaderTemplate(self.route, self.sender, self.recipients, self.signing_key_ids,
                                  self.epoch_id)
        return template.encode(self.message_id, self.created_at_ms, self.payload_digest, self.content_type,
                               self.correlation_id, self.order_key)


def _tlv(tag: int, value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"header field {tag} too long")
    return bytes([tag]) + _U16.pack(len(value)) + value


class HeaderTemplate:
    """The header fields an epoch's messages share (route, sender, recipients, signing key ids, epoch
    id), validated and encoded once; ``encode`` adds the per-message fields in canonical order."""

    __slots__ = ("_after_created", "_after_id")

    def __init__(self, route: str, sender: str, recipients: tuple[Recipient, ...],
                 signing_key_ids: tuple[bytes, ...], epoch_id: bytes) -> None:
        self._after_id = (_tlv(T_ROUTE, _ascii_field(route, NODE_ID_RE, "route"))
                          + _tlv(T_SENDER, _ascii_field(sender, NODE_ID_RE, "sender")))
        encoded = bytearray([len(recipients)])
        for r in recipients:
            node = _ascii_field(r.node_id, NODE_ID_RE, "recipient")
            encoded += bytes([len(node)]) + node + _fixed(r.key_id, KEY_ID_BYTES, "recipient key id")
        for kid in signing_key_ids:
            _fixed(kid, KEY_ID_BYTES, "signing key id")
        self._after_created = (_tlv(T_RECIPIENTS, bytes(encoded))
                               + _tlv(T_SIGNING_KEY_IDS,
                                      bytes([len(signing_key_ids)]) + b"".join(signing_key_ids))
                               + _tlv(T_EPOCH_ID, _fixed(epoch_id, EPOCH_ID_BYTES, "epoch id")))

    def encode(self, message_id: str, created_at_ms: int, payload_digest: bytes, content_type: str | None,
               correlation_id: str | None, order_key: bytes | None) -> bytes:
        """Raises ValueError for a value the header grammar cannot carry."""
        if not 0 <= created_at_ms <= MAX_CREATED_AT_MS:
            raise ValueError(f"created-at {created_at_ms} ms is outside 1970..9999")
        out = (_tlv(T_MESSAGE_ID, _ascii_field(message_id, MESSAGE_ID_RE, "message id")) + self._after_id
               + _tlv(T_CREATED_AT, _U64.pack(created_at_ms)) + self._after_created
               + _tlv(T_PAYLOAD_DIGEST, _fixed(payload_digest, DIGEST_BYTES, "payload digest")))
        if content_type is not None:
            out += _tlv(T_CONTENT_TYPE, _text_field(content_type, "content type"))
        if correlation_id is not None:
            out += _tlv(T_CORRELATION_ID, _text_field(correlation_id, "correlation id"))
        if order_key is not None:
            out += _tlv(T_ORDER_KEY, _fixed(order_key, ORDER_KEY_BYTES, "order key"))
        return out


def _ascii_field(value: str, pattern: re.Pattern[bytes], what: str) -> bytes:
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} must be ASCII") from exc
    if not pattern.match(raw):
        raise ValueError(f"{what} must match {pattern.pattern!r}")
    return raw


def _text_field(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"{what} longer than 255 bytes")
    return raw


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return value


@dataclass(frozen=True, slots=True)
class SignatureBlock:
    """Batch proof (tree size, leaf index, root, path) and the signatures over the root."""

    tree_size: int
    leaf_index: int
    root: bytes
    path: tuple[bytes, ...]
    signatures: tuple[bytes, ...]

    def encode(self) -> bytes:
        out = bytearray(_U32.pack(self.tree_size) + _U32.pack(self.leaf_index) + self.root)
        out.append(len(self.path))
        for h in self.path:
            out += h
        out.append(len(self.signatures))
        for sig in self.signatures:
            out += _U16.pack(len(sig)) + sig
        return bytes(out)


def root_signing_input(suite: suites.Suite, tree_size: int, root: bytes) -> bytes:
    """What each signature signs: a context string, the suite, the tree size and the root."""
    return b"jgw-envelope/1 batch-root\x00" + bytes([suite.wire_id]) + _U32.pack(tree_size) + root


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed envelope. ``signed_part`` is the exact byte prefix the batch leaf hashes; ``aad``
    the prefix the payload AEAD authenticates (everything before the payload's length field)."""

    suite: suites.Suite
    header: Header
    key_block: tuple[bytes, ...]
    payload: bytes
    signature_block: SignatureBlock
    signed_part: bytes
    aad: bytes

    def encode(self) -> bytes:
        return finish(self.signed_part, self.signature_block)


def encode_prefix(suite: suites.Suite, header_bytes: bytes, key_block: tuple[bytes, ...]) -> bytes:
    """Everything before the payload's length field: the payload AEAD's associated data."""
    kb = bytearray([len(key_block)])
    for entry in key_block:
        kb += _U16.pack(len(entry)) + entry
    return (MAGIC + bytes([VERSION, suite.wire_id]) + _U32.pack(len(header_bytes)) + header_bytes
            + _U32.pack(len(kb)) + bytes(kb))


def encode_signed_part(prefix: bytes, payload: bytes) -> bytes:
    """The signed part: prefix, then the payload section."""
    return prefix + _U32.pack(len(payload)) + payload


def finish(signed_part: bytes, block: SignatureBlock) -> bytes:
    """A complete envelope: the signed part, then the signature block."""
    sig = block.encode()
    return signed_part + _U32.pack(len(sig)) + sig


def max_signature_block_bytes(suite: suites.Suite, limits: Limits = DEFAULT_LIMITS) -> int:
    sigs = sum(2 + suite.signature_bytes(i) for i in range(len(suite.signatures)))
    return 4 + 4 + 4 + HASH_BYTES + 1 + HASH_BYTES * limits.max_proof_hashes + 1 + sigs


# ----------------------------------------------------------------------------------------------
# Parsing
# Parsing. Written as flat offset arithmetic over one bytes object (no cursor objects, few calls):
# this runs for every message a route opens.

_BH = struct.Struct(">BH")


def _truncated(what: str, pos: int, need: int, have: int) -> EnvelopeError:
    return malformed(f"{what}: truncated at offset {pos} (need {need}, have {max(have, 0)})")


def _section(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A u32-length-prefixed section at ``pos``: its (start, end), checked against ``end``."""
    if pos + 4 > end:
        raise _truncated(f"{what} length", pos, 4, end - pos)
    n = _U32.unpack_from(data, pos)[0]
    start = pos + 4
    if n > end - start:
        raise _truncated(what, start, n, end - start)
    return start, start + n


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse envelope bytes. Raises EnvelopeError (``envelope-malformed``, ``envelope-version``,
    ``suite-refused`` for an unknown suite id); verifies nothing cryptographic, and judges no proof (a
    leaf index at or beyond the tree size parses: the opener refuses it at check 5)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise malformed("not bytes")
    data = bytes(data)
    size = len(data)
    if size > limits.max_envelope_bytes:
        raise malformed(f"{size} bytes is over the limit of {limits.max_envelope_bytes}")
    if size < PREAMBLE_BYTES:
        if MAGIC.startswith(data[:4]):
            raise _truncated("preamble", 0, PREAMBLE_BYTES, size)
        raise malformed("not a jgw envelope (bad magic)")
    if data[:4] != MAGIC:
        raise malformed("not a jgw envelope (bad magic)")
    if data[4] != VERSION:
        raise EnvelopeError("envelope-version", f"version {data[4]}; this node reads version {VERSION}")
    suite = suites.BY_WIRE_ID.get(data[5])
    if suite is None:
        raise EnvelopeError("suite-refused", f"unknown suite id {data[5]}")

    h_start, h_end = _section(data, PREAMBLE_BYTES, size, "header")
    if h_end - h_start > limits.max_header_bytes:
        raise malformed(f"header of {h_end - h_start} bytes is over the limit of {limits.max_header_bytes}")
    header = _parse_header(data, h_start, h_end, limits)
    if len(header.signing_key_ids) != len(suite.signatures):
        raise malformed(f"suite {suite.name} needs {len(suite.signatures)} signing key ids, header has "
                        f"{len(header.signing_key_ids)}")

    k_start, k_end = _section(data, h_end, size, "key block")
    entries = _parse_key_block(data, k_start, k_end, suite, len(header.recipients))
    p_start, p_end = _section(data, k_end, size, "payload")
    if p_end - p_start < SALT_BYTES + AEAD_TAG_BYTES:
        raise malformed(f"payload of {p_end - p_start} bytes is shorter than salt and tag")
    s_start, s_end = _section(data, p_end, size, "signature block")
    if s_end != size:
        raise malformed(f"envelope: {size - s_end} unexpected bytes at offset {s_end}")
    block = _parse_signature_block(data, s_start, s_end, suite, limits)
    return Envelope(suite=suite, header=header, key_block=entries, payload=data[p_start:p_end],
                    signature_block=block, signed_part=data[:p_end], aad=data[:k_end])


def _parse_key_block(data: bytes, pos: int, end: int, suite: suites.Suite,
                     recipients: int) -> tuple[bytes, ...]:
    if pos >= end:
        raise _truncated("key block count", pos, 1, 0)
    count = data[pos]
    if count != recipients:
        raise malformed(f"key block has {count} entries for {recipients} recipients")
    pos += 1
    want = suite.key_entry_bytes
    entries = []
    for i in range(count):
        if pos + 2 > end:
            raise _truncated(f"key block entry {i} length", pos, 2, end - pos)
        n = _U16.unpack_from(data, pos)[0]
        if n != want:
            raise malformed(f"key block entry {i} is {n} bytes; suite {suite.name} uses {want}")
        pos += 2
        if pos + n > end:
            raise _truncated(f"key block entry {i}", pos, n, end - pos)
        entries.append(data[pos:pos + n])
        pos += n
    if pos != end:
        raise malformed(f"key block: {end - pos} unexpected bytes at offset {pos}")
    return tuple(entries)


def _parse_signature_block(data: bytes, pos: int, end: int, suite: suites.Suite,
                           limits: Limits) -> SignatureBlock:
    fixed = 4 + 4 + HASH_BYTES + 1
    if pos + fixed > end:
        raise _truncated("signature block", pos, fixed, end - pos)
    # Tree size and leaf index are any u32 here: whether they make a proof is check 5 (the opener), after
    # the signature over the tree size and root (check 4), as docs/envelope.md section 9 orders them.
    tree_size, leaf_index = _U32.unpack_from(data, pos)[0], _U32.unpack_from(data, pos + 4)[0]
    root = data[pos + 8:pos + 8 + HASH_BYTES]
    n_path = data[pos + 8 + HASH_BYTES]
    if n_path > limits.max_proof_hashes:
        raise malformed(f"proof of {n_path} hashes is over the limit of {limits.max_proof_hashes}")
    pos += fixed
    if pos + HASH_BYTES * n_path + 1 > end:
        raise _truncated("proof path", pos, HASH_BYTES * n_path + 1, end - pos)
    path = tuple(data[p:p + HASH_BYTES] for p in range(pos, pos + HASH_BYTES * n_path, HASH_BYTES))
    pos += HASH_BYTES * n_path
    n_sig = data[pos]
    if n_sig != len(suite.signatures):
        raise malformed(f"{n_sig} signatures; suite {suite.name} has {len(suite.signatures)}")
    pos += 1
    sigs = []
    for i in range(n_sig):
        if pos + 2 > end:
            raise _truncated(f"signature {i} length", pos, 2, end - pos)
        n = _U16.unpack_from(data, pos)[0]
        if n != suite.signature_bytes(i):
            raise malformed(f"signature {i} is {n} bytes; {suite.signatures[i]} uses "
                            f"{suite.signature_bytes(i)}")
        pos += 2
        if pos + n > end:
            raise _truncated(f"signature {i}", pos, n, end - pos)
        sigs.append(data[pos:pos + n])
        pos += n
    if pos != end:
        raise malformed(f"signature block: {end - pos} unexpected bytes at offset {pos}")
    return SignatureBlock(tree_size, leaf_index, root, path, tuple(sigs))


def _parse_header(data: bytes, pos: int, end: int, limits: Limits) -> Header:
    fields: dict[int, bytes] = {}
    last = 0
    while pos < end:
        if pos + 3 > end:
            raise _truncated("header field", pos, 3, end - pos)
        tag, n = _BH.unpack_from(data, pos)
        if tag not in KNOWN_TAGS:
            raise malformed(f"header: unknown field tag {tag}")
        if tag <= last:
            raise malformed(f"header: field {tag} out of order or repeated")
        last = tag
        pos += 3
        if pos + n > end:
            raise _truncated(f"header field {tag}", pos, n, end - pos)
        fields[tag] = data[pos:pos + n]
        pos += n
    if not fields.keys() >= REQUIRED_TAGS:
        missing = sorted(REQUIRED_TAGS - set(fields))
        raise malformed(f"header: required field {missing[0]} missing")

    created = fields[T_CREATED_AT]
    if len(created) != 8:
        raise malformed("header: created-at is not 8 bytes")
    created_at_ms: int = _U64.unpack(created)[0]
    if created_at_ms > MAX_CREATED_AT_MS:
        raise malformed("header: created-at beyond year 9999")
    order_key = fields.get(T_ORDER_KEY)
    return Header(
        message_id=_name(fields[T_MESSAGE_ID], MESSAGE_ID_RE, "message id"),
        route=_name(fields[T_ROUTE], NODE_ID_RE, "route"),
        sender=_name(fields[T_SENDER], NODE_ID_RE, "sender"),
        created_at_ms=created_at_ms,
        recipients=_parse_recipients(fields[T_RECIPIENTS], limits),
        signing_key_ids=_parse_key_ids(fields[T_SIGNING_KEY_IDS]),
        epoch_id=_exact(fields[T_EPOCH_ID], EPOCH_ID_BYTES, "epoch id"),
        payload_digest=_exact(fields[T_PAYLOAD_DIGEST], DIGEST_BYTES, "payload digest"),
        content_type=_text(fields.get(T_CONTENT_TYPE), "content type", limits),
        correlation_id=_text(fields.get(T_CORRELATION_ID), "correlation id", limits),
        order_key=_exact(order_key, ORDER_KEY_BYTES, "order key") if order_key is not None else None,
    )


def _name(raw: bytes, pattern: re.Pattern[bytes], what: str) -> str:
    if not pattern.match(raw):
        raise malformed(f"header: {what} is not a valid name ({len(raw)} bytes)")
    return raw.decode("ascii")


def _exact(raw: bytes, size: int, what: str) -> bytes:
    if len(raw) != size:
        raise malformed(f"header: {what} is {len(raw)} bytes, not {size}")
    return raw


def _text(raw: bytes | None, what: str, limits: Limits) -> str | None:
    if raw is None:
        return None
    if len(raw) > min(255, limits.max_text_bytes):
        raise malformed(f"header: {what} longer than {min(255, limits.max_text_bytes)} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"header: {what} is not UTF-8 (byte {exc.start})") from exc


def _parse_recipients(raw: bytes, limits: Limits) -> tuple[Recipient, ...]:
    end = len(raw)
    count = raw[0] if end else 0
    if count == 0 or count > limits.max_recipients:
        raise malformed(f"header: {count} recipients (1 to {limits.max_recipients} allowed)")
    pos = 1
    out = []
    seen: set[str] = set()
    for i in range(count):
        if pos >= end:
            raise _truncated(f"header recipient {i}", pos, 1, 0)
        n = raw[pos]
        if pos + 1 + n + KEY_ID_BYTES > end:
            raise _truncated(f"header recipient {i}", pos, 1 + n + KEY_ID_BYTES, end - pos)
        node = _name(raw[pos + 1:pos + 1 + n], NODE_ID_RE, f"recipient {i}")
        if node in seen:
            raise malformed(f"header: recipient {node} listed twice")
        seen.add(node)
        pos += 1 + n
        out.append(Recipient(node, raw[pos:pos + KEY_ID_BYTES]))
        pos += KEY_ID_BYTES
    if pos != end:
        raise malformed(f"header recipients: {end - pos} unexpected bytes")
    return tuple(out)


def _parse_key_ids(raw: bytes) -> tuple[bytes, ...]:
    count = raw[0] if raw else 0
    if count == 0:
        raise malformed("header: no signing key id")
    if len(raw) != 1 + KEY_ID_BYTES * count:
        raise malformed(f"header: {count} signing key ids in {len(raw) - 1} bytes")
    return tuple(raw[p:p + KEY_ID_BYTES] for p in range(1, len(raw), KEY_ID_BYTES))
