"""File routes in the node config: the schema, its defaults, and every refusal naming FILE: key.path: reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.errors import ConfigError
from gateway.files.completion import RenameRule, StableRule, TriggerRule
from gateway.files.settings import FILE_PREFETCH, H_FILE

GOOD = """\
[node]
id = "cityhall"
state_dir = "state"
certs_dir = "certs"

[brokers.local]
urls = ["amqp://guest:guest@127.0.0.1:5672/%2F"]

[defaults]
prefetch = 500

[sftp.ocr]
host = "ocr-sv.example.lg.jp"
user = "jgw"
client_key = "sftp/jgw_ed25519"
known_hosts = "sftp/known_hosts"

[endpoint]
listen = "0.0.0.0:2222"
host_key = "sftp/endpoint_ed25519"

[endpoint.accounts.kizon-juki]
authorized_keys = "sftp/kizon-juki.pub"
directory = "/var/spool/jgw/kizon-juki"

[routes.ocr-out]
personal_number = "allowed"
source = { kind = "sftp", server = "ocr", directory = "/outbox", completion = { rule = "trigger" } }
sink = { broker = "local", exchange = "jgw.in", routing_key = "ido-file" }

[routes.juki-file]
personal_number = "allowed"
source = { kind = "endpoint", account = "kizon-juki", completion = { rule = "rename" }, after = "remove" }
sink = { kind = "directory", directory = "/srv/atena/in" }

