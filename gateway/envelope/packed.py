"""The packed content: several messages in one sealed envelope (docs/envelope.md §14).

Sealing one envelope per message makes the broker carry every message twice between sites; on the
inter-site hop the seal stage packs up to ``pack_max`` messages (each with its own id, ordering
key and inner record: body, headers and properties exactly) into one *packed* payload, and seals
that as one envelope. The envelope stays verifiable alone; the receiving open stage unpacks it
and every inner message goes on by itself (policy, dedup, ordering, quarantine per message).

    packed = magic "JGWPK1" | count u16 (1..MAX_COUNT) | entry{count}
    entry  = id_len u16 | id (UTF-8, 1..255 bytes)
           | key_len u16 | key (ASCII hex of the order-key HMAC; key_len 0 = none)
           | rec_len u32 | record (an inner record, gateway.envelope.inner, with a zero salt)

Everything is big-endian; nothing may follow the last entry. The payload as a whole is what the
envelope encrypts (its inner record's body, content type ``PACKED_TYPE``), so the per-record
salt is not needed and is all zeros.

Security: decodes bytes that were authenticated (signature, AEAD, digest) before we get here, but
treats them as hostile: bounded counts and sizes, strict UTF-8 and hex, every record decoded with
the inner-record limits. A malformed packed payload is refused whole (``envelope-malformed``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.envelope import inner
from gateway.envelope.codec import DEFAULT_LIMITS, Limits, malformed
from gateway.envelope.errors import EnvelopeError

MAGIC = b"JGWPK1"
#: Content type of an envelope whose inner body is a packed payload.
PACKED_TYPE = "application/vnd.jgw.packed.v1"
MAX_COUNT = 1024
ZERO_SALT = bytes(inner.SALT_BYTES)

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEX = re.compile(rb"^[0-9a-f]*$")


@dataclass(frozen=True, slots=True)
class Entry:
    message_id: str
    order_key: str | None
    contents: inner.Contents


def encode(entries: Sequence[Entry], limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Raises ``EnvelopeError('unsealable')`` for an entry the format cannot carry."""
    return assemble([encode_entry(e, limits) for e in entries])


def encode_entry(e: Entry, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """One entry's bytes (so a message the format cannot carry is refused alone, before packing)."""
    try:
        mid = e.message_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EnvelopeError("unsealable", "message id is not valid text") from exc
    if not 1 <= len(mid) <= 255:
        raise EnvelopeError("unsealable", f"message id of {len(mid)} bytes (1..255)")
    key = (e.order_key or "").encode("ascii")
    record = inner.encode(e.contents, ZERO_SALT, limits)
    return _U16.pack(len(mid)) + mid + _U16.pack(len(key)) + key + _U32.pack(len(record)) + record


def assemble(entries: Sequence[bytes]) -> bytes:
    """The packed payload of already encoded entries, in order."""
    if not 1 <= len(entries) <= MAX_COUNT:
        raise ValueError(f"a packed payload holds 1..{MAX_COUNT} messages, not {len(entries)}")
    return MAGIC + _U16.pack(len(entries)) + b"".join(entries)


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Entry]:
    if not data.startswith(MAGIC):
        raise malformed("packed payload: bad magic")
    pos = len(MAGIC)
    view = memoryview(data)

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if n > len(data) - pos:
            raise malformed(f"packed payload: truncated in {what}")
        chunk = view[pos:pos + n]
        pos += n
        return chunk

    (count,) = _U16.unpack(take(2, "count"))
    if not 1 <= count <= MAX_COUNT:
        raise malformed(f"packed payload: count {count} outside 1..{MAX_COUNT}")
    entries: list[Entry] = []
    ids: set[str] = set()
    for n in range(count):
        (id_len,) = _U16.unpack(take(2, "id length"))
        if not 1 <= id_len <= 255:
            raise malformed(f"packed payload: entry {n}: id length {id_len}")
        try:
            mid = bytes(take(id_len, "id")).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise malformed(f"packed payload: entry {n}: id is not UTF-8") from exc
        if mid in ids:
            raise malformed(f"packed payload: entry {n}: id repeats an earlier entry")
        ids.add(mid)
        (key_len,) = _U16.unpack(take(2, "key length"))
        key_raw = bytes(take(key_len, "key"))
        if key_len > 128 or not _HEX.match(key_raw):
            raise malformed(f"packed payload: entry {n}: order key is not lower-case hex")
        (rec_len,) = _U32.unpack(take(4, "record length"))
        record = bytes(take(rec_len, "record"))
        if not record.startswith(ZERO_SALT):
            raise malformed(f"packed payload: entry {n}: record salt is not zero")
        contents = inner.decode(record, limits)
        entries.append(Entry(mid, key_raw.decode("ascii") or None, contents))
    if pos != len(data):
        raise malformed("packed payload: bytes after the last entry")
    return entries
