"""Why an envelope was refused: one exception type; its codes are the envelope rows of gateway.reasons.

Each reason code becomes a quarantine reason (a metric label, so the set is fixed) and, in
``jgw envelope``, an exit status that says which check failed.

Security: pure definitions. ``detail`` is shown to operators and logged: ids, offsets, sizes and
key ids only, never payload bytes or header values from inside the envelope.
"""

from __future__ import annotations

from gateway.errors import DataError
from gateway.reasons import TABLE

#: reason code -> (what it means, ``jgw envelope`` exit status), from the one table in gateway.reasons.
REASONS: dict[str, tuple[str, int]] = {r.code: (r.text, r.exit_code) for r in TABLE if r.origin == "envelope"}


class EnvelopeError(DataError):
    """An envelope (or a message to seal) was refused. ``reason`` is a code from ``REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown envelope reason {reason!r}")
        self.reason = reason
        self.detail = detail
        self.exit_code = REASONS[reason][1]
        super().__init__(f"{reason}: {detail}")
