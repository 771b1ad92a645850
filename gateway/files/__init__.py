"""File linkage: spool directories and SFTP as sources and sinks, jgw's own SFTP endpoint, chunked transfer.

The modules, in the order a reader meets them:

    errors      FileError and its reason codes (transient or not, what the caller does with the file)
    names       names are bytes exactly as listed; the checks before use; fingerprint/render for logs
    completion  which listed files are complete: trigger file, rename, or stable size+mtime (pure)
    adapter     the seam: FileRef, Scan, FileSource, FileSink, Upload, PutResult, SinkBase
    spool       SpoolSource / SpoolSink on the appliance's disk (fsync, link-into-place, done/)
    sftp        SftpLink (pinned host key, key-only client), SftpSource / SftpSink over asyncssh
    endpoint    Endpoint: jgw's SFTP server, one chrooted account per business system
    chunks      Chunker / Reassembly and split / reassemble: big files as digested chunks + manifest

Hop contract, file side: a source file is finished (moved to ``done/`` or removed) only after a
sink's ``put``/``commit`` returned, which happens only once the file is under its final name,
durable and checked; the sink never shows a partial file under a final name and never overwrites
one (same name and digest: already delivered; other digest: conflict).

Security: the adapters (``spool``, ``sftp``, ``endpoint``) read hostile names and bytes and
translate every lower-layer exception at their boundary; ``completion``, ``names``, ``chunks``
and ``adapter`` do no I/O of their own (``names.check_entry`` excepted: one lstat).
"""

from gateway.files.adapter import FileRef, FileSink, FileSource, Outcome, PutResult, Refused, Scan, Upload
from gateway.files.completion import RenameRule, Rule, StableRule, TriggerRule
from gateway.files.errors import (
    REASONS,
    ChunkError,
    Conflict,
    FileChanged,
    FileError,
    HostKeyRefused,
    IntegrityError,
    LinkError,
    LinkRefused,
    NameRefused,
    StorageError,
)

__all__ = [
    "REASONS",
    "ChunkError",
    "Conflict",
    "FileChanged",
    "FileError",
    "FileRef",
    "FileSink",
    "FileSource",
    "HostKeyRefused",
    "IntegrityError",
    "LinkError",
    "LinkRefused",
    "NameRefused",
    "Outcome",
    "PutResult",
    "Refused",
    "RenameRule",
    "Rule",
    "Scan",
    "StableRule",
    "StorageError",
    "TriggerRule",
    "Upload",
]
