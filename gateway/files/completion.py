"""Which files in a listing are complete, by the route's rule: a pure decision over listings and a clock.

A writer on the other side (an OCR system, a vendor's batch job, an ``sftp`` client) gives no signal
jgw could trust except what its files look like. Three conventions are in use, one per route:

``trigger``  the 終了ファイル convention: ``NAME`` is complete once a companion ``NAME.end`` or
             ``NAME.ok`` (configurable suffixes) exists. A name ending in a trigger suffix is always a
             trigger, never data; a trigger without its data file is ignored (the data may follow).
             The triggers travel with the file in ``Ready.companions`` so they are moved or removed
             with it.
``rename``   the writer uploads under a temporary name (prefix ``.`` or suffix ``.tmp``, ``.part``,
             ``.filepart``: configurable) and renames when done: every other name is complete.
``stable``   size and mtime unchanged for ``seconds`` by *our* clock, across at least two observations
             (the writer's clock is not compared with ours: the remote server's time may be off).
             The state between observations is ``Decision.seen``, handed back on the next call.

Whatever the rule, only regular files with a safe name are candidates (``names.check_name``);
symbolic links and unsafe names are returned as ``refused`` for the caller to quarantine, other
entries (directories such as ``done/``, FIFOs, devices) and jgw's own temporaries (``.jgw-*``) are
ignored. ``ready`` is ordered oldest mtime first, then by name bytes, so a backlog drains in order.
"Complete" only means "the writer looks finished": the reader still checks that nothing changed
while it read (``spool``, ``sftp``), which is what makes a wrong guess harmless.

Security: pure (no I/O, no clock of its own). Names are hostile bytes, compared as bytes only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.files.errors import NameRefused
from gateway.files.names import check_name, symlink_detail

#: Prefix of jgw's own temporary files (sinks write ``.jgw-<random>.part`` and rename); never taken.
JGW_TEMP_PREFIX = b".jgw-"


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry as listed (lstat, never following a link)."""

    name: bytes
    size: int
    mtime_ns: int
    is_regular: bool
    is_symlink: bool = False
    #: for a symlink, whether it resolves outside the directory (None: dangling, or not resolved)
    symlink_leaves: bool | None = None


@dataclass(frozen=True, slots=True)
class TriggerRule:
    suffixes: tuple[bytes, ...] = (b".end", b".ok")

    def __post_init__(self) -> None:
        if not self.suffixes or any(not s for s in self.suffixes):
            raise ValueError("trigger rule: at least one non-empty suffix")


@dataclass(frozen=True, slots=True)
class RenameRule:
    prefixes: tuple[bytes, ...] = (b".",)
    suffixes: tuple[bytes, ...] = (b".tmp", b".part", b".filepart")

    def __post_init__(self) -> None:
        if not self.prefixes and not self.suffixes:
            raise ValueError("rename rule: at least one temporary prefix or suffix")
        if any(not s for s in (*self.prefixes, *self.suffixes)):
            raise ValueError("rename rule: empty prefix or suffix")

    def is_temporary(self, name: bytes) -> bool:
        return name.startswith(self.prefixes) or name.endswith(self.suffixes)


@dataclass(frozen=True, slots=True)
class StableRule:
    seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ValueError("stable rule: seconds must be >= 0")


Rule = TriggerRule | RenameRule | StableRule


@dataclass(frozen=True, slots=True)
class Seen:
    """Size and mtime of a name, and since when (our clock) it has had them."""

    size: int
    mtime_ns: int
    since: float


@dataclass(frozen=True, slots=True)
class Ready:
    entry: Entry
    companions: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    ready: tuple[Ready, ...]
    waiting: tuple[Entry, ...]
    refused: tuple[tuple[Entry, NameRefused], ...]
    seen: Mapping[bytes, Seen] = field(default_factory=dict)

    @property
    def ready_names(self) -> frozenset[bytes]:
        return frozenset(r.entry.name for r in self.ready)


def _order(entry: Entry) -> tuple[int, bytes]:
    return (entry.mtime_ns, entry.name)


def decide(rule: Rule, entries: Iterable[Entry], now: float, seen: Mapping[bytes, Seen] | None = None) -> Decision:
    """Split a listing into ready, waiting and refused entries by ``rule`` at time ``now`` (seconds, any
    monotonic clock). ``seen`` is the previous ``Decision.seen`` (stable rule only; others return it empty)."""
    candidates: dict[bytes, Entry] = {}
    refused: list[tuple[Entry, NameRefused]] = []
    for e in entries:
        if e.name in (b".", b"..") and not e.is_regular:
            continue
        try:
            check_name(e.name)
        except NameRefused as exc:
            refused.append((e, exc))
            continue
        if e.is_symlink:
            refused.append((e, NameRefused("name-symlink", symlink_detail(e.symlink_leaves))))
            continue
        if not e.is_regular or e.name.startswith(JGW_TEMP_PREFIX):
            continue
        candidates[e.name] = e
    refused.sort(key=lambda r: r[0].name)

    ready: list[Ready] = []
    waiting: list[Entry] = []
    new_seen: dict[bytes, Seen] = {}
    if isinstance(rule, TriggerRule):
        triggers = {n for n in candidates if n.endswith(rule.suffixes)}
        for name, e in candidates.items():
            if name in triggers:
                continue
            companions = tuple(name + s for s in rule.suffixes if name + s in triggers)
            if companions:
                ready.append(Ready(e, companions))
            else:
                waiting.append(e)
    elif isinstance(rule, RenameRule):
        for name, e in candidates.items():
            (waiting.append(e) if rule.is_temporary(name) else ready.append(Ready(e)))
    else:
        previous = seen or {}
        for name, e in candidates.items():
            prev = previous.get(name)
            if prev is not None and prev.size == e.size and prev.mtime_ns == e.mtime_ns:
                now_seen = prev
                if now - prev.since >= rule.seconds:
                    ready.append(Ready(e))
                else:
                    waiting.append(e)
            else:
                now_seen = Seen(e.size, e.mtime_ns, now)
                waiting.append(e)
            new_seen[name] = now_seen
    ready.sort(key=lambda r: _order(r.entry))
    waiting.sort(key=_order)
    return Decision(tuple(ready), tuple(waiting), tuple(refused), new_seen)


class Tracker:
    """Holds a rule and the state between observations; ``observe`` is ``decide`` with memory."""

    __slots__ = ("rule", "seen")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.seen: Mapping[bytes, Seen] = {}

    def observe(self, entries: Iterable[Entry], now: float) -> Decision:
        decision = decide(self.rule, entries, now, self.seen)
        self.seen = decision.seen
        return decision

    def forget(self, name: bytes) -> None:
        """Drop what is known of ``name`` (after it was taken or put back: it must prove stable again)."""
        if name in self.seen:
            self.seen = {k: v for k, v in self.seen.items() if k != name}

    def __repr__(self) -> str:
        return f"Tracker({self.rule!r}, tracking={len(self.seen)})"
