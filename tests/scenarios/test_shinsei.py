"""Scenario: a route for the 申請受付支援システム (seed shinsei:①–③) is refused; nothing starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.scenarios.sites import World, catalog_route

EX_CONFIG = 78


def shinsei_config(world: World, ref: str) -> tuple[Path, str, str]:
    """The city hall's config with a legitimate route (jimu:1-⑥) and one that names ``ref``."""
    honnin_queue = world.q("kizon-juki.honnin-update")
    bad = world.r("shinsei-handover")
    path = world.write("cityhall", {
        world.r("honnin-update"): catalog_route(
            "jimu:1-⑥", source={"broker": "local", "queue": honnin_queue},
            sink={"broker": "local", "exchange": world.q("cs.in"), "routing_key": "honnin-update"}),
        bad: {"description": "申請書データの引継ぎ (申請受付支援 → 所管課)", "seed": ref,
              "personal_number": "forbidden", "payload_encoding": "utf-8",
              "source": {"broker": "local", "queue": world.q("shinsei.shinseisho")},
              "sink": {"broker": "local", "exchange": world.q("shokan-ka.in"), "routing_key": "shinseisho"}},
    })
    return path, bad, honnin_queue


def jgw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def assert_refused_for_no_linkage(result: subprocess.CompletedProcess[str], config: Path, route: str,
                                  ref: str) -> None:
    assert result.returncode == EX_CONFIG, result.stdout + result.stderr
    message = result.stderr.strip()
    assert f"{config}: routes.{route}.seed:" in message, message
    assert "no data linkage" in message and "データ連携はない" in message, message
    assert ref.split(":")[0] in message


@pytest.mark.parametrize("ref", ["shinsei:①", "shinsei:②", "shinsei:③", "shinsei:3"])
def test_check_config_refuses_a_route_naming_a_shinsei_flow(world: World, ref: str) -> None:
    """Seed shinsei:①–③ (申請受付支援システムファイル): 「申請受付支援システムと他業務システム間でのデータ
    連携はない」. Whichever of its flows a route names (in the seed's digit or in ASCII), ``jgw
    check-config`` exits 78 naming the file, ``routes.NAME.seed``, and that there is no linkage."""
    config, bad, _ = shinsei_config(world, ref)
    assert_refused_for_no_linkage(jgw("check-config", str(config)), config, bad, ref)


def test_jgw_run_refuses_a_shinsei_route_and_starts_nothing(world: World) -> None:
    """Seed shinsei:③ (所管課への申請書データの引継ぎ, handed over by staff, never a system link).
    ``jgw run`` exits 78 at once with the same one-line reason, and starts nothing: no route of the
    config (not even the legitimate jimu:1-⑥ one) declared its queue, no state directory, no control
    socket, no audit trail."""
    config, bad, honnin_queue = shinsei_config(world, "shinsei:③")
    site = world.sites["cityhall"]
    result = jgw("run", str(config), timeout=30)
    assert_refused_for_no_linkage(result, config, bad, "shinsei:③")
    assert not site.state_dir.exists() and not site.control_socket.exists()
    with world.view("cityhall") as city:
        assert city.depth(honnin_queue) is None, "the legitimate route did not start either"
        assert city.depth(world.q("shinsei.shinseisho")) is None
