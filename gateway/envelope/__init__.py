"""The sealed envelope: every message signed and encrypted end to end, verifiable alone.

Sans-I/O, in layers (docs/envelope.md is the byte-level spec):

* ``codec``   bytes <-> frozen ``Envelope``/``Header``; limits on hostile input; no crypto.
* ``inner``   the encrypted inner record: body and every source header/property, restored exactly.
* ``merkle``  batch hash trees (RFC 9162): one signature per batch, a proof path per message.
* ``suites``  the named suites (``default``, ``pq-hybrid``) and their signature primitives.
* ``sealer``  ``Sealer``: epoch data keys, per-message keys, batch signing.
* ``opener``  ``Opener``: the fixed order of checks, verify before decrypt, verified-root and
              epoch-key caches.
* ``stage``   the ``seal``/``open`` route stages (``gateway.route.stages.STAGE_KINDS``).

Callers pass the clock (``now``) and the ``gateway.keyring.Keyring``; nothing here reads a clock,
a file or a socket. Every refusal is an ``EnvelopeError`` whose ``reason`` is a fixed code.

Security: reads hostile bytes (``codec``, ``inner``, ``opener``) and uses private keys handed in
through the Keyring. Logs nothing.
"""

from gateway.envelope.codec import CONTENT_TYPE, DEFAULT_LIMITS, Envelope, Header, Limits, parse
from gateway.envelope.errors import REASONS, EnvelopeError
from gateway.envelope.inner import Contents
from gateway.envelope.opener import Opened, Opener, OpenPolicy, Verified
from gateway.envelope.sealer import Sealer, SealItem, order_key_hmac

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LIMITS",
    "REASONS",
    "Contents",
    "Envelope",
    "EnvelopeError",
    "Header",
    "Limits",
    "OpenPolicy",
    "Opened",
    "Opener",
    "SealItem",
    "Sealer",
    "Verified",
    "order_key_hmac",
    "parse",
]
