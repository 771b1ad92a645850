"""Every reason a message is set aside or refused: one table, most severe first.

Like Postfix's ``cleanup_strerror`` table, each code says what happens to the message
(``disposition``), which exit status ``jgw envelope`` and the other verbs give for it, and one line
for the operator. The code is what staff see everywhere: the ``x-jgw-reason`` header, the
``reason`` label of ``jgw_quarantined_messages_total`` / ``jgw_dead_lettered_messages_total`` /
``jgw_retries_total``, the audit trail, ``jgw dlq list`` and ``jgw quarantine list``. Because it is a
metric label the set is closed: a stage, the route book or a command names a code from here, and
``docs/operations.md`` lists exactly these (``tests/ops/test_docs_match_code.py``).

Dispositions:

* ``quarantine``   a security or policy refusal, or input at fault: kept with its original bytes and
                   the reason, never retried (a human decides);
* ``dead-letter``  delivery failed after the retry tiers, or jgw itself failed on it: kept for
                   ``jgw dlq replay`` once the cause is fixed;
* ``retry``        a transient sink failure: the next delayed-retry tier, then ``dead-letter``;
                   for a file source, the file stays where it is and is taken again later;
* ``operator``     a link refused until an operator acts (an SFTP server's host key, jgw's client key,
                   a login): no message or file is at fault and none is set aside; the route stays
                   down, counted, and keeps trying with back-off.

File reasons (``origin`` "file") come from ``gateway.files.errors``' exception classes and the file
route ends; ``digest-mismatch`` is shared with the envelope (a body that does not match the digest
it was announced or signed with).

Security: pure definitions. Operator texts name checks, never content.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum

CODE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


class Disposition(Enum):
    QUARANTINE = "quarantine"
    DEAD_LETTER = "dead-letter"
    RETRY = "retry"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    disposition: Disposition
    exit_code: int
    text: str
    #: where it comes from, for the docs: "envelope", "policy", "route", "sink", "broker", "file"
    origin: str


_Q, _D, _R, _O = Disposition.QUARANTINE, Disposition.DEAD_LETTER, Disposition.RETRY, Disposition.OPERATOR
EX_CANTCREAT = 73  # sysexits: cannot create (user) output file

#: Most severe first: forged or misdirected input (and peers), then policy, then unsafe or malformed
#: input, then delivery, then transient trouble.
TABLE: tuple[Reason, ...] = (
    Reason("signature-invalid", _Q, 10, "a signature does not verify over the signed batch root", "envelope"),
    Reason("batch-proof-invalid", _Q, 11, "the message's proof path does not lead to the signed batch root",
           "envelope"),
    Reason("certificate-untrusted", _Q, 12, "signing certificate unknown for the sender, or not trusted at "
           "created-at (unknown CA, expired, revoked, wrong purpose)", "envelope"),
    Reason("sender-unauthorised", _Q, 13, "the signed sender may not send on this route", "envelope"),
    Reason("route-mismatch", _Q, 14, "the signed route name is not one this route accepts", "envelope"),
    Reason("not-recipient", _Q, 15, "this node is not a recipient, or holds no key for the listed key id",
           "envelope"),
    Reason("decrypt-failed", _Q, 16, "key block entry or ciphertext does not decrypt", "envelope"),
    Reason("digest-mismatch", _Q, 17, "contents do not match the digest they were signed or announced with "
           "(a decrypted envelope payload; a file's or chunk's SHA-256)", "envelope"),
    Reason("outside-window", _Q, 18, "created-at outside the replay window (with clock-skew allowance)",
           "envelope"),
    Reason("suite-refused", _Q, 19, "suite unknown, or not allowed on this route (no downgrade)", "envelope"),
    Reason("id-mismatch", _Q, 20, "the AMQP message id differs from the signed message id", "envelope"),
    Reason("host-key-changed", _O, os.EX_NOPERM, "the SFTP server presented a key other than the one pinned "
           "for it", "file"),
    Reason("host-key-unknown", _O, os.EX_NOPERM, "the known-hosts file holds no key for this SFTP server",
           "file"),
    Reason("auth-refused", _O, os.EX_NOPERM, "the SFTP server did not accept jgw's public key (or offers no "
           "public-key login)", "file"),
    Reason("key-mode", _O, os.EX_NOPERM, "jgw's SFTP client key file is readable by group or others", "file"),
    Reason("key-unreadable", _O, os.EX_CONFIG, "jgw's SFTP client key file is missing or not an unencrypted "
           "private key", "file"),
    Reason("personal-number", _Q, os.EX_DATAERR, "a 個人番号 on a route that must not carry it (in a "
           "message, a file's bytes or a file's name)", "policy"),
    Reason("encoding-undeclared", _Q, os.EX_CONFIG, "the route declares no payload encoding to scan with",
           "policy"),
    Reason("encoding-unknown", _Q, os.EX_CONFIG, "the declared payload encoding is not one jgw can scan",
           "policy"),
    Reason("envelope-malformed", _Q, os.EX_DATAERR, "framing, header or inner record does not parse, or breaks "
           "a size limit", "envelope"),
    Reason("envelope-version", _Q, os.EX_DATAERR, "not an envelope version this node reads", "envelope"),
    Reason("unsealable", _Q, os.EX_DATAERR, "the source message cannot be represented in an envelope (id, "
           "header type, size)", "envelope"),
    Reason("header-invalid", _Q, os.EX_DATAERR, "a header name or value this route cannot carry (not UTF-8 "
           "where text is required, nested too deep, too large)", "route"),
    Reason("name-unsafe", _Q, os.EX_DATAERR, "a file name that is empty, '.', '..', too long, or contains '/' "
           "or NUL", "file"),
    Reason("name-symlink", _Q, os.EX_DATAERR, "a symbolic link where a file was expected (taken only as regular "
           "files; a link may lead out of the directory)", "file"),
    Reason("chunk-malformed", _Q, os.EX_DATAERR, "a file frame (chunk, manifest) does not parse", "file"),
    Reason("chunk-altered", _Q, os.EX_DATAERR, "a chunk's bytes do not match its SHA-256, or its offset, length "
           "or overlap is wrong", "file"),
    Reason("chunk-foreign", _Q, os.EX_DATAERR, "a chunk or manifest belongs to another file id", "file"),
    Reason("chunk-missing", _Q, os.EX_DATAERR, "a chunk is absent (a later index arrived, or the manifest came "
           "early)", "file"),
    Reason("chunk-duplicate", _Q, os.EX_DATAERR, "a chunk index arrived twice with other bytes", "file"),
    Reason("manifest-mismatch", _Q, os.EX_DATAERR, "the manifest disagrees with the chunks (count, size, chunk "
           "size)", "file"),
    Reason("size-mismatch", _Q, os.EX_DATAERR, "the bytes received do not have the announced size", "file"),
    Reason("too-large", _Q, os.EX_DATAERR, "over the route's max_size", "route"),
    Reason("order-key-missing", _Q, os.EX_DATAERR, "ordered route, and the message has no ordering header",
           "route"),
    Reason("stage-error", _D, os.EX_SOFTWARE, "jgw failed on this message (a bug; the log has the exception "
           "class): kept, never lost", "route"),
    Reason("conflict", _D, EX_CANTCREAT, "the sink already holds a different file under this name; it is "
           "never overwritten", "file"),
    Reason("unroutable", _R, os.EX_UNAVAILABLE, "the sink broker had no queue bound for the routing key",
           "sink"),
    Reason("nacked", _R, os.EX_UNAVAILABLE, "the sink broker refused it (internal error, or a queue at its "
           "length limit)", "sink"),
    Reason("disk-full", _R, os.EX_TEMPFAIL, "no space (or quota) left where the file is written", "file"),
    Reason("permission-denied", _R, os.EX_NOPERM, "the directory or file may not be read or written by jgw",
           "file"),
    Reason("io-error", _R, os.EX_TEMPFAIL, "a file read or write failed (local errno, or an SFTP failure status)",
           "file"),
    Reason("unavailable", _R, os.EX_UNAVAILABLE, "the SFTP server cannot be reached, or the connection was lost",
           "file"),
    Reason("protocol-error", _R, os.EX_PROTOCOL, "the SFTP server answered outside the protocol or refused an "
           "operation jgw needs", "file"),
    Reason("file-changed", _R, os.EX_TEMPFAIL, "size, mtime or inode changed while the file was read; it is left "
           "in place for a later scan", "file"),
    Reason("file-vanished", _R, os.EX_TEMPFAIL, "the file disappeared between listing and reading", "file"),
    Reason("broker-delivery-limit", _D, os.EX_SOFTWARE, "RabbitMQ dead-lettered it after delivery_limit "
           "redeliveries: a message that keeps crashing jgw", "broker"),
)

BY_CODE: dict[str, Reason] = {r.code: r for r in TABLE}


def reason(code: str) -> Reason:
    """The table entry of ``code``; a code not in the table is a bug in jgw (ValueError)."""
    try:
        return BY_CODE[code]
    except KeyError:
        raise ValueError(f"unknown reason code {code!r} (add it to gateway/reasons.py)") from None


def codes(origin: str | None = None, disposition: Disposition | None = None) -> list[str]:
    """Codes in table order, optionally of one origin or disposition."""
    return [r.code for r in TABLE if (origin is None or r.origin == origin)
            and (disposition is None or r.disposition is disposition)]


for _r in TABLE:
    if not CODE_RE.match(_r.code):
        raise ValueError(f"reason code must match {CODE_RE.pattern}: {_r.code!r}")


_DOC_DISPOSITION = {
    Disposition.QUARANTINE: "quarantine (kept, never retried)",
    Disposition.DEAD_LETTER: "dead-letter (kept for `jgw dlq replay`)",
    Disposition.RETRY: "retry tier, then dead-letter",
    Disposition.OPERATOR: "the link is refused; nothing moves until staff fix it",
}


def markdown() -> str:
    """The table of docs/operations.md ("Reason codes"), most severe first: generated from TABLE
    (``python -m gateway.reasons``), and compared with the page by tests/ops/test_docs_match_code.py."""
    rows = ["| reason | what happens | exit | origin | meaning |", "|---|---|---|---|---|"]
    for r in TABLE:
        rows.append(f"| `{r.code}` | {_DOC_DISPOSITION[r.disposition]} | {r.exit_code} | {r.origin} | {r.text} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
