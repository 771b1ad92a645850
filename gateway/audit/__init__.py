"""The audit trail: append-only, hash-chained evidence of what jgw did with each message.

NAME
    audit - write, rotate, expire and verify the node's audit segments

SYNOPSIS
    log = AuditLog.open(directory, node_id, retention=Retention(...))
    log.record("accept", msg=..., route=..., seed=..., peer=..., size=..., digest=...)
    log.commit()          # write + fsync the buffered records; call before acknowledging the source
    log.expire()          # delete whole segments past their retention (recorded first)
    log.close()
    report = verify(directory)

DESCRIPTION
    One record is one line: ``BODY<TAB>HASH<LF>``. BODY is a JSON object in canonical form (keys
    sorted, no spaces, ASCII only, so it contains no TAB or LF); HASH is the lower-case hex SHA-256
    of the BODY bytes. Every BODY holds ``seq`` (0, 1, 2, … across all segments), ``prev`` (the
    HASH of the record before it; 64 zeros before the very first), ``t`` (UTC time, RFC 3339 with
    microseconds) and ``ev`` (the event). docs/audit.md is the format reference for auditors.

    Records go to segment files ``audit-<first seq, 16 digits>.log``. A segment starts with a
    ``segment-open`` record whose ``anchor`` is the HASH of the last record of the segment before
    it, and ends with a ``segment-close`` record saying until when it must be kept. Segments rotate
    by size and age; whole segments expire, oldest first, and an ``expire`` record (written and
    fsynced before the file is removed) names the expired segment's last seq and HASH, so the
    remaining chain still verifies from a known anchor.

    ``record`` only buffers (microseconds). ``commit`` writes every buffered record with one write()
    and one fsync(): evidence is on disk before the relay acknowledges the source. A crash during a
    write can leave a torn tail (an incomplete line, or NUL bytes where blocks were not written):
    ``open`` detects it, moves the torn bytes to ``<segment>.torn-<seq>-<time>`` (kept, read-only),
    truncates the segment to its last complete record and writes a ``recovered`` record saying so.
    A complete record that fails its hash is not a crash artefact: ``open`` refuses (DataError) and
    names it; after investigation ``jgw audit recover`` sets the damaged tail aside explicitly.

    Records carry ids, route names, seed references, peers, sizes, digests and outcomes; never
    payload bytes. String values other than digests pass the 個人番号 redactor, so a source system
    that puts a 個人番号 in a message id does not put it in seven years of evidence.

BUGS
    A hash chain proves order and integrity relative to a known head. Someone able to rewrite the
    files could rewrite the whole tail consistently; export ``head()`` (``jgw audit head``)
    regularly to somewhere they cannot reach and verify with ``--anchor`` (docs/audit.md).

Modules: ``format`` (records, lines and segment files), ``settings`` (the [audit] table), ``trail`` (writing),
``verify`` (checking, recovery, reading back).

Security: writes local files only (directory 0700, segments 0600, closed segments 0400); reads
nothing from messages but ids, sizes and digests handed to it by the relay.
"""

from gateway.audit.format import EVENTS, FORMAT, GENESIS, Line, payload_digest, per_message, read_lines, segment_files
from gateway.audit.settings import AuditSettings, Period, Retention, add_years, audit_settings
from gateway.audit.trail import AuditLog
from gateway.audit.verify import Finding, Report, check_dedup, records, recover, verify

__all__ = ["EVENTS", "FORMAT", "GENESIS", "AuditLog", "AuditSettings", "Finding", "Line", "Period", "Report",
           "Retention", "add_years", "audit_settings", "check_dedup", "payload_digest", "per_message", "read_lines",
           "records", "recover", "segment_files", "verify"]
