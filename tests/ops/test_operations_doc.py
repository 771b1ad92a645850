"""docs/operations.md and the runbooks keep up with the code."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
RUNBOOKS = REPO / "ops" / "runbooks"


def exported_names() -> set[str]:
    """Metric names as a scraper sees them (counters with _total, info with _info)."""
    names = set()
    for fam in Metrics("doc-check").registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(fam.type, "")
        names.add(fam.name + suffix)
    return names


def test_every_metric_is_documented() -> None:
    documented = set(re.findall(r"^\| `(jgw_\w+)` \|", DOC.read_text(), flags=re.M))
    assert exported_names() - documented == set(), "metrics missing from docs/operations.md"
    assert documented - exported_names() == set(), "docs/operations.md lists metrics that do not exist"


def test_every_alert_is_in_the_doc_table() -> None:
    rules = (REPO / "ops/prometheus/rules.yml").read_text()
    alerts = set(re.findall(r"^\s+- alert: (\w+)$", rules, flags=re.M))
    documented = set(re.findall(r"^\| (Jgw\w+) \|", DOC.read_text(), flags=re.M))
    assert alerts == documented


def test_runbooks_exist_in_both_languages() -> None:
    """Every runbook has an English and a Japanese version, and the index links them."""
    en = {p.name.removesuffix(".en.md") for p in RUNBOOKS.glob("*.en.md")}
    ja = {p.name.removesuffix(".ja.md") for p in RUNBOOKS.glob("*.ja.md")}
    assert en == ja
    assert {"install", "first-start", "dashboard", "replay-dead-letters", "alerts"} <= en
    index = (RUNBOOKS / "README.md").read_text()
    for name in {"install", "first-start", "dashboard", "replay-dead-letters", "alerts"}:
        assert f"({name}.en.md)" in index and f"({name}.ja.md)" in index


def test_runbook_links_resolve() -> None:
    """Relative links between runbooks point at files that exist."""
    for page in RUNBOOKS.glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (RUNBOOKS / target).exists(), f"{page.name} links to missing {target}"
