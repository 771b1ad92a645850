"""Why an envelope was refused: one exception type, one table of reason codes.

Each reason code becomes a quarantine reason (a metric label, so the set is fixed) and, in
``jgw envelope``, an exit status that says which check failed.

Security: pure definitions. ``detail`` is shown to operators and logged: ids, offsets, sizes and
key ids only, never payload bytes or header values from inside the envelope.
"""

from __future__ import annotations

import os

from gateway.errors import DataError

#: reason code -> (what it means, ``jgw envelope`` exit status). Remote faults first, then ours.
REASONS: dict[str, tuple[str, int]] = {
    "envelope-malformed": ("framing, header or inner record does not parse, or breaks a size limit",
                           os.EX_DATAERR),
    "envelope-version": ("not a version this node reads", os.EX_DATAERR),
    "suite-refused": ("suite unknown, or not allowed on this route (no downgrade)", 19),
    "signature-invalid": ("a signature does not verify over the signed batch root", 10),
    "batch-proof-invalid": ("the message's proof path does not lead to the signed batch root", 11),
    "certificate-untrusted": ("signing certificate unknown for the sender, or not trusted at created-at "
                              "(unknown CA, expired, revoked, wrong purpose)", 12),
    "sender-unauthorised": ("the signed sender may not send on this route", 13),
    "route-mismatch": ("the signed route name is not one this route accepts", 14),
    "not-recipient": ("this node is not a recipient, or holds no key for the listed key id", 15),
    "decrypt-failed": ("key block entry or ciphertext does not decrypt", 16),
    "digest-mismatch": ("decrypted contents do not match the signed payload digest", 17),
    "outside-window": ("created-at outside the replay window (with clock-skew allowance)", 18),
    "id-mismatch": ("the AMQP message id differs from the signed message id", 20),
    "unsealable": ("the source message cannot be represented in an envelope (id, header type, size)",
                   os.EX_DATAERR),
}


class EnvelopeError(DataError):
    """An envelope (or a message to seal) was refused. ``reason`` is a code from ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown envelope reason {reason!r}")
        self.reason = reason
        self.detail = detail
        self.exit_code = REASONS[reason][1]
        super().__init__(f"{reason}: {detail}")
