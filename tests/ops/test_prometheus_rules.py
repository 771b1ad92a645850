"""Alert rules: promtool checks them, promtool's unit tests pass, and they fit the metric set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from gateway.metrics import Metrics
from tests.lab.prom import PrometheusTools

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "ops" / "prometheus" / "rules.yml"
RULES_TEST = REPO / "ops" / "prometheus" / "rules_test.yml"


def promtool(tools: PrometheusTools, *args: str,
             stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tools.promtool), *args], capture_output=True, text=True, input=stdin,
                          cwd=RULES.parent, timeout=120)


def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), flags=re.M)


def test_promtool_check_rules(prom_tools: PrometheusTools) -> None:
    proc = promtool(prom_tools, "check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests(prom_tools: PrometheusTools) -> None:
    proc = promtool(prom_tools, "test", "rules", str(RULES_TEST))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_can_fail(prom_tools: PrometheusTools, tmp_path: Path) -> None:
    """A wrong threshold in a copy of the rules makes the unit tests fail: they test something."""
    (tmp_path / "rules.yml").write_text(RULES.read_text().replace("> 900", "> 9000"))
    (tmp_path / "rules_test.yml").write_text(RULES_TEST.read_text())
    proc = subprocess.run([str(prom_tools.promtool), "test", "rules", "rules_test.yml"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and "JgwQueueOldMessages" in proc.stdout + proc.stderr


def test_every_alert_is_tested_firing() -> None:
    """Each alert has at least one promtool case where it is expected to fire."""
    text = RULES_TEST.read_text()
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", text))
    assert set(alert_names()) - firing == set()


def test_rules_use_only_exported_metrics() -> None:
    """Every jgw_ name in the rules is a series gateway.metrics exports (catches renames)."""
    m = Metrics("rules-check")
    m.init_route("r")
    m.quarantined.labels("r", "x").inc()
    m.dead_lettered.labels("r", "x").inc()
    m.retries.labels("r", "x").inc()
    m.reloads.labels("failure").inc()
    m.broker_up.labels("b", "publish").set(1)
    m.broker_blocked.labels("b").set(0)
    m.reconnects.labels("b", "publish").inc()
    m.tls_failures.labels("b").inc()
    m.cert_expiry.labels("signing", "CN=x").set(1)
    m.crl_next_update.labels("CN=ca").set(1)
    m.e2e_latency.labels("r").observe(0.1)
    m.init_file_route("r", source=True)
    m.init_sftp("r", "s")
    m.queue_members_online.labels("r").set(3)
    m.queue_members_expected.labels("r").set(3)
    exported = {s.name for fam in m.registry.collect() for s in fam.samples}
    used = set(re.findall(r"\bjgw_[a-z_]+", RULES.read_text()))
    assert used - exported == set()


def test_exposition_passes_promtool_lint(prom_tools: PrometheusTools) -> None:
    """`promtool check metrics` accepts what the daemon serves (names, units, help, types)."""
    from prometheus_client import generate_latest

    m = Metrics("lint")
    m.init_route("juki-out")
    m.init_file_route("ido-file-to-dc", source=True)
    m.init_sftp("ido-file-to-dc", "ocr")
    proc = promtool(prom_tools, "check", "metrics", stdin=generate_latest(m.registry).decode())
    assert proc.returncode == 0, proc.stdout + proc.stderr
