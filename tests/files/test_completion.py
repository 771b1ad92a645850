"""Which listed files are complete, by rule: tables of named cases, then properties (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.files.completion import (
    Entry,
    RenameRule,
    Rule,
    Seen,
    StableRule,
    Tracker,
    TriggerRule,
    decide,
)

SJIS = "異動対象者情報.csv".encode("shift_jis")


def f(name: bytes, size: int = 10, mtime_ns: int = 1_000, *, regular: bool = True, link: bool = False) -> Entry:
    return Entry(name, size, mtime_ns, regular and not link, link)


@dataclass(frozen=True)
class Case:
    name: str
    rule: Rule
    entries: tuple[Entry, ...]
    ready: frozenset[bytes]
    refused: frozenset[bytes] = frozenset()
    companions: tuple[tuple[bytes, tuple[bytes, ...]], ...] = ()


CASES = [
    Case("trigger: data with .end", TriggerRule(), (f(b"a.csv"), f(b"a.csv.end")), frozenset({b"a.csv"}),
         companions=((b"a.csv", (b"a.csv.end",)),)),
    Case("trigger: data with .ok", TriggerRule(), (f(b"a.csv"), f(b"a.csv.ok")), frozenset({b"a.csv"})),
    Case("trigger: both triggers go along", TriggerRule(), (f(b"a"), f(b"a.end"), f(b"a.ok")), frozenset({b"a"}),
         companions=((b"a", (b"a.end", b"a.ok")),)),
    Case("trigger: no trigger yet", TriggerRule(), (f(b"a.csv"),), frozenset()),
    Case("trigger: trigger without data", TriggerRule(), (f(b"a.csv.end"),), frozenset()),
    Case("trigger: trigger of another file", TriggerRule(), (f(b"a.csv"), f(b"b.csv.end")), frozenset()),
    Case("trigger: a trigger is never data", TriggerRule(), (f(b"a.end"), f(b"a.end.end"), f(b"a")),
         frozenset({b"a"})),
    Case("trigger: custom suffix only", TriggerRule((b".fin",)), (f(b"a"), f(b"a.end"), f(b"b"), f(b"b.fin")),
         frozenset({b"b"})),
    Case("trigger: shift_jis name", TriggerRule(), (f(SJIS), f(SJIS + b".end")), frozenset({SJIS})),
    Case("trigger: a directory as trigger does not count", TriggerRule(),
         (f(b"a"), f(b"a.end", regular=False)), frozenset()),
    Case("rename: final names are taken", RenameRule(), (f(b"a.csv"), f(b"b.csv")), frozenset({b"a.csv", b"b.csv"})),
    Case("rename: .tmp, .part, .filepart and dot-files wait", RenameRule(),
         (f(b"a.csv.tmp"), f(b"b.part"), f(b"c.filepart"), f(b".d.csv"), f(b"e.csv")), frozenset({b"e.csv"})),
    Case("rename: custom prefix", RenameRule(prefixes=(b"~",), suffixes=()), (f(b"~a"), f(b".b")),
         frozenset({b".b"})),
    Case("any rule: jgw's own temporaries are never taken", RenameRule(prefixes=(b"~",), suffixes=()),
         (f(b".jgw-0123.part"), f(b"a")), frozenset({b"a"})),
    Case("any rule: directories are ignored", RenameRule(), (f(b"done", regular=False), f(b"a")), frozenset({b"a"})),
    Case("any rule: symlinks are refused", RenameRule(), (f(b"link", link=True), f(b"a")), frozenset({b"a"}),
         refused=frozenset({b"link"})),
    Case("any rule: unsafe names are refused", RenameRule(), (f(b"../x"), f(b"a\x00b"), f(b"a")), frozenset({b"a"}),
         refused=frozenset({b"../x", b"a\x00b"})),
    Case("any rule: '.' and '..' directory entries are skipped", RenameRule(),
         (f(b".", regular=False), f(b"..", regular=False)), frozenset()),
    Case("any rule: a '..' listed as a regular file is refused", TriggerRule(), (f(b".."),), frozenset(),
         refused=frozenset({b".."})),
    Case("stable: first sight is never ready", StableRule(0), (f(b"a"),), frozenset()),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule(case: Case) -> None:
    """Each named listing yields exactly the expected ready and refused names."""
    d = decide(case.rule, case.entries, now=100.0)
    assert d.ready_names == case.ready
    assert {e.name for e, _ in d.refused} == case.refused
    for name, companions in case.companions:
        assert next(r.companions for r in d.ready if r.entry.name == name) == companions


STABLE = [
    # (name, observations as (time, size, mtime_ns), ready after each)
    ("unchanged for the period", [(0, 5, 1), (10, 5, 1), (30, 5, 1)], [False, False, True]),
    ("exactly the period", [(0, 5, 1), (30, 5, 1)], [False, True]),
    ("grows: the clock restarts", [(0, 5, 1), (25, 6, 2), (50, 6, 2), (55, 6, 2)], [False, False, False, True]),
    ("mtime moves, size same", [(0, 5, 1), (30, 5, 2), (59, 5, 2), (60, 5, 2)], [False, False, False, True]),
    ("clock goes backwards", [(100, 5, 1), (50, 5, 1)], [False, False]),
    ("disappears and comes back", [(0, 5, 1), None, (40, 5, 1), (70, 5, 1)], [False, False, False, True]),
]


@pytest.mark.parametrize(("case", "observations", "expected"), STABLE, ids=[c[0] for c in STABLE])
def test_stable_rule(case: str, observations: list[tuple[int, int, int] | None], expected: list[bool]) -> None:
    """Size and mtime must hold still for 30 s of our clock across observations."""
    tracker = Tracker(StableRule(30))
    got = []
    for i, obs in enumerate(observations):
        entries = [] if obs is None else [f(b"a", obs[1], obs[2])]
        now = float(obs[0]) if obs is not None else float(i)
        got.append(b"a" in tracker.observe(entries, now).ready_names)
    assert got == expected


def test_forget_makes_a_file_prove_itself_again() -> None:
    tracker = Tracker(StableRule(1))
    tracker.observe([f(b"a")], 0)
    assert tracker.observe([f(b"a")], 2).ready_names == {b"a"}
    tracker.forget(b"a")
    assert tracker.observe([f(b"a")], 3).ready_names == frozenset()


def test_ready_is_oldest_first() -> None:
    d = decide(RenameRule(), [f(b"c", mtime_ns=3), f(b"b", mtime_ns=1), f(b"a", mtime_ns=3)], 0)
    assert [r.entry.name for r in d.ready] == [b"b", b"a", b"c"]


def test_rules_validate() -> None:
    with pytest.raises(ValueError):
        TriggerRule(())
    with pytest.raises(ValueError):
        RenameRule((), ())
    with pytest.raises(ValueError):
        StableRule(-1)


# -- properties ---------------------------------------------------------------------------------------

names = st.one_of(st.binary(min_size=0, max_size=12),
                  st.sampled_from([b"a", b"a.end", b"a.ok", b"a.tmp", b".a", b"b.part", b"..", b".jgw-x.part"]))
entries = st.lists(st.builds(Entry, names, st.integers(0, 3), st.integers(0, 3), st.booleans(), st.booleans()),
                   max_size=12, unique_by=lambda e: e.name)
rules = st.one_of(st.just(TriggerRule()), st.just(RenameRule()), st.builds(StableRule, st.integers(0, 5)))
seen = st.dictionaries(names, st.builds(Seen, st.integers(0, 3), st.integers(0, 3), st.integers(0, 20)), max_size=6)


@settings(max_examples=400)
@given(rules, entries, st.integers(0, 20), seen)
def test_partition(rule: Rule, listing: list[Entry], now: int, previous: dict[bytes, Seen]) -> None:
    """ready, waiting and refused are disjoint; ready holds only regular, non-link, safe, non-temporary
    files; the decision does not depend on listing order."""
    d = decide(rule, listing, now, previous)
    ready = d.ready_names
    waiting = {e.name for e in d.waiting}
    refused = {e.name for e, _ in d.refused}
    assert not (ready & waiting) and not (ready & refused) and not (waiting & refused)
    by_name = {e.name: e for e in listing}
    for name in ready:
        e = by_name[name]
        assert e.is_regular and not e.is_symlink and not name.startswith(b".jgw-")
        assert name and b"/" not in name and b"\0" not in name and name not in (b".", b"..")
    for e in listing:
        if e.is_symlink and name_ok(e.name):
            assert e.name in refused
    again = decide(rule, list(reversed(listing)), now, previous)
    assert again.ready_names == ready and {e.name for e in again.waiting} == waiting


def name_ok(name: bytes) -> bool:
    return bool(name) and b"/" not in name and b"\0" not in name and name not in (b".", b"..")


@given(entries)
def test_trigger_property(listing: list[Entry]) -> None:
    """Trigger rule: a ready file always has a trigger listed, and no trigger is ever ready."""
    rule = TriggerRule()
    d = decide(rule, listing, 0)
    listed = {e.name for e in listing if e.is_regular and not e.is_symlink}
    for r in d.ready:
        assert not r.entry.name.endswith(rule.suffixes)
        assert r.companions and all(c in listed for c in r.companions)


@given(entries)
def test_rename_property(listing: list[Entry]) -> None:
    """Rename rule: every safe regular file is ready exactly when its name is not temporary."""
    rule = RenameRule()
    d = decide(rule, listing, 0)
    for e in listing:
        if e.is_regular and not e.is_symlink and name_ok(e.name) and not e.name.startswith(b".jgw-"):
            assert (e.name in d.ready_names) == (not rule.is_temporary(e.name))


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(1, 10)), min_size=1, max_size=15),
       st.integers(0, 20))
def test_stable_property(steps: list[tuple[int, int, int]], period: int) -> None:
    """Stable rule: a file is ready only when it has been seen with the same size and mtime for at least
    the period, on at least two observations."""
    tracker = Tracker(StableRule(period))
    now = 0
    history: list[tuple[int, int, int]] = []
    for size, mtime, dt in steps:
        now += dt
        history.append((now, size, mtime))
        ready = b"a" in tracker.observe([f(b"a", size, mtime)], now).ready_names
        # the run of identical observations ending now
        start = now
        for t, s, m in reversed(history):
            if (s, m) != (size, mtime):
                break
            start = t
        run = [h for h in history if h[0] >= start]
        assert ready == (len(run) >= 2 and now - start >= period)
