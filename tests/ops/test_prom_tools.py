"""tests.lab.prom fetches promtool and prometheus from Debian's package on a fresh machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import UnavailableError
from tests.lab.prom import find_prometheus_tools


def test_fetch_into_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No promtool on PATH, empty cache: apt-get download + dpkg -x, then reused without fetching."""
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    cache = tmp_path / "tools"
    tools = find_prometheus_tools(cache)
    assert tools.promtool == cache / "prometheus/usr/bin/promtool"
    assert tools.version().startswith("promtool, version 2.")
    assert not list(cache.glob("fetch-*")), "temporary download directory left behind"
    assert find_prometheus_tools(cache, fetch=False) == tools


def test_no_fetch_means_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    with pytest.raises(UnavailableError, match="promtool not on PATH"):
        find_prometheus_tools(tmp_path / "empty", fetch=False)
