"""A TOML table read strictly: the reader every config file of jgw goes through.

Take what you know (typed: strings, integers, durations, sizes, paths, sub-tables), then ``done()``
refuses the rest, so a misspelt key is an error naming the file and the key path, never a silent
default. A leaf module: the node config, the audit settings, the route catalog and the stages all
read their tables with it.

Security: reads values from files written by staff; shows URLs only through ``redact_url``.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import ConfigError

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2,
               "GB": 1000**3}

T = TypeVar("T")
_MISSING: Any = object()


def parse_duration(text: str | int | float) -> float:
    """'250ms', '5s', '2m', '1h', '7d' or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as '5s', got a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"expected a duration such as '250ms', '5s', '2m', '1h' or '7d', got {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text: str | int) -> int:
    """'512', '64KiB', '8MiB' (binary) or '1MB' (decimal); a plain integer is bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as '8MiB', got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"expected a size such as '512', '64KiB' or '8MiB', got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def redact_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``; also for a URL that does not parse."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a URL that does not parse is masked by pattern below
    except ValueError:
        return re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


class Options:
    """One TOML table being read strictly: take what you know, then ``done()`` refuses the rest."""

    def __init__(self, file: str, path: str, table: Mapping[str, Any], base_dir: Path) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(file, path, f"expected a table, got {_kind(table)}")
        self.file = file
        self.path = path
        self.base_dir = base_dir
        self._table = dict(table)
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.key(name) if name else self.path, reason)

    def has(self, name: str) -> bool:
        return name in self._table

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._seen.add(name)
        if name in self._table:
            return self._table[name]
        if default is _MISSING:
            raise self.error(name, "required key is missing")
        return default

    def _typed(self, name: str, kind: type[T] | tuple[type, ...], default: Any, what: str) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) and kind is not bool:
            raise self.error(name, f"expected {what}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(name, f"expected {what}, got {_kind(value)}")
        return value

    def str(self, name: builtins.str, default: Any = _MISSING, *, pattern: re.Pattern[str] | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
        value = self._typed(name, builtins.str, default, "a string")
        if value is default and default is not _MISSING:
            return value
        if choices is not None and value not in choices:
            raise self.error(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.error(name, f"{value!r} does not match {pattern.pattern}")
        return value

    def int(self, name: builtins.str, default: Any = _MISSING, *, min: builtins.int | None = None,
            max: builtins.int | None = None) -> Any:
        value = self._typed(name, int, default, "an integer")
        if value is default and default is not _MISSING:
            return value
        if min is not None and value < min:
            raise self.error(name, f"must be at least {min}, got {value}")
        if max is not None and value > max:
            raise self.error(name, f"must be at most {max}, got {value}")
        return value

    def bool(self, name: builtins.str, default: Any = _MISSING) -> Any:
        return self._typed(name, bool, default, "true or false")

    def duration(self, name: builtins.str, default: Any = _MISSING, *, min: builtins.float | None = None) -> Any:
        value = self.raw(name, default)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except (ValueError, TypeError) as exc:
            raise self.error(name, str(exc)) from exc
        if min is not None and seconds < min:
            raise self.error(name, f"must be at least {min}s, got {seconds}s")
        return seconds

    def size(self, name: builtins.str, default: Any = _MISSING) -> builtins.int:
        value = self.raw(name, default)
        try:
            return parse_size(value)
        except (ValueError, TypeError) as exc:
            raise self.error(name, str(exc)) from exc

    def path_value(self, name: builtins.str, default: Any = _MISSING) -> Any:
        value = self._typed(name, builtins.str, default, "a path")
        if value is None or (value is default and default is not _MISSING and not isinstance(value, builtins.str)):
            return value
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)

    def list(self, name: builtins.str, default: Any = _MISSING) -> Any:
        return self._typed(name, list, default, "a list")

    def table(self, name: builtins.str, default: Any = _MISSING) -> Options:
        value = self.raw(name, default)
        return Options(self.file, self.key(name), value, self.base_dir)

    def tables(self) -> Iterator[tuple[builtins.str, Options]]:
        """Every key of this table, each read as a sub-table (for [brokers.X], [routes.X])."""
        for name in list(self._table):
            yield name, self.table(name)

    def done(self) -> None:
        unknown = sorted(set(self._table) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling; see docs/configuration.md)")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)
