"""File ids: the same for the same file taken again after a crash, new for a file given up and taken again.

Every frame of a file carries its file id, and every frame's message id is made of it (``file id``,
frame kind, index, the frame data's SHA-256), so the dedup store of each hop recognises a frame it
already delivered when a crash makes the source send the file again. The id is therefore derived,
not random: an HMAC, under a key of this node, of the route, the name's bytes, size, mtime and
(where the source has one) inode identity as listed. Keyed, because the id travels in clear
between sites (it orders the frames at every hop) and a bare hash of a name and a size could be
searched for a name that holds a 個人番号.

A file that was given up part way (it changed while being read, or a frame of it was refused) must
not come back under the same id: the frames it had sent are known to the hops' dedup stores while
the receiving sink threw their bytes away. Such a listing is recorded in ``aborted`` (a small map,
fsynced, pruned after ``KEEP`` seconds), and its next id is made with a counter. A listing that
changed (the usual case) gets a new id anyway.

Security: the key (32 random bytes) lives in the node's state directory, mode 0600; the map holds
HMACs and counts, never names.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import time
from pathlib import Path

from gateway.files.adapter import FileRef

KEY_NAME = "file-ids.key"
ABORTED_NAME = "file-ids.aborted.json"
KEEP = 30 * 86400.0


def _read_or_make_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        if len(data) == 32:
            return data
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key


class FileIds:
    """File ids of one node (``state_dir``); see the module docstring."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._key = _read_or_make_key(state_dir / KEY_NAME)
        self._aborted_path = state_dir / ABORTED_NAME
        self._aborted: dict[str, list[float]] = {}
        with contextlib.suppress(FileNotFoundError, ValueError):
            raw = json.loads(self._aborted_path.read_text())
            self._aborted = {k: [int(v[0]), float(v[1])] for k, v in raw.items()}

    def _listing(self, route: str, ref: FileRef) -> str:
        parts = [route.encode(), ref.name, str(ref.size).encode(), str(ref.mtime_ns).encode(),
                 ",".join(str(i) for i in ref.identity or ()).encode()]
        return hmac.new(self._key, b"\0".join(parts), hashlib.sha256).hexdigest()

    def file_id(self, route: str, ref: FileRef) -> str:
        listing = self._listing(route, ref)
        count = int(self._aborted.get(listing, [0, 0.0])[0])
        return hmac.new(self._key, f"{listing}/{count}".encode(), hashlib.sha256).hexdigest()[:32]

    def given_up(self, route: str, ref: FileRef) -> None:
        """The file was given up after some of its frames left: its next id must be another."""
        listing = self._listing(route, ref)
        now = time.time()
        count = int(self._aborted.get(listing, [0, 0.0])[0]) + 1
        self._aborted = {k: v for k, v in self._aborted.items() if now - v[1] < KEEP}
        self._aborted[listing] = [count, now]
        tmp = self._aborted_path.with_name(self._aborted_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(self._aborted, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._aborted_path)
