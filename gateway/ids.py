"""The ids jgw makes itself: 128 random bits written in letters, so no id can hold a number.

NAME
    ids - ``new_message_id()`` for ``jgw send`` and for a message that reaches a route without an id

DESCRIPTION
    An id is ``jgw-`` and four groups of eight lower-case letters joined by hyphens::

        jgw-kqbhtrmc-vdnsgfpj-hcbtmqkv-pfrdgsnb

    The 128 bits come from ``os.urandom`` (uuid4 has 122) and are written four bits a letter in the
    alphabet ``bcdfghjkmnpqrstv`` (sixteen consonants: no vowel, so no word, and no l, o or i to take
    for 1, 0 or 1). The format holds no digit at all, so by any rule (the policy detector, the log
    and audit redaction, a 住民票コード, a phone or 法人番号 pattern) no id jgw makes can look like a
    個人番号: the policy stage never quarantines a clean message for its id, and evidence and logs
    never mask one. (A ``jgw-<uuid hex>`` id held a 12-digit run with a valid check digit about once
    in 830.) Ids are printable ASCII, 39 characters: well inside the envelope's 255.

    ``spell(data)`` writes any bytes in the same alphabet (two letters a byte); the keyed id digests
    of ``gateway.policy.redact`` use it for the same reason.

Security: pure; reads the operating system's random source.
"""

from __future__ import annotations

import os

#: Sixteen letters, one per hex digit 0-f.
ALPHABET = "bcdfghjkmnpqrstv"
PREFIX = "jgw-"
ID_BITS = 128
_GROUP = 8
_FROM_HEX = str.maketrans("0123456789abcdef", ALPHABET)


def spell(data: bytes) -> str:
    """``data`` in ``ALPHABET``, four bits a letter, most significant first: never a digit."""
    return data.hex().translate(_FROM_HEX)


def new_message_id() -> str:
    """A fresh message id: ``jgw-`` + 128 random bits as 4 groups of 8 letters (no digit anywhere)."""
    s = spell(os.urandom(ID_BITS // 8))
    return f"{PREFIX}{s[:8]}-{s[8:16]}-{s[16:24]}-{s[24:]}"


def is_jgw_id(value: str) -> bool:
    """True for an id in the format ``new_message_id`` makes."""
    if not value.startswith(PREFIX):
        return False
    groups = value[len(PREFIX):].split("-")
    return len(groups) == 4 and all(len(g) == _GROUP and not g.strip(ALPHABET) for g in groups)
