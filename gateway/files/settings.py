"""File routes in the node config: SFTP servers jgw logs in to, jgw's own SFTP endpoint, and the
file side of a route's source and sink, read strictly (``gateway.options``) like the rest.

    [sftp.NAME]                     an SFTP server jgw logs in to (a business system's, OpenSSH)
    host, port = 22, user           where and as whom
    client_key                      jgw's private key, relative to node.certs_dir (mode 0600)
    known_hosts                     the pinned host key(s), OpenSSH format, relative to node.certs_dir
    connect_timeout = "15s", keepalive_interval = "30s"

    [endpoint]                      jgw's own SFTP server, for business systems that push
    listen = "0.0.0.0:2222", host_key (relative to node.certs_dir, 0600), login_timeout = "30s"
    [endpoint.accounts.NAME]        one per business system
    authorized_keys, directory      its public keys (OpenSSH format) and its spool directory

    [routes.R.source]   kind = "spool"    directory = LOCAL PATH
                        kind = "sftp"     server = NAME, directory = REMOTE PATH
                        kind = "endpoint" account = NAME
                        completion = { rule = "trigger", suffixes = [".end", ".ok"] }
                                   | { rule = "rename", prefixes = ["."], suffixes = [".tmp", ".part"] }
                                   | { rule = "stable", seconds = "30s" }
                        after = "done" | "remove", scan_interval = "2s", chunk_size = "4MiB",
                        in_order = false
    [routes.R.sink]     kind = "directory" directory = LOCAL PATH, fsync = true
                        kind = "sftp"      server = NAME, directory = REMOTE PATH,
                                           verify = "readback" | "size"
                        partial_timeout = "24h"

Relative local directories are relative to the config file; key files to ``node.certs_dir``, where
``jgw certs`` keeps the node's other keys.

Security: reads configuration only; the key files are checked (mode, parse) by
``gateway.service.preflight`` and the adapters, never here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.files.completion import RenameRule, Rule, StableRule, TriggerRule
from gateway.options import Options

SOURCE_KINDS = ("amqp", "spool", "sftp", "endpoint")
SINK_KINDS = ("amqp", "directory", "sftp")
FILE_SOURCES = frozenset({"spool", "sftp", "endpoint"})
FILE_SINKS = frozenset({"directory", "sftp"})

#: A file route's frames carry this header: the file id, the route book's ordering key at every hop.
H_FILE = "x-jgw-file"
#: A source with ``in_order``: the one ordering key of all its frames (files strictly one at a time).
H_FILE_ORDER = "x-jgw-file-order"

DEFAULT_CHUNK = 4 * 1024 * 1024
MIN_CHUNK = 64 * 1024
MAX_CHUNK = 64 * 1024 * 1024
#: A file route holds at most prefetch frames in memory: prefetch × chunk_size must stay below this.
MAX_HELD = 512 * 1024 * 1024
#: Room for a frame's header (and more) above its chunk in a route's max_size.
FRAME_OVERHEAD = 4096
FILE_PREFETCH = 8
SERVER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ACCOUNT_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # as gateway.files.endpoint (not imported: asyncssh)


@dataclass(frozen=True)
class SftpServer:
    name: str
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    connect_timeout: float = 15.0
    keepalive_interval: float = 30.0

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class EndpointAccount:
    name: str
    authorized_keys: Path
    directory: Path


@dataclass(frozen=True)
class EndpointConfig:
    host: str
    port: int
    host_key: Path
    accounts: Mapping[str, EndpointAccount]
    login_timeout: float = 30.0


@dataclass(frozen=True)
class Completion:
    """The route's completion rule as written; ``rule()`` builds the pure rule object."""

    kind: Literal["trigger", "rename", "stable"]
    suffixes: tuple[bytes, ...] = ()
    prefixes: tuple[bytes, ...] = ()
    seconds: float = 0.0

    def rule(self) -> Rule:
        if self.kind == "trigger":
            return TriggerRule(self.suffixes)
        if self.kind == "rename":
            return RenameRule(self.prefixes, self.suffixes)
        return StableRule(self.seconds)

    def describe(self) -> str:
        if self.kind == "trigger":
            return "trigger " + ",".join(s.decode() for s in self.suffixes)
        if self.kind == "rename":
            return "rename " + ",".join(s.decode() for s in (*self.prefixes, *self.suffixes))
        return f"stable {self.seconds:g}s"


