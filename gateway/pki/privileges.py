"""Giving up root for the certs directory's owner, after reading what only root may read.

NAME
    privileges - preload staff's input files and every module, then switch to the certs directory's owner

DESCRIPTION
    Run as root, a ``jgw certs``/``jgw pki`` verb switches for good to the user owning the certs
    directory (jgw) before it changes anything, so every file it writes is the daemon's and the
    0600 rule means the same for both. Two things must happen before that switch, while still root:

    - **Staff's input files are read.** Issued certificates, a CRL, a key or a peer's files often
      sit where only root can read them (``/root``, a 0600 copy from a USB stick). ``preload``
      reads each into memory; ``read_input`` and ``input_mode`` hand out those bytes and that mode
      afterwards, under the name staff gave, so every message still names their file.
    - **Every module the verb may need is imported.** The venv or checkout jgw runs from may be
      unreadable by jgw (a checkout under ``/root``); a module imported lazily after the switch
      would fail with ModuleNotFoundError. ``import_everything`` imports all of ``gateway.pki``,
      cryptography and pyOpenSSL, the command modules, and the standard-library modules they load
      on first use.

    ``user_name`` gives the "name (uid N)" that a refusal uses to say *which* user could not read
    *which* file.

Security: runs as root only up to ``become_owner``; reads only the files named on the command line
before that, and never writes as root into a directory owned by someone else.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pkgutil
import pwd
import stat
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import PermissionError_


@dataclass(frozen=True)
class Preloaded:
    data: bytes
    mode: int


_preloaded: dict[str, Preloaded] = {}

#: Packages whose every module is imported before the switch: ours, and the libraries that load
#: parts of themselves on first use (cryptography's backends, for one); about 0.1 s.
PACKAGES = ("gateway.pki", "cryptography", "OpenSSL")
#: Single modules besides: the verbs' own, and standard-library modules they load on first use.
MODULES = ("gateway.commands.certs", "gateway.commands.pki", "gateway.config", "gateway.keyring",
           "ssl", "socket", "json", "signal", "shutil", "tempfile", "encodings.idna", "encodings.ascii",
           "encodings.latin_1", "encodings.utf_8")


def user_name(uid: int | None = None) -> str:
    """'jgw (uid 998)' for the effective user, or for ``uid``."""
    uid = os.geteuid() if uid is None else uid
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _key(path: Path) -> str:
    return os.path.abspath(path)


def preload(paths: Iterable[Path]) -> None:
    """Read each file now (as the current user, normally root) for ``read_input`` to return later.
    A file that cannot be read now (missing, a directory) is left to the reader, which refuses it
    with its own words and goes on with the other files."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    continue
                data = f.read()
        except OSError:
            continue
        _preloaded[_key(path)] = Preloaded(data, st.st_mode)


def read_input(path: Path) -> bytes | None:
    """The bytes ``preload`` read from ``path``, or None when it was not preloaded."""
    got = _preloaded.get(_key(path))
    return got.data if got is not None else None


def input_mode(path: Path) -> int | None:
    got = _preloaded.get(_key(path))
    return got.mode if got is not None else None


def forget_inputs() -> None:
    _preloaded.clear()


def import_everything() -> None:
    """Import every module a certs or pki verb may load later (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules (OpenSSL.rand) say so on import
        for name in PACKAGES:
            package = importlib.import_module(name)
            for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
                with contextlib.suppress(ImportError):  # optional parts of a library
                    importlib.import_module(info.name)
        for name in MODULES:
            importlib.import_module(name)


def become_owner(certs_dir: Path, inputs: Iterable[Path] = ()) -> None:
    """Run as root: read ``inputs``, import everything, then switch for good to the user owning
    ``certs_dir`` (jgw), so that every file this command writes belongs to the daemon's user.
    Not root, or the directory is root's (or absent: a first installation creates it): nothing
    to switch, and files are read as they are needed, as this user."""
    if os.geteuid() != 0:
        return
    try:
        st = certs_dir.stat()
    except FileNotFoundError:
        return
    if st.st_uid == 0:
        return
    preload(inputs)
    import_everything()
    try:
        os.setgroups([])
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)
    except OSError as exc:
        raise PermissionError_(f"{certs_dir}: cannot switch to its owner {user_name(st.st_uid)}: "
                               f"{exc.strerror}") from exc
