"""The 個人番号 policy: a detector over opaque bytes and the ``policy`` stage that applies it.

Security: reads hostile payload bytes; reports byte offsets only, never the digits it found.
"""

from gateway.policy.detector import EncodingError, Scanner, canonical_encoding, find_personal_numbers, scanner

__all__ = ["EncodingError", "Scanner", "canonical_encoding", "find_personal_numbers", "scanner"]
