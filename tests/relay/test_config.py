"""Config validation: every error names the file, the key path and what is wrong; exit status 78."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.cli import main
from gateway.errors import ConfigError, NoInputError

GOOD = """\
[node]
id = "cityhall"
state_dir = "state"

[brokers.local]
urls = ["amqp://guest:guest@127.0.0.1:5672/%2F"]

[brokers.dc]
urls = ["amqp://u:secret@10.0.0.1:5671/dc", "amqp://u:secret@10.0.0.2:5671/dc"]

[defaults]
retry = ["1s", "10s"]

[routes.juki-to-cs]
seed = "jimu:1-⑥"
personal_number = "allowed"
payload_encoding = "cp932"
source = { broker = "local", queue = "juki.out" }
sink = { broker = "dc", exchange = "jgw.in", routing_key = "cs" }
ordering = { header = "x-person" }
max_size = "1MiB"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "jgw.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_good_config_parses_with_effective_values_and_their_origin(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, GOOD))
    r = cfg.routes["juki-to-cs"]
    assert r.retry == (1.0, 10.0) and r.origin["retry"] == "defaults"
    assert r.max_size == 1024 * 1024 and r.origin["max_size"] == "route"
    assert r.prefetch == 1000 and r.origin["prefetch"] == "built-in"
    assert r.ordering_header == "x-person"
    assert cfg.node.state_dir == (tmp_path / "state")
    assert cfg.brokers["dc"].describe() == "amqp://u:***@10.0.0.1:5671/dc, amqp://u:***@10.0.0.2:5671/dc"


BAD = [
    ("unknown key in a route", GOOD.replace('max_size = "1MiB"', 'max_sise = "1MiB"'),
     "routes.juki-to-cs.max_sise", "unknown key"),
    ("unknown top-level table", GOOD + "\n[extra]\nx = 1\n", "extra", "unknown key"),
    ("missing node id", GOOD.replace('id = "cityhall"\n', ""), "node.id", "required"),
    ("sink names a broker that does not exist", GOOD.replace('broker = "dc"', 'broker = "dx"'),
     "routes.juki-to-cs.sink.broker", "no broker named 'dx'"),
    ("bad duration", GOOD.replace('retry = ["1s", "10s"]', 'retry = ["1s", "ten"]'), "defaults.retry[1]",
     "expected a duration"),
    ("bad size", GOOD.replace('max_size = "1MiB"', 'max_size = "1 lot"'), "routes.juki-to-cs.max_size",
     "expected a size"),
    ("personal_number must be stated", GOOD.replace('personal_number = "allowed"\n', ""),
     "routes.juki-to-cs.personal_number", "required"),
    ("personal_number has two values only", GOOD.replace('"allowed"', '"maybe"'),
     "routes.juki-to-cs.personal_number", "must be one of"),
    ("wrong type", GOOD.replace('max_size = "1MiB"', 'prefetch = "many"'), "routes.juki-to-cs.prefetch",
     "expected an integer"),
    ("boolean is not an integer", GOOD.replace('max_size = "1MiB"', "prefetch = true"),
     "routes.juki-to-cs.prefetch", "got a boolean"),
    ("url scheme", GOOD.replace("amqp://guest", "http://guest"), "brokers.local.urls[0]", "expected amqp://"),
    ("url password is never shown", GOOD.replace("amqp://u:secret@10.0.0.1:5671/dc", "amqp://u:secret@/dc"),
     "brokers.dc.urls[0]", "***"),
    ("route name", GOOD.replace("[routes.juki-to-cs]", "[routes.Juki_To_CS]"), "routes.Juki_To_CS",
     "route name must match"),
    ("two routes on one source queue", GOOD + GOOD[GOOD.index("[routes.juki-to-cs]"):].replace(
        "[routes.juki-to-cs]", "[routes.second]"), "routes.second.source.queue", "already the source"),
    ("seal and open on one route", GOOD + "[routes.juki-to-cs.seal]\n[routes.juki-to-cs.open]\n",
     "routes.juki-to-cs.seal", "not both"),
    ("TOML syntax", GOOD.replace("[defaults]", "[defaults"), "", "TOML syntax error"),
    ("metrics address", GOOD.replace('state_dir = "state"', 'state_dir = "state"\nmetrics_listen = "9469"'),
     "node.metrics_listen", "HOST:PORT"),
    ("a route where the seed says there is no linkage", GOOD.replace("jimu:1-⑥", "shinsei:③"),
     "routes.juki-to-cs.seed", "no data linkage"),
    ("a seed reference the catalog does not know", GOOD.replace("jimu:1-⑥", "jimu:99-①"),
     "routes.juki-to-cs.seed", "99"),
    ("ordered retries longer than consumer_timeout allows", GOOD.replace('retry = ["1s", "10s"]',
                                                                         'retry = ["10m", "10m", "10m"]'),
     "defaults.retry", "retries in place"),
    ("a name that looks like a 個人番号", GOOD.replace('id = "cityhall"', 'id = "123456789018"'), "node.id",
     "may not look like a 個人番号"),
    ("unknown key in [audit]", GOOD + "\n[audit]\nretention = \"1y\"\n", "audit.retention", "unknown key"),
]


@pytest.mark.parametrize(("case", "text", "key", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_names_file_key_and_reason(tmp_path: Path, case: str, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        config_mod.load(path)
    assert err.value.file == str(path)
    assert err.value.key == key, case
    assert reason in err.value.reason, case
    assert "secret" not in str(err.value)


def test_audit_is_on_by_default_and_can_be_turned_off(tmp_path: Path) -> None:
    cfg = config_mod.load(write(tmp_path, GOOD))
    assert cfg.audit is not None and cfg.audit.directory == tmp_path / "state" / "audit"
    assert "juki-to-cs" in cfg.audit.retention.specific_routes, "a seed route keeps 7-year evidence"
    off = config_mod.load(write(tmp_path, GOOD + "\n[audit]\nenabled = false\n"))
    assert off.audit is None


def test_missing_file_is_no_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config file that is not there is EX_NOINPUT (66), as docs/operations.md says, naming the file."""
    with pytest.raises(NoInputError, match="config file not found"):
        config_mod.load(tmp_path / "nope.toml")
    assert main(["status", str(tmp_path / "nope.toml")]) == 66
    assert capsys.readouterr().err == f"jgw: {tmp_path / 'nope.toml'}: config file not found\n"


def test_check_config_prints_routes_and_marks_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "juki-to-cs [jimu:1-⑥]" in out
    assert "local:juki.out → (no stages) → dc:jgw.in/cs" in out
    assert "retry=1s,10s (default)" in out and "max_size=1MiB " in out, "sizes as written (issue 9 item 4)"
    assert "secret" not in out


def test_check_config_exit_78_with_one_line_for_a_bad_file(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("delivery_limit", "x").replace('max_size = "1MiB"', "delivery_limt = 3"))
    assert main(["check-config", str(path)]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"jgw: {path}: routes.juki-to-cs.delivery_limt: unknown key (check the spelling; "
                   "see docs/configuration.md)"]


def test_run_refuses_to_start_with_a_bad_config(tmp_path: Path) -> None:
    """The daemon must not start (and must not touch a broker) on a malformed config."""
    import subprocess
    import sys

    path = write(tmp_path, GOOD.replace('id = "cityhall"', 'id = "City Hall"'))
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "run", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 78
    assert "node.id" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()
