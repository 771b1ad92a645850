"""The example site configs load, pass the catalog, and pair up across the LGWAN link."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway import catalog, config
from gateway.errors import ConfigError
from gateway.options import Options
from gateway.policy.stage import config_warnings, policy_stage
from gateway.route.stages import NodeContext, Refusal
from tests.lab.sitefiles import install_file_material

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "examples"
SITES = ("cityhall.toml", "datacenter.toml")


@pytest.mark.parametrize("name", SITES)
def test_example_loads_and_every_route_passes_the_catalog(name: str) -> None:
    cfg = config.load(EXAMPLES / name)
    assert cfg.routes
    for route in cfg.routes.values():
        assert route.seed, f"{route.name} names no seed flow"
        assert catalog.check_route(route) is None, route.name
        assert catalog.advise_route(route) == [], route.name
        assert config_warnings(route) == [], route.name


def test_cityhall_covers_the_issues_flows() -> None:
    """本人確認情報 update, 特例転入 receipt, 符号 request, OCR → data centre are all there; the OCR
    file route takes files from the OCR system's SFTP server, 庁内 file flows come in through jgw's
    endpoint, one of them forbidden (the policy scans its files)."""
    cfg = config.load(EXAMPLES / "cityhall.toml")
    seeds = {r.seed for r in cfg.routes.values()}
    assert {"jimu:1-⑥", "jimu:7-④", "jimu:5-②/2", "ido-ocr:⑤"} <= seeds
    assert not any(s and s.startswith("shinsei:") for s in seeds)
    assert cfg.routes["ido-file-to-dc"].source.kind == "sftp" and "seal" in cfg.routes["ido-file-to-dc"].stage_tables
    assert cfg.routes["atena-renkei"].source.kind == "endpoint" and cfg.routes["atena-renkei"].sink.kind == "sftp"
    assert cfg.routes["fukuhon-update"].personal_number == "forbidden" and cfg.routes["fukuhon-update"].sink.is_file
    dc = config.load(EXAMPLES / "datacenter.toml")
    assert dc.routes["ido-file-store"].sink.kind == "directory"


def test_the_lgwan_link_pairs_up() -> None:
    """City hall publishes to the data centre's jgw.in/ido-file; the data centre consumes exactly that."""
    out = config.load(EXAMPLES / "cityhall.toml").routes["ido-file-to-dc"]
    dc = config.load(EXAMPLES / "datacenter.toml")
    inbound = dc.routes["ido-file-store"]
    assert out.seed == inbound.seed == "ido-ocr:⑤"
    assert out.sink.broker == "datacenter"
    binding = inbound.source.bind[0]
    assert (binding.exchange, binding.routing_key) == (out.sink.exchange, out.sink.routing_key)


@pytest.mark.parametrize("seed,pn", [("shinsei:③", "forbidden"), ("shinsei:①", "allowed"),
                                     ("jimu:1-⑧", "allowed"), ("jimu:3-②", "allowed")])
def test_adding_a_refused_route_to_the_cityhall_is_caught(tmp_path: Path, seed: str, pn: str) -> None:
    """A 申請受付支援 route, or one looser than the catalog, is refused with a reason."""
    data = tomllib.loads((EXAMPLES / "cityhall.toml").read_text(encoding="utf-8"))
    data["routes"]["attempt"] = {"seed": seed, "personal_number": pn, "payload_encoding": "cp932",
                                 "source": {"broker": "local", "queue": "shinsei.out"},
                                 "sink": {"broker": "local", "exchange": "gyomu.in"}}
    with pytest.raises(ConfigError) as err:
        config.parse(data, "cityhall.toml", tmp_path)
    assert err.value.key == "routes.attempt.seed" and err.value.reason


def test_forbidden_routes_build_a_working_policy_stage(tmp_path: Path) -> None:
    """Every forbidden route of the city hall gets a policy stage that can scan its encoding."""
    from gateway.message import Message
    cfg = config.load(EXAMPLES / "cityhall.toml")
    node = NodeContext(node_id="cityhall", config_file=cfg.file, state_dir=tmp_path, certs_dir=tmp_path)
    forbidden = [r for r in cfg.routes.values() if r.personal_number == "forbidden"]
    assert len(forbidden) >= 10
    for route in forbidden:
        stage = policy_stage(Options(str(cfg.file), f"routes.{route.name}.policy", {}, tmp_path), route, node)
        result = stage.process([Message(message_id="m", route=route.name, body=b"ok")])
        assert not isinstance(result[0], Refusal), route.name


@pytest.fixture(scope="module")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates for both sites, made the way staff make them for a rehearsal (jgw pki init-dev)."""
    import datetime as dt

    from gateway.pki.devinit import init_dev

    root = tmp_path_factory.mktemp("pki") / "pki"
    init_dev(root, ["cityhall", "datacenter"], dt.datetime.now(dt.UTC))
    return root


@pytest.mark.parametrize("name", SITES)
def test_jgw_check_config_accepts_the_examples(name: str, dev_pki: Path, tmp_path: Path) -> None:
    """The real CLI, as an operator runs it on a site whose certificates, SFTP keys and pins and
    directories are installed, exits 0 and lists each route with its seed reference (the sealed
    route's keys, the file routes' keys, pins and directories are checked too)."""
    site = name.removesuffix(".toml")
    secret = tmp_path / "broker.password"
    secret.write_text("rehearsal\n")
    secret.chmod(0o600)
    text = (EXAMPLES / name).read_text(encoding="utf-8").replace('certs_dir = "/etc/jgw/certs"',
                                                                  f'certs_dir = "{dev_pki / site}"') \
        .replace('password_file = "/etc/jgw/broker-local.password"', f'password_file = "{secret}"') \
        .replace('"/var/spool/jgw/', f'"{tmp_path}/spool/').replace('"/srv/jgw/', f'"{tmp_path}/srv/')
    for d in ("spool/kizon-juki", "spool/kizon-gyomu", "srv/ido-store"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
    draft = tmp_path / f"draft-{name}"
    draft.write_text(text, encoding="utf-8")
    install_file_material(config.load(draft), dev_pki / site)
    copy = tmp_path / name
    copy.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(copy)],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for route in config.load(copy).routes.values():
        assert f"{route.name} [{route.seed}]" in proc.stdout


def test_check_config_refuses_a_sealed_route_without_certificates(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(EXAMPLES / "cityhall.toml")],
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode in (77, 78), proc.stderr
    assert "/etc/jgw/certs" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_key_in_an_example_style_route_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLES / "datacenter.toml").read_text(encoding="utf-8").replace(
        'personal_number = "allowed"', 'personal_numbr = "allowed"'), encoding="utf-8")
    with pytest.raises(ConfigError):
        config.load(bad)


def run_routes(argv: list[str]) -> int:
    import argparse

    from gateway.commands import routes
    parser = argparse.ArgumentParser(prog="jgw")
    routes.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_jgw_routes_lists_routes_with_seed_references(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_routes(["routes", str(EXAMPLES / "cityhall.toml")]) == 0
    out = capsys.readouterr().out
    assert "honnin-update" in out and "jimu:1-⑥" in out and "本人確認情報の更新" in out


def test_jgw_routes_exits_78_on_a_refused_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text((EXAMPLES / "datacenter.toml").read_text(encoding="utf-8").replace(
        'seed = "ido-ocr:⑤"', 'seed = "shinsei:③"'), encoding="utf-8")
    assert main(["routes", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "routes.ido-file-store.seed" in err and "no data linkage" in err


def test_jgw_routes_catalog_lists_all_flows(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_routes(["routes", "--catalog", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 111
