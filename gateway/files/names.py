"""File names as bytes, exactly as the source has them: the checks before any use, and how to show one.

A name is never decoded, normalised or transcoded: Shift_JIS names exist (and their second bytes may
be 0x5C, the ASCII backslash, which is an ordinary byte in a POSIX name), so a name is carried,
compared and written as the bytes the source listed. ``check_name`` refuses what cannot be one
directory entry in the directory we were given: empty, ``.``, ``..``, a ``/`` or a NUL anywhere,
or more than ``MAX_NAME_BYTES`` bytes. ``check_entry`` refuses a symbolic link: jgw takes regular
files only, and the operator detail says whether the link leads out of the directory.

For logs, ``fingerprint`` is the handle (the first 12 hex digits of SHA-256 over the bytes): names
can carry personal data (a resident's name in a file name is common), so log lines, metric labels
and error details never hold a name. ``render`` is the printable form for an operator looking at
one quarantined file: printable ASCII as is, every other byte as ``\\xNN``, truncated; it never
guesses an encoding.

Security: reads hostile bytes (names listed by a business system's SFTP server or written into
jgw's endpoint). Pure except ``check_entry``, which lstat()s and resolves one path.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from gateway.files.errors import NameRefused

#: NAME_MAX on Linux file systems (ext4, xfs, tmpfs) and the OpenSSH sftp-server's limit per component.
MAX_NAME_BYTES = 255


def check_name(name: bytes) -> bytes:
    """Return ``name`` unchanged if it can be one entry of a directory, else raise ``NameRefused``."""
    if not isinstance(name, bytes):
        raise TypeError("a file name is bytes")
    if not name:
        raise NameRefused("name-unsafe", "empty name")
    if name in (b".", b".."):
        raise NameRefused("name-unsafe", "the name is '.' or '..'")
    if b"/" in name:
        raise NameRefused("name-unsafe", f"the name contains '/' ({len(name)} bytes)")
    if b"\0" in name:
        raise NameRefused("name-unsafe", f"the name contains NUL ({len(name)} bytes)")
    if len(name) > MAX_NAME_BYTES:
        raise NameRefused("name-unsafe", f"the name is {len(name)} bytes, more than {MAX_NAME_BYTES}")
    return name


def is_safe(name: bytes) -> bool:
    try:
        check_name(name)
    except NameRefused:
        return False
    return True


def fingerprint(name: bytes) -> str:
    """A short stable handle for a name in logs and details: ``n:`` and 12 hex digits of SHA-256."""
    return "n:" + hashlib.sha256(name).hexdigest()[:12]


def render(name: bytes, limit: int = 64) -> str:
    """Printable ASCII for an operator: bytes 0x20-0x7E as is (backslash doubled), others ``\\xNN``;
    past ``limit`` output characters the rest is replaced by ``...(+N bytes)``."""
    out: list[str] = []
    used = 0
    for i, b in enumerate(name):
        piece = "\\\\" if b == 0x5C else chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02x}"
        if used + len(piece) > limit:
            out.append(f"...(+{len(name) - i} bytes)")
            break
        out.append(piece)
        used += len(piece)
    return "".join(out)


def symlink_detail(leaves: bool | None) -> str:
    if leaves is None:
        return "symbolic link (target not resolved or dangling)"
    if leaves:
        return "symbolic link leading out of the directory"
    return "symbolic link inside the directory (only regular files are taken)"


def leaves_directory(directory: Path, name: bytes) -> bool | None:
    """Whether the symlink ``directory/name`` resolves outside ``directory`` (None: does not resolve)."""
    base = os.path.realpath(os.fsencode(directory))
    try:
        target = os.path.realpath(os.path.join(base, name), strict=True)
    except OSError:
        return None
    return os.path.commonpath([base, target]) != base or target == base


def check_entry(directory: Path, name: bytes) -> os.stat_result:
    """``check_name``, then lstat the entry; a symbolic link is refused (``name-symlink``)."""
    check_name(name)
    st = os.lstat(os.path.join(os.fsencode(directory), name))
    if stat.S_ISLNK(st.st_mode):
        raise NameRefused("name-symlink", symlink_detail(leaves_directory(directory, name)))
    return st
