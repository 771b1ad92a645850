"""The certs directory of one node: where each file lives, which generation is live, and the lock.

    <certs_dir>/
      trust/anchors/*.pem          CA certificates we trust (self-signed roots)
      trust/intermediates/*.pem    optional CA certificates below the anchors
      trust/crls/*.pem             one current CRL per CA (PEM)
      peers/<node-id>/signing.pem, encryption.pem   a peer's current certificates
      peers/<node-id>/<purpose>.previous.pem        its previous ones, accepted while still valid
      archive/gen-0001/ ...        generations of this node's own material, never changed once written
      live -> archive/gen-0002     the generation in use (a relative symlink)
      previous -> archive/gen-0001 the one before, for rollback and the decryption overlap
      staging/                     the next generation being assembled (jgw pki csr, jgw certs install)
      rotation.pending             journal of a rotation or rollback in progress (see gateway.pki.rotation)
      rotations.log                one line per rotation, rollback and repair
      .lock                        held by every command that changes the directory

A generation holds, per purpose (tls-client, signing, encryption), ``<purpose>.pem`` (the
certificate, then any intermediates) and ``<purpose>.key`` (mode 0600), plus optional extra files of
the post-quantum hybrid suite (``gateway.pki.hybrid``). The pointers change only by renaming a
temporary symlink over the old one, which is atomic on POSIX file systems.

Security: local file system only. Keeps key files at 0600; takes nothing on trust (see trust.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import TempFailError
from gateway.pki.errors import CertificateError
from gateway.pki.files import fsync_dir
from gateway.pki.purpose import Purpose

GEN_RE = re.compile(r"^gen-(\d{4,})$")
POINTERS = ("live", "previous")


def cert_name(purpose: Purpose | str) -> str:
    return f"{purpose}.pem"


def key_name(purpose: Purpose | str) -> str:
    return f"{purpose}.key"


@dataclass(frozen=True)
class CertsDir:
    root: Path

    @property
    def trust(self) -> Path:
        return self.root / "trust"

    @property
    def anchors(self) -> Path:
        return self.trust / "anchors"

    @property
    def intermediates(self) -> Path:
        return self.trust / "intermediates"

    @property
    def crls(self) -> Path:
        return self.trust / "crls"

    @property
    def peers(self) -> Path:
        return self.root / "peers"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def journal(self) -> Path:
        return self.root / "rotation.pending"

    @property
    def history(self) -> Path:
        return self.root / "rotations.log"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    def pointer_path(self, name: str) -> Path:
        return self.root / name

    def generations(self) -> list[str]:
        """Archived generations, oldest first."""
        if not self.archive.is_dir():
            return []
        names = [p.name for p in self.archive.iterdir() if p.is_dir() and GEN_RE.match(p.name)]
        return sorted(names, key=lambda n: int(n[4:]))

    def next_generation(self) -> str:
        gens = self.generations()
        last = int(gens[-1][4:]) if gens else 0
        return f"gen-{last + 1:04d}"

    def pointer(self, name: str) -> str | None:
        """The generation a pointer names, or None when it is absent. Refuses a pointer that leads
        anywhere but into ``archive/``."""
        link = self.pointer_path(name)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CertificateError(str(link), name, "layout", f"not a symlink ({exc.strerror})") from exc
        parts = Path(target).parts
        if len(parts) != 2 or parts[0] != "archive" or not GEN_RE.match(parts[1]):
            raise CertificateError(str(link), name, "layout",
                                   f"points to {target!r}; expected archive/gen-NNNN")
        if not (self.archive / parts[1]).is_dir():
            raise CertificateError(str(link), name, "layout", f"points to {target!r}, which does not exist")
        return parts[1]

    def generation_dir(self, gen: str) -> Path:
        return self.archive / gen

    def live_dir(self) -> Path:
        gen = self.pointer("live")
        if gen is None:
            raise CertificateError(str(self.pointer_path("live")), "live", "missing",
                                   "no live generation; stage material (jgw certs install) "
                                   "then run jgw certs rotate")
        return self.generation_dir(gen)

    def set_pointer(self, name: str, gen: str | None) -> None:
        """Point ``name`` at ``gen`` atomically (a temporary symlink renamed over the old one)."""
        link = self.pointer_path(name)
        if gen is None:
            link.unlink(missing_ok=True)
        else:
            tmp = self.root / f".{name}.tmp{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(f"archive/{gen}", tmp)
            os.replace(tmp, link)
        fsync_dir(self.root)

    def leftovers(self) -> list[Path]:
        """Temporary files of an interrupted command: safe to delete under the lock."""
        found = [p for p in self.root.glob(".*.tmp*")]
        if self.archive.is_dir():
            found += [p for p in self.archive.glob(".gen-*.tmp*")]
        return sorted(found)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock; a second command fails at once with exit 75 instead of racing."""
        if self.root.exists() and not self.root.is_dir():
            raise CertificateError(str(self.root), "certs directory", "layout", "not a directory")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                raise TempFailError(f"{self.lock_file}: another jgw certs command is changing this directory "
                                    f"(pid {holder}); try again when it has finished") from exc
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)
