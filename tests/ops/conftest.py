"""Shared fixtures for the operations tests."""

from __future__ import annotations

import pytest

from tests.lab.prom import PrometheusTools, find_prometheus_tools


@pytest.fixture(scope="session")
def prom_tools() -> PrometheusTools:
    """promtool and prometheus, fetched from Debian's archive into the tools cache on first use."""
    return find_prometheus_tools()
