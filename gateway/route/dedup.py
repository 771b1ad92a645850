"""The persistent dedup store: message ids a route has already delivered, for a bounded window.

An id is recorded only after the sink confirmed the message, and committed before the source
delivery is acknowledged; so a crash can only *forget* the last few ids (the message then
reaches the sink twice with the same id, the documented at-least-once bound), never suppress a
message that was not delivered. SQLite in WAL mode with ``synchronous=NORMAL``: a commit is
durable against a process crash; a power cut may lose the last commits, which again only
weakens dedup, never delivery.

The window is bounded by age (``dedup_window``, pruned periodically) so the store cannot grow
without limit; duplicates older than the window are delivered again.

Security: stores message ids (random or system-assigned, never personal data) and timestamps.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path


class DedupStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS delivered (route TEXT NOT NULL, message_id TEXT NOT NULL, "
            "at REAL NOT NULL, PRIMARY KEY (route, message_id)) WITHOUT ROWID")
        self._db.execute("CREATE INDEX IF NOT EXISTS delivered_at ON delivered (at)")
        self._pending: list[tuple[str, str, float]] = []
        self._committing: list[tuple[str, str, float]] = []
        path.chmod(0o600)

    def seen(self, route: str, message_ids: Iterable[str]) -> set[str]:
        """Which of these ids were already delivered on this route (committed or about to be)."""
        ids = list(message_ids)
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT message_id FROM delivered WHERE route = ? AND message_id IN ({marks})",
                (route, *chunk))
            found.update(r[0] for r in rows)
        if self._pending or self._committing:
            wanted = set(ids)
            found.update(mid for r, mid, _ in self._pending if r == route and mid in wanted)
            found.update(mid for r, mid, _ in self._committing if r == route and mid in wanted)
        return found

    def record(self, route: str, message_id: str, at: float | None = None) -> None:
        self._pending.append((route, message_id, time.time() if at is None else at))

    def commit(self) -> None:
        """Make recorded ids durable. Called before the matching source acks are sent."""
        self.write(self.begin_commit())
        self.end_commit()

    # The relay commits off the event loop in three steps; ids stay visible to seen() throughout.

    def begin_commit(self) -> list[tuple[str, str, float]]:
        """(event loop) Take the recorded ids for writing; they stay visible to seen()."""
        self._committing = self._committing + self._pending
        self._pending = []
        return list(self._committing)

    def write(self, rows: list[tuple[str, str, float]]) -> None:
        """(any thread) Write taken ids to the database."""
        if not rows:
            return
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR IGNORE INTO delivered (route, message_id, at) VALUES (?, ?, ?)", rows)
        self._db.execute("COMMIT")

    def end_commit(self) -> None:
        """(event loop) The taken ids are in the database."""
        self._committing = []

    def prune(self, route: str, window: float, now: float | None = None) -> int:
        cutoff = (time.time() if now is None else now) - window
        cur = self._db.execute("DELETE FROM delivered WHERE route = ? AND at < ?", (route, cutoff))
        return cur.rowcount

    def delivered_at(self, route: str, message_id: str) -> float | None:
        row = self._db.execute("SELECT at FROM delivered WHERE route = ? AND message_id = ?",
                               (route, message_id)).fetchone()
        return None if row is None else float(row[0])

    def count(self, route: str) -> int:
        return int(self._db.execute("SELECT count(*) FROM delivered WHERE route = ?", (route,)).fetchone()[0])

    def close(self) -> None:
        self.commit()
        self._db.close()