@dataclass(frozen=True)
class FileSourceConfig:
    kind: str
    directory: str  # a local path (spool, endpoint: the account's) or a remote one (sftp)
    completion: Completion
    server: str | None = None
    account: str | None = None
    after: Literal["done", "remove"] = "done"
    scan_interval: float = 2.0
    chunk_size: int = DEFAULT_CHUNK
    #: files strictly one after the other, oldest first (for flows whose order matters: 異動 per person)
    in_order: bool = False

    def describe(self) -> str:
        where = {"spool": "spool", "sftp": f"sftp {self.server}", "endpoint": f"endpoint account {self.account}"}
        return f"{where[self.kind]}:{self.directory} ({self.completion.describe()}, after {self.after})"


@dataclass(frozen=True)
class FileSinkConfig:
    kind: str
    directory: str
    server: str | None = None
    verify: Literal["readback", "size"] = "readback"
    fsync: bool = True
    partial_timeout: float = 86400.0

    def describe(self) -> str:
        where = "directory" if self.kind == "directory" else f"sftp {self.server}"
        return f"{where}:{self.directory}"


@dataclass(frozen=True)
class FileSettings:
    """What the node config holds for files beyond the routes."""

    sftp: Mapping[str, SftpServer] = field(default_factory=dict)
    endpoint: EndpointConfig | None = None


def _key_path(opt: Options, key: str, certs_dir: Path) -> Path:
    raw = opt.str(key)
    if not raw:
        raise opt.error(key, "a path is required")
    p = Path(raw)
    return p if p.is_absolute() else certs_dir / p


def _hostport(opt: Options, key: str, default: str) -> tuple[str, int]:
    text = opt.str(key, default)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise opt.error(key, f"expected HOST:PORT such as '0.0.0.0:2222', got {text!r}")
    return host.strip("[]"), int(port)


def parse_sftp(opt: Options, certs_dir: Path) -> dict[str, SftpServer]:
    out: dict[str, SftpServer] = {}
    for name, s in opt.tables():
        if not SERVER_RE.match(name):
            raise s.error("", f"SFTP server name must match {SERVER_RE.pattern}")
        out[name] = SftpServer(
            name=name, host=s.str("host"), port=s.int("port", 22, min=1, max=65535), user=s.str("user"),
            client_key=_key_path(s, "client_key", certs_dir), known_hosts=_key_path(s, "known_hosts", certs_dir),
            connect_timeout=s.duration("connect_timeout", "15s", min=0.5),
            keepalive_interval=s.duration("keepalive_interval", "30s", min=1.0))
        if not out[name].host or not out[name].user:
            raise s.error("host" if not out[name].host else "user", "must not be empty")
        s.done()
    opt.done()
    return out


def parse_endpoint(opt: Options, certs_dir: Path) -> EndpointConfig:
    host, port = _hostport(opt, "listen", "0.0.0.0:2222")
    host_key = _key_path(opt, "host_key", certs_dir)
    login_timeout = opt.duration("login_timeout", "30s", min=1.0)
    accounts: dict[str, EndpointAccount] = {}
    acc = opt.table("accounts")
    for name, a in acc.tables():
        if not ACCOUNT_RE.fullmatch(name):
            raise a.error("", "account name: lowercase letters, digits, '_' and '-', at most 32, "
                              "starting with a letter or '_'")
        accounts[name] = EndpointAccount(name, authorized_keys=_key_path(a, "authorized_keys", certs_dir),
                                         directory=a.path_value("directory"))
        a.done()
    if not accounts:
        raise acc.error("", "at least one account")
    dirs = [str(a.directory) for a in accounts.values()]
    if len(set(dirs)) != len(dirs):
        raise acc.error("", "two accounts share one directory")
    acc.done()
    opt.done()
    return EndpointConfig(host=host, port=port, host_key=host_key, accounts=accounts, login_timeout=login_timeout)


