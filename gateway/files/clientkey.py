"""jgw's SFTP client keys, rotated as the node's other keys are: a new key is staged beside the live
one, proven at the server, then switched in by one rename; the key it replaced is kept for a rollback.

    <client_key>                 the live key (0600); the daemon reads it at each new connection, so a
                                 switch needs no reload and drops no session
    <client_key>.pub             its public half, for the server's authorized_keys
    <client_key>.new, .new.pub   the staged key (``jgw certs ssh-key new``)
    <client_key>.previous(.pub)  the key the last switch replaced (``jgw certs ssh-key rollback``)

Nothing here connects: ``gateway.commands.certs`` proves a key by logging in with it
(``gateway.files.sftp.SftpLink``) before it calls ``switch``.

Security: private keys are written 0600 through a temporary file, fsync and rename
(``gateway.pki.files.write_atomic``); operators see fingerprints and public halves only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from gateway.errors import NoInputError
from gateway.pki.errors import CertificateError
from gateway.pki.files import check_key_mode, fsync_dir, write_atomic

KEY_TYPE = "ssh-ed25519"


@dataclass(frozen=True)
class KeyFiles:
    """The files of one SFTP server's client key, named from the live key's path."""

    live: Path

    def _with(self, suffix: str) -> Path:
        return self.live.with_name(self.live.name + suffix)

    @property
    def pub(self) -> Path:
        return self._with(".pub")

    @property
    def staged(self) -> Path:
        return self._with(".new")

    @property
    def staged_pub(self) -> Path:
        return self._with(".new.pub")

    @property
    def previous(self) -> Path:
        return self._with(".previous")

    @property
    def previous_pub(self) -> Path:
        return self._with(".previous.pub")


@dataclass(frozen=True)
class KeyInfo:
    """What an operator may see of a key: where it is, its fingerprint, its public line."""

    path: Path
    fingerprint: str
    public_line: str


def read_key(path: Path) -> asyncssh.SSHKey:
    """The private key at ``path``, refused (77, 78) when readable by others or not a key."""
    check_key_mode(path)
    try:
        return asyncssh.read_private_key(str(path))
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise CertificateError(str(path), "SFTP client key", "unreadable",
                               "not an unencrypted OpenSSH or PKCS#8 private key") from exc


def info(path: Path) -> KeyInfo:
    key = read_key(path)
    return KeyInfo(path, key.get_fingerprint("sha256"), key.export_public_key("openssh").decode().strip())


def _write_pair(path: Path, pub: Path, key: asyncssh.SSHKey) -> None:
    write_atomic(path, key.export_private_key("openssh"), 0o600)
    write_atomic(pub, key.export_public_key("openssh"), 0o644)


def stage(files: KeyFiles, comment: str) -> tuple[KeyInfo, bool]:
    """The staged key, made now unless one is staged already (it may be at the server's
    administrators by now, so running ``new`` twice must not replace it). True when made now."""
    if files.staged.exists():
        return info(files.staged), False
    files.live.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = asyncssh.generate_private_key(KEY_TYPE, comment=comment)
    _write_pair(files.staged, files.staged_pub, key)
    return info(files.staged), True


def switch(files: KeyFiles) -> tuple[KeyInfo | None, KeyInfo]:
    """Make the staged key live; the live one becomes previous. Returns (old, new).

    The live name changes in one rename, so the daemon reads either the old key or the new one. An
    interruption before it leaves the old key live and the staged key staged (run it again); after
    it, only the public halves may be stale, and ``refresh_public`` rewrites them."""
    if not files.staged.exists():
        raise NoInputError(f"{files.staged}: no key staged (jgw certs ssh-key new first)")
    new = info(files.staged)
    old = info(files.live) if files.live.exists() else None
    if old is not None:
        _copy_private(files.live, files.previous)
        write_atomic(files.previous_pub, (old.public_line + "\n").encode(), 0o644)
    os.replace(files.staged, files.live)
    fsync_dir(files.live.parent)
    refresh_public(files)
    files.staged_pub.unlink(missing_ok=True)
    return old, new


def swap_back(files: KeyFiles) -> tuple[KeyInfo, KeyInfo]:
    """Make the previous key live again; the key rolled away from becomes previous. Returns (old, new)."""
    if not files.previous.exists():
        raise NoInputError(f"{files.previous}: no previous key to roll back to")
    back, current = info(files.previous), info(files.live)
    held = files.live.with_name(f".{files.live.name}.rollback{os.getpid()}")
    _copy_private(files.live, held)
    os.replace(files.previous, files.live)
    os.replace(held, files.previous)
    fsync_dir(files.live.parent)
    write_atomic(files.previous_pub, (current.public_line + "\n").encode(), 0o644)
    refresh_public(files)
    return current, back


def refresh_public(files: KeyFiles) -> None:
    """Rewrite ``<client_key>.pub`` from the live key when it differs (after an interrupted switch)."""
    if not files.live.exists():
        return
    line = (info(files.live).public_line + "\n").encode()
    try:
        if files.pub.read_bytes() == line:
            return
    except FileNotFoundError:
        pass
    write_atomic(files.pub, line, 0o644)


def _copy_private(src: Path, dst: Path) -> None:
    write_atomic(dst, src.read_bytes(), 0o600)