[routes.store]
personal_number = "allowed"
source = { broker = "local", queue = "jgw.in.ido-file" }
sink = { kind = "sftp", server = "ocr", directory = "/store", verify = "size" }
"""


def load(tmp_path: Path, text: str) -> config_mod.Config:
    p = tmp_path / "jgw.toml"
    p.write_text(text, encoding="utf-8")
    return config_mod.load(p)


def test_file_routes_parse_with_their_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    ocr = cfg.files.sftp["ocr"]
    assert (ocr.port, ocr.user) == (22, "jgw")
    assert ocr.client_key == tmp_path / "certs" / "sftp" / "jgw_ed25519", "key files live in certs_dir"
    assert cfg.files.endpoint is not None and (cfg.files.endpoint.host, cfg.files.endpoint.port) == ("0.0.0.0", 2222)
    out = cfg.routes["ocr-out"]
    assert out.source.is_file and out.source.file is not None
    assert isinstance(out.source.file.completion.rule(), TriggerRule)
    assert out.source.file.completion.rule() == TriggerRule((b".end", b".ok"))
    assert out.source.file.after == "done" and out.source.file.chunk_size == 4 * 1024 * 1024
    assert out.prefetch == FILE_PREFETCH, "[defaults] prefetch is for messages: a file route holds frames"
    assert out.ordering_header is None, "a file source orders its frames itself"
    juki = cfg.routes["juki-file"]
    assert juki.source.file is not None and juki.source.file.directory == "/var/spool/jgw/kizon-juki"
    assert isinstance(juki.source.file.completion.rule(), RenameRule) and juki.source.file.after == "remove"
    assert juki.sink.is_file and juki.sink.file is not None and juki.sink.file.fsync
    store = cfg.routes["store"]
    assert store.ordering_header == H_FILE, "frames over AMQP are ordered by their file id"
    assert store.sink.file is not None and store.sink.file.verify == "size"
    assert not cfg.routes["ocr-out"].sink.is_file, "AMQP stays the default"


def test_stable_rule_takes_seconds(tmp_path: Path) -> None:
    text = GOOD.replace('completion = { rule = "rename" }', 'completion = { rule = "stable", seconds = "45s" }')
    rule = load(tmp_path, text).routes["juki-file"].source.file.completion.rule()  # type: ignore[union-attr]
    assert rule == StableRule(45.0)


BAD = [
    ("unknown source kind", GOOD.replace('kind = "sftp", server', 'kind = "ftp", server'),
     "routes.ocr-out.source.kind", "must be one of"),
    ("unknown server", GOOD.replace('server = "ocr", directory = "/outbox"', 'server = "x", directory = "/o"'),
     "routes.ocr-out.source.server", "no SFTP server named 'x'"),
    ("unknown account", GOOD.replace('account = "kizon-juki"', 'account = "nobody"'),
     "routes.juki-file.source.account", "no endpoint account"),
    ("no completion rule", GOOD.replace(', completion = { rule = "trigger" }', ""),
     "routes.ocr-out.source.completion", "required"),
    ("unknown rule", GOOD.replace('rule = "trigger"', 'rule = "magic"'),
     "routes.ocr-out.source.completion.rule", "must be one of"),
    ("empty trigger suffixes", GOOD.replace('rule = "trigger"', 'rule = "trigger", suffixes = []'),
     "routes.ocr-out.source.completion.suffixes", "at least one"),
    ("a suffix with a slash", GOOD.replace('rule = "trigger"', 'rule = "trigger", suffixes = ["a/b"]'),
     "routes.ocr-out.source.completion.suffixes[0]", "without '/'"),
    ("unknown completion key", GOOD.replace('rule = "trigger"', 'rule = "trigger", second = 1'),
     "routes.ocr-out.source.completion.second", "unknown key"),
    ("after", GOOD.replace('after = "remove"', 'after = "delete"'), "routes.juki-file.source.after",
     "must be one of"),
    ("chunk size", GOOD.replace('completion = { rule = "trigger" }', 'completion = { rule = "trigger" }, '
                                                                     'chunk_size = "1KiB"'),
     "routes.ocr-out.source.chunk_size", "multiple of 4KiB"),
    ("max_size below the chunk", GOOD.replace('[routes.ocr-out]\n', '[routes.ocr-out]\nmax_size = "4MiB"\n'),
     "routes.ocr-out.max_size", "cannot carry a frame"),
    ("too much held in memory", GOOD.replace('[routes.ocr-out]\n', '[routes.ocr-out]\nprefetch = 1000\n'),
     "routes.ocr-out.prefetch", "in memory"),
    ("ordering on a file route", GOOD.replace('[routes.ocr-out]\n', '[routes.ocr-out]\nordering = { header = "x" }\n'),
     "routes.ocr-out.ordering", "ordered by file"),
    ("verify", GOOD.replace('verify = "size"', 'verify = "none"'), "routes.store.sink.verify", "must be one of"),
    ("sftp key missing", GOOD.replace('client_key = "sftp/jgw_ed25519"\n', ""), "sftp.ocr.client_key", "required"),
    ("sftp unknown key", GOOD.replace('user = "jgw"', 'user = "jgw"\npassword = "x"'), "sftp.ocr.password",
     "unknown key"),
    ("endpoint listen", GOOD.replace('listen = "0.0.0.0:2222"', 'listen = "2222"'), "endpoint.listen", "HOST:PORT"),
    ("endpoint account name", GOOD.replace("[endpoint.accounts.kizon-juki]", "[endpoint.accounts.Kizon]")
     .replace('account = "kizon-juki"', 'account = "Kizon"'), "endpoint.accounts.Kizon", "account name"),
    ("two routes on one directory", GOOD + '\n[routes.again]\npersonal_number = "allowed"\n'
     'source = { kind = "sftp", server = "ocr", directory = "/outbox", completion = { rule = "rename" } }\n'
     'sink = { broker = "local", exchange = "x" }\n', "routes.again.source.directory", "already the source"),
    ("sink into the source", GOOD.replace('sink = { kind = "directory", directory = "/srv/atena/in" }',
                                          'sink = { kind = "directory", directory = "/var/spool/jgw/kizon-juki" }'),
     "routes.juki-file.sink.directory", "own source directory"),
]


@pytest.mark.parametrize(("case", "text", "key", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_config_names_file_key_and_reason(tmp_path: Path, case: str, text: str, key: str,
                                                   reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.key == key, (case, err.value)
    assert reason in err.value.reason, (case, err.value)


# ------------------------------------------------------------------------------------ jgw check-config

def _site(tmp_path: Path) -> Path:
    """A node with an SFTP source, a spool source and a directory sink whose files exist."""
    from tests.lab.sshd import keygen, known_hosts_line, usable

    if usable() is not None and not Path("/usr/bin/ssh-keygen").exists():
        pytest.skip("ssh-keygen missing")
    certs = tmp_path / "certs" / "sftp"
    certs.mkdir(parents=True)
    keygen(certs / "jgw_ed25519")
    host = keygen(tmp_path / "host_ed25519")
    (certs / "known_hosts").write_text(known_hosts_line("ocr-sv.example.lg.jp", 22, host))
    for d in ("spool", "out"):
        (tmp_path / d).mkdir()
    text = f"""\
