"""Why a file was not taken, not delivered or not reassembled: one tree, one table of reason codes.

Every refusal carries a ``reason`` from ``REASONS`` (a bounded set: safe as a metric label) and a
one-line ``detail`` for operators. ``REASONS`` is a view of jgw's one reason table
(``gateway.reasons``), so a file code means the same in metrics, logs and set-aside headers as any
other. The table says, for each reason, what it means, whether it is
transient and what the caller does with the file:

    retry        transient; leave the file where it is (the source keeps it) and try again later
    quarantine   the file or its bytes are refused (unsafe name, failed digest); keep the original
                 bytes aside with the reason, never retry
    dead-letter  delivery is impossible as asked (the sink holds a different file under that name)
    operator     the link is refused until an operator acts (host key, client key, login); no file
                 is at fault, none is moved: the route stays down, counted, and retries with backoff

    FileError(JgwError)                     reason codes
     ├── NameRefused                        name-unsafe, name-symlink
     ├── FileChanged                        file-changed, file-vanished
     ├── Conflict                           conflict
     ├── IntegrityError                     size-mismatch, digest-mismatch
     │    └── ChunkError                    chunk-missing, chunk-duplicate, chunk-altered,
     │                                      chunk-foreign, chunk-malformed, manifest-mismatch
     ├── StorageError                       disk-full, io-error, permission-denied
     └── LinkError                          unavailable, protocol-error
          └── LinkRefused                   auth-refused, key-mode, key-unreadable
               └── HostKeyRefused           host-key-unknown, host-key-changed

Lower-layer exceptions (``OSError``, ``asyncssh.Error``) are translated once, in the adapter that
called them (``spool``, ``sftp``), with ``raise ... from exc``; nothing above the adapters sees them.

Security: pure definitions. ``detail`` is logged and shown to operators: it carries sizes, offsets,
indexes, digests' first hex digits, errno names and host:port, never a file name (names may carry
personal data; ``gateway.files.names.fingerprint`` is the loggable handle) and never file bytes.
"""

from __future__ import annotations

import errno
from typing import Literal

from gateway import reasons
from gateway.errors import JgwError

Disposition = Literal["retry", "quarantine", "dead-letter", "operator"]

EX_CANTCREAT = reasons.EX_CANTCREAT

#: The codes a FileError may carry; their rows are in the one table, ``gateway.reasons``.
CODES = ("name-unsafe", "name-symlink", "file-changed", "file-vanished", "conflict", "size-mismatch",
         "digest-mismatch", "chunk-missing", "chunk-duplicate", "chunk-altered", "chunk-foreign", "chunk-malformed",
         "manifest-mismatch", "disk-full", "io-error", "permission-denied", "unavailable", "protocol-error",
         "auth-refused", "key-mode", "key-unreadable", "host-key-unknown", "host-key-changed")


def _row(code: str) -> tuple[str, Disposition, int]:
    r = reasons.reason(code)
    disposition: Disposition = r.disposition.value
    return r.text, disposition, r.exit_code


#: reason -> (what it means, disposition, exit status for a CLI), from ``gateway.reasons.TABLE``.
REASONS: dict[str, tuple[str, Disposition, int]] = {code: _row(code) for code in CODES}


class FileError(JgwError):
    """A file operation was refused or failed. ``reason`` is a code from ``REASONS``."""

    #: the reasons this class may carry (subclasses narrow it)
    reasons: frozenset[str] = frozenset(REASONS)

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in self.reasons:
            raise ValueError(f"{type(self).__name__} cannot carry reason {reason!r}")
        self.reason = reason
        self.detail = detail
        _, self.disposition, self.exit_code = REASONS[reason]
        super().__init__(f"{reason}: {detail}")

    @property
    def transient(self) -> bool:
        """True when trying the same operation later may succeed with nothing changed by anyone."""
        return self.disposition == "retry"

    @property
    def link_fault(self) -> bool:
        """True when the link or its credentials are at fault, not the file (count it, move nothing)."""
        return isinstance(self, LinkError)


class NameRefused(FileError):
    reasons = frozenset({"name-unsafe", "name-symlink"})


class FileChanged(FileError):
    reasons = frozenset({"file-changed", "file-vanished"})


class Conflict(FileError):
    reasons = frozenset({"conflict"})

    def __init__(self, detail: str) -> None:
        super().__init__("conflict", detail)


class IntegrityError(FileError):
    reasons = frozenset({"size-mismatch", "digest-mismatch"})


class ChunkError(IntegrityError):
    reasons = frozenset({"chunk-missing", "chunk-duplicate", "chunk-altered", "chunk-foreign", "chunk-malformed",
                         "manifest-mismatch", "size-mismatch", "digest-mismatch"})


class StorageError(FileError):
    reasons = frozenset({"disk-full", "io-error", "permission-denied"})


class LinkError(FileError):
    reasons = frozenset({"unavailable", "protocol-error", "auth-refused", "key-mode", "key-unreadable",
                         "host-key-unknown", "host-key-changed"})


class LinkRefused(LinkError):
    reasons = frozenset({"auth-refused", "key-mode", "key-unreadable", "host-key-unknown", "host-key-changed"})


class HostKeyRefused(LinkRefused):
    reasons = frozenset({"host-key-unknown", "host-key-changed"})


def from_oserror(exc: OSError, what: str) -> FileError:
    """The FileError for a local ``OSError`` met while doing ``what`` (a short phrase, no file name).
    A vanished source file is the caller's to recognise (ENOENT is ``io-error`` here)."""
    name = errno.errorcode.get(exc.errno or 0, "E?")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError("disk-full", f"{what}: {name}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError("permission-denied", f"{what}: {name}")
    return StorageError("io-error", f"{what}: {name}")
