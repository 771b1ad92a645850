"""The ``[audit]`` settings: directory, retention periods (番号法 §23: 7 years for 特定個人情報), segment size and age.

Security: reads one config table.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from gateway.options import Options
from gateway.policy.redact import ID_KEY_NAME


def add_years(ts: float, years: int) -> float:
    """``ts`` plus calendar years (29 February → 1 March), as 番号法 periods are counted."""
    d = dt.datetime.fromtimestamp(ts, dt.UTC)
    try:
        moved = d.replace(year=d.year + years)
    except ValueError:
        moved = d.replace(year=d.year + years, month=3, day=1)
    return calendar.timegm(moved.utctimetuple()) + moved.microsecond / 1e6


@dataclass(frozen=True)
class Period:
    """A retention period: whole calendar years plus seconds ("7y", "400d", "12h")."""

    years: int = 0
    seconds: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Period:
        m = re.fullmatch(r"\s*(\d+)\s*(y|d|h|s)\s*", text)
        if not m:
            raise ValueError(f"expected a period such as '7y', '400d' or '12h', got {text!r}")
        n, unit = int(m.group(1)), m.group(2)
        if unit == "y":
            return cls(years=n)
        return cls(seconds=n * {"d": 86400.0, "h": 3600.0, "s": 1.0}[unit])

    def after(self, ts: float) -> float:
        return add_years(ts, self.years) + self.seconds

    def __str__(self) -> str:
        if self.years and not self.seconds:
            return f"{self.years}y"
        if self.seconds % 86400 == 0 and not self.years:
            return f"{int(self.seconds // 86400)}d"
        return f"{self.years}y+{self.seconds:g}s"


@dataclass(frozen=True)
class Retention:
    """How long segments are kept after their last record.

    A segment holding any record of a route that carries 特定個人情報 keeps ``specific`` (default 7
    years: 番号法 §23 情報提供等の記録); any other segment keeps ``general``.
    """

    specific: Period = Period(years=7)
    general: Period = Period(years=7)
    specific_routes: frozenset[str] = frozenset()

    def is_specific(self, route: str | None) -> bool:
        return route is not None and route in self.specific_routes


@dataclass(frozen=True)
class AuditSettings:
    directory: Path
    retention: Retention
    segment_bytes: int
    segment_age: float
    #: The node's id-digest key (gateway.policy.redact.IdKey): the same file the log filter uses.
    id_key_file: Path | None = None


def audit_settings(opt: Options, state_dir: Path, specific_routes: frozenset[str]) -> AuditSettings:
    """Read the optional ``[audit]`` table strictly (for gateway.config). ``specific_routes`` are the
    routes that touch 特定個人情報 (the config says which: those that may carry the 個人番号 or name a
    seed flow)."""
    directory = opt.path_value("dir", None) or state_dir / "audit"
    periods = {}
    for key in ("retention_specific", "retention_general"):
        raw = opt.str(key, "7y")
        try:
            periods[key] = Period.parse(raw)
        except ValueError as exc:
            raise opt.error(key, str(exc)) from exc
    size = opt.size("segment_size", "64MiB")
    if size < 4096:
        raise opt.error("segment_size", "must be at least 4KiB")
    age = opt.duration("segment_age", "1d", min=60.0)
    opt.done()
    retention = Retention(periods["retention_specific"], periods["retention_general"], specific_routes)
    return AuditSettings(Path(directory), retention, size, age, state_dir / ID_KEY_NAME)