[node]
id = "cityhall"
state_dir = "{tmp_path / 'state'}"
certs_dir = "{tmp_path / 'certs'}"

[audit]
enabled = false

[sftp.ocr]
host = "ocr-sv.example.lg.jp"
user = "jgw"
client_key = "sftp/jgw_ed25519"
known_hosts = "sftp/known_hosts"

[routes.ocr-in]
personal_number = "allowed"
source = {{ kind = "sftp", server = "ocr", directory = "/outbox", completion = {{ rule = "trigger" }} }}
sink = {{ kind = "directory", directory = "{tmp_path / 'out'}" }}

[routes.local]
personal_number = "allowed"
source = {{ kind = "spool", directory = "{tmp_path / 'spool'}", completion = {{ rule = "stable", seconds = "10s" }} }}
sink = {{ kind = "sftp", server = "ocr", directory = "/inbox" }}
"""
    path = tmp_path / "jgw.toml"
    path.write_text(text)
    return path


def _check(path: Path) -> tuple[int, str, str]:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def test_check_config_accepts_a_site_with_file_routes_and_shows_them(tmp_path: Path) -> None:
    rc, out, err = _check(_site(tmp_path))
    assert rc == 0, err
    assert "sftp ocr:/outbox (trigger .end,.ok, after done)" in out
    assert f"directory:{tmp_path / 'out'}" in out and "sftp ocr:/inbox" in out


@pytest.mark.parametrize("case", ["key mode", "no pin", "missing directory", "sink not a directory", "bad key"])
def test_check_config_refuses_what_a_file_route_cannot_run_with(tmp_path: Path, case: str) -> None:
    path = _site(tmp_path)
    key = tmp_path / "certs" / "sftp" / "jgw_ed25519"
    if case == "key mode":
        key.chmod(0o644)
        want, where = 77, "chmod 600"
    elif case == "no pin":
        (tmp_path / "certs" / "sftp" / "known_hosts").write_text("")
        want, where = 78, "sftp.ocr.known_hosts: "
    elif case == "missing directory":
        (tmp_path / "spool").rmdir()
        want, where = 78, "routes.local.source.directory: "
    elif case == "sink not a directory":
        (tmp_path / "out").rmdir()
        (tmp_path / "out").write_text("")
        want, where = 78, "routes.ocr-in.sink.directory: "
    else:
        key.write_text("not a key\n")
        key.chmod(0o600)
        want, where = 78, "sftp.ocr.client_key: "
    rc, _out, err = _check(path)
    assert rc == want, err
    assert where in err and "Traceback" not in err


def test_a_pin_by_host_name_is_found(tmp_path: Path) -> None:
    """Real sites name their servers (ocr-sv.example.lg.jp): the pin is looked up by name, not as an
    address (asyncssh refuses a name where an address belongs)."""
    from gateway.files.sftp import SftpLink, SftpPeer
    from tests.lab.sshd import keygen, known_hosts_line

    host = keygen(tmp_path / "host_ed25519")
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line("ocr-sv.example.lg.jp", 2222, host))
    peer = SftpPeer("ocr-sv.example.lg.jp", 2222, "jgw", tmp_path / "k", known)
    _known, pinned = SftpLink(peer)._known_hosts()
    assert pinned
