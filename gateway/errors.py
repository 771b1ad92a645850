"""The jgw error taxonomy: one tree, one table of exit codes.

Security: pure definitions; no I/O. Messages carried by these errors are shown to operators and
written to logs, so they must never contain payload bytes or personal identifiers.

    JgwError                      exit code    disposition
     ├── UsageError               64 EX_USAGE  fatal: the command line is wrong
     ├── ConfigError              78 EX_CONFIG fatal: file, key path and reason
     ├── DataError                65 EX_DATAERR the input (file or message) is malformed
     ├── NoInputError             66 EX_NOINPUT a named file or object does not exist
     ├── UnavailableError         69 EX_UNAVAILABLE a broker or peer cannot be reached
     ├── TempFailError            75 EX_TEMPFAIL try again later
     ├── PermissionError_         77 EX_NOPERM  key file mode, refused credential
     └── SoftwareError            70 EX_SOFTWARE our bug: report it

Lower-layer exceptions (pika, cryptography, OSError) are translated once, at the adapter
boundary, with ``raise ... from exc``. A known error prints one line and exits with its code; an
unexpected one prints "unexpected error" plus one line and exits 70 (see ``gateway.cli``).
"""

from __future__ import annotations

import os


class JgwError(Exception):
    """Root of every error jgw reports to an operator."""

    exit_code: int = os.EX_SOFTWARE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(JgwError):
    exit_code = os.EX_USAGE


class ConfigError(JgwError):
    """A configuration file is wrong. Always names the file and the key path."""

    exit_code = os.EX_CONFIG

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class DataError(JgwError):
    exit_code = os.EX_DATAERR


class NoInputError(JgwError):
    exit_code = os.EX_NOINPUT


class UnavailableError(JgwError):
    exit_code = os.EX_UNAVAILABLE


class TempFailError(JgwError):
    exit_code = os.EX_TEMPFAIL


class PermissionError_(JgwError):
    exit_code = os.EX_NOPERM


class SoftwareError(JgwError):
    exit_code = os.EX_SOFTWARE