def _bytes_list(opt: Options, key: str, default: list[str]) -> tuple[bytes, ...]:
    values = opt.list(key, default)
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v or "/" in v or "\0" in v:
            raise opt.error(f"{key}[{i}]", "expected a non-empty string without '/'")
        out.append(v.encode("utf-8"))
    return tuple(out)


def parse_completion(opt: Options) -> Completion:
    kind = opt.str("rule", choices=("trigger", "rename", "stable"))
    if kind == "trigger":
        suffixes = _bytes_list(opt, "suffixes", [".end", ".ok"])
        if not suffixes:
            raise opt.error("suffixes", "at least one trigger suffix")
        c = Completion("trigger", suffixes=suffixes)
    elif kind == "rename":
        prefixes = _bytes_list(opt, "prefixes", ["."])
        suffixes = _bytes_list(opt, "suffixes", [".tmp", ".part", ".filepart"])
        if not prefixes and not suffixes:
            raise opt.error("suffixes", "at least one temporary prefix or suffix")
        c = Completion("rename", suffixes=suffixes, prefixes=prefixes)
    else:
        c = Completion("stable", seconds=opt.duration("seconds", "30s", min=0.0))
    opt.done()
    return c


def _directory(opt: Options, *, local: bool) -> str:
    if local:
        return str(opt.path_value("directory"))
    raw: str = opt.str("directory")
    if not raw or "\0" in raw:
        raise opt.error("directory", "a remote directory path is required")
    return raw


def parse_file_source(opt: Options, kind: str, files: FileSettings) -> FileSourceConfig:
    server = account = None
    if kind == "sftp":
        server = opt.str("server")
        if server not in files.sftp:
            known = ", ".join(sorted(files.sftp)) or "(none)"
            raise opt.error("server", f"no SFTP server named {server!r} in [sftp] (known: {known})")
        directory = _directory(opt, local=False)
    elif kind == "endpoint":
        account = opt.str("account")
        if files.endpoint is None or account not in files.endpoint.accounts:
            known = ", ".join(sorted(files.endpoint.accounts)) if files.endpoint else "(no [endpoint])"
            raise opt.error("account", f"no endpoint account named {account!r} (known: {known})")
        directory = str(files.endpoint.accounts[account].directory)
    else:
        directory = _directory(opt, local=True)
    completion = parse_completion(opt.table("completion"))
    after = opt.str("after", "done", choices=("done", "remove"))
    scan_interval = opt.duration("scan_interval", "2s", min=0.05)
    chunk_size = opt.size("chunk_size", "4MiB")
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK or chunk_size % 4096:
        raise opt.error("chunk_size", "must be a multiple of 4KiB between 64KiB and 64MiB")
    in_order = opt.bool("in_order", False)
    opt.done()
    return FileSourceConfig(kind=kind, directory=directory, completion=completion, server=server, account=account,
                            after=after, scan_interval=scan_interval, chunk_size=chunk_size, in_order=in_order)


def parse_file_sink(opt: Options, kind: str, files: FileSettings) -> FileSinkConfig:
    server = None
    verify: Any = "readback"
    fsync = True
    if kind == "sftp":
        server = opt.str("server")
        if server not in files.sftp:
            known = ", ".join(sorted(files.sftp)) or "(none)"
            raise opt.error("server", f"no SFTP server named {server!r} in [sftp] (known: {known})")
        directory = _directory(opt, local=False)
        verify = opt.str("verify", "readback", choices=("readback", "size"))
    else:
        directory = _directory(opt, local=True)
        fsync = opt.bool("fsync", True)
    partial_timeout = opt.duration("partial_timeout", "24h", min=1.0)
    opt.done()
    return FileSinkConfig(kind=kind, directory=directory, server=server, verify=verify, fsync=fsync,
                          partial_timeout=partial_timeout)
