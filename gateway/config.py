"""The node's TOML configuration: parsed strictly, validated early, frozen.

Every error names the file, the key path and what is wrong (``ConfigError``). Unknown keys are
errors, never ignored: a misspelt ``delivery_limt`` must not silently fall back to a default.
Values a route does not set come from ``[defaults]`` and then from the built-in defaults below;
``jgw check-config`` shows which is which.

Security: reads one local file written by staff. Broker passwords in URLs are redacted whenever a
URL is shown (``redact_url``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from gateway.audit.settings import AuditSettings, audit_settings
from gateway.catalog import check_route
from gateway.errors import ConfigError, NoInputError, PermissionError_
from gateway.files.settings import (
    FILE_PREFETCH,
    FILE_SINKS,
    FILE_SOURCES,
    FRAME_OVERHEAD,
    H_FILE,
    H_FILE_ORDER,
    MAX_HELD,
    SINK_KINDS,
    SOURCE_KINDS,
    FileSettings,
    FileSinkConfig,
    FileSourceConfig,
    parse_endpoint,
    parse_file_sink,
    parse_file_source,
    parse_sftp,
)
from gateway.options import Options, _kind, parse_duration, redact_url
from gateway.policy.redact import contains_personal_number

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
AMQP_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{0,200}$")
TOPIC_RE = re.compile(r"^[A-Za-z0-9_.:*#-]{0,200}$")

# Built-in route defaults. [defaults] in the file overrides these; a route overrides both.
ROUTE_DEFAULTS: dict[str, Any] = {
    "prefetch": 1000,
    "window": 1000,
    "retry": ["5s", "30s", "5m"],
    "delivery_limit": 20,
    "max_size": "8MiB",
    "dedup": True,
    "dedup_window": "7d",
    "ack_interval": "50ms",
}

#: Ordered routes hold a failing delivery while they retry it; stay well inside consumer_timeout.
ORDERED_RETRY_BUDGET = 25 * 60.0

@dataclass(frozen=True)
class TlsConfig:
    """mTLS to a broker: stdlib ssl, TLS >= 1.2, hostname checked, EXTERNAL auth by default.

    The client certificate and key are the node's ``tls-client`` slot of its live certificate
    generation (``node.certs_dir``, see certs/README.md), so a rotation changes them. The broker is
    verified against the node's trust anchors and CRLs unless ``ca``/``crl`` name its own.
    """

    server_hostname: str | None
    external_auth: bool
    ca: Path | None = None
    crl: Path | None = None


@dataclass(frozen=True)
class BrokerConfig:
    name: str
    urls: tuple[str, ...]
    heartbeat: int
    connect_timeout: float
    reconnect_min: float
    reconnect_max: float
    blocked_timeout: float | None
    tls: TlsConfig | None
    #: Where the password comes from when the URLs carry none (``with_password`` reads it).
    password_file: Path | None = None
    #: Name of a systemd credential (``LoadCredential=NAME:PATH``): ``$CREDENTIALS_DIRECTORY/NAME``.
    credential: str | None = None
    #: The password once read from its source; never shown (repr) and never in a URL.
    password: str | None = field(default=None, repr=False, compare=False)
    #: The config file this broker was read from, for messages about its password source.
    file: str = ""
    #: RabbitMQ management API base URLs (one per cluster node), asked for each quorum queue's
    #: members and leader (``gateway.cluster.members``); empty: replicas are not checked.
    management_urls: tuple[str, ...] = ()

    def describe(self) -> str:
        text = ", ".join(redact_url(u) for u in self.urls)
        if self.credential is not None:
            text += f" (password: systemd credential {self.credential}"
            text += f", else {self.password_file})" if self.password_file is not None else ")"
        elif self.password_file is not None:
            text += f" (password: {self.password_file})"
        return text


@dataclass(frozen=True)
class Binding:
    exchange: str
    routing_key: str
    exchange_type: str = "direct"


@dataclass(frozen=True)
class SourceConfig:
    """Where a route takes from: an AMQP queue (``kind = "amqp"``, the default), or files (``spool``,
    ``sftp``, ``endpoint``: ``file`` holds the rest; ``broker`` and ``queue`` are empty then)."""

    broker: str
    queue: str
    bind: tuple[Binding, ...] = ()
    kind: str = "amqp"
    file: FileSourceConfig | None = None

    @property
    def is_file(self) -> bool:
        return self.kind in FILE_SOURCES

    def describe(self) -> str:
        return self.file.describe() if self.file is not None else f"{self.broker}:{self.queue}"


@dataclass(frozen=True)
class SinkConfig:
    """Where a route delivers: an AMQP exchange (the default), or files (``directory``, ``sftp``)."""

    broker: str
    exchange: str
    routing_key: str
    #: When set, jgw declares this exchange (type) instead of only checking that it exists.
    exchange_type: str | None = None
    #: When set, jgw declares this quorum queue and binds it (a final delivery queue).
    queue: str | None = None
    kind: str = "amqp"
    file: FileSinkConfig | None = None

    @property
    def is_file(self) -> bool:
        return self.kind in FILE_SINKS

    def describe(self) -> str:
        if self.file is not None:
            return self.file.describe()
        return f"{self.broker}:{self.exchange or '(default)'}/{self.routing_key}"


@dataclass(frozen=True)
class RouteConfig:
    name: str
    source: SourceConfig
    sink: SinkConfig
    personal_number: Literal["allowed", "forbidden"]
    payload_encoding: str | None
    seed: str | None = None
    description: str = ""
    enabled: bool = True
    prefetch: int = 1000
    window: int = 1000
    retry: tuple[float, ...] = (5.0, 30.0, 300.0)
    delivery_limit: int = 20
    max_size: int = 8 * 1024 * 1024
    ordering_header: str | None = None
    dedup: bool = True
    dedup_window: float = 7 * 86400.0
    ack_interval: float = 0.05
    #: How instances share the source queue: "one" (one jgw instance runs the route, no standby; the
    #: queue keeps the arguments it always had), "single-active" (RabbitMQ single-active-consumer: one
    #: instance consumes, the others stand by) or "shared" (every instance consumes).
    consumers: Literal["one", "single-active", "shared"] = "shared"
    #: x-quorum-initial-group-size of the route's queues; None: the broker's default. Checked at start.
    replicas: int | None = None
    #: Publish the delivered ids to a replicated stream with each group commit (``gateway.cluster``).
    replicate: bool = False
    #: A process paused longer than this drops what it was about to publish (``gateway.cluster.fence``).
    fence_after: float = 1.0
    #: Raw tables for the stages this route uses ("open", "policy", "seal"), validated when the
    #: stages are built (``gateway.route.chain.build_stages``).
    stage_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Where each effective value came from: "route", "defaults" or "built-in".
    origin: Mapping[str, str] = field(default_factory=dict)
    #: Sizes and durations as written in the file (``"8MiB"``, ``"7d"``, ``["5s", "30s"]``), beside
    #: the parsed values above, so ``jgw check-config`` echoes what the operator wrote.
    written: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsTls:
    """TLS with client certificates for the metrics endpoint (required off loopback)."""

    cert: Path
    key: Path
    client_ca: Path


@dataclass(frozen=True)
class NodeConfig:
    id: str
    state_dir: Path
    certs_dir: Path
    metrics_listen: tuple[str, int] | None
    control_socket: Path
    shutdown_grace: float
    log_format: str
    log_level: str
    metrics_tls: MetricsTls | None = None


@dataclass(frozen=True)
class Config:
    file: Path
    node: NodeConfig
    brokers: Mapping[str, BrokerConfig]
    routes: Mapping[str, RouteConfig]
    #: Where and how long evidence is kept (gateway.audit.AuditSettings); None when [audit] enabled = false.
    audit: AuditSettings | None = None
    #: SFTP servers ([sftp.NAME]) and jgw's own SFTP endpoint ([endpoint]).
    files: FileSettings = field(default_factory=FileSettings)

    def route(self, name: str) -> RouteConfig:
        return self.routes[name]


def load(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key path and reason."""
    path = Path(path)
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise NoInputError(f"{shown}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(shown, "", "is a directory, not a config file") from exc
    except PermissionError as exc:
        raise PermissionError_(f"{shown}: cannot read the config file as uid {os.getuid()} "
                               f"({exc.strerror})") from exc
    except OSError as exc:
        raise ConfigError(shown, "", f"cannot read: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(shown, "", f"not UTF-8 (byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, "", f"TOML syntax error: {exc}") from exc
    return parse(data, shown, path.resolve().parent, path)


def parse(data: Mapping[str, Any], file: str, base_dir: Path, path: Path | None = None) -> Config:
    top = Options(file, "", data, base_dir)
    node = _parse_node(top.table("node"))
    brokers_opt = top.table("brokers", {})
    brokers = {name: _parse_broker(name, opt) for name, opt in brokers_opt.tables()}
    defaults_opt = top.table("defaults", {})
    defaults = _parse_defaults(defaults_opt)
    sftp = parse_sftp(top.table("sftp", {}), node.certs_dir)
    endpoint = parse_endpoint(top.table("endpoint"), node.certs_dir) if top.has("endpoint") else None
    files = FileSettings(sftp=sftp, endpoint=endpoint)
    routes_opt = top.table("routes", {})
    routes: dict[str, RouteConfig] = {}
    sources: dict[tuple[str, ...], str] = {}
    for name, opt in routes_opt.tables():
        route = _parse_route(name, opt, defaults, brokers, files)
        if route.source.file is not None:
            f = route.source.file
            key: tuple[str, ...] = (f.server or "local", f.directory)
            what = f"directory {f.directory!r}" + (f" on SFTP server {f.server!r}" if f.server else "")
            at = "source.directory" if f.kind != "endpoint" else "source.account"
        else:
            key = (route.source.broker, route.source.queue)
            what = f"queue {route.source.queue!r} on broker {route.source.broker!r}"
            at = "source.queue"
        if key in sources:
            raise opt.error(at, f"{what} is already the source of route {sources[key]!r}")
        sources[key] = name
        _check_against_catalog(route, opt)
        routes[name] = route
    if not brokers and (not routes or any(not r.source.is_file or not r.sink.is_file for r in routes.values())):
        raise brokers_opt.error("", "at least one broker is required (only a node whose routes all move files "
                                    "between directories needs none)")
    audit = _parse_audit(top.table("audit", {}), node, routes)
    top.done()
    return Config(file=path or Path(file), node=node, brokers=brokers, routes=routes, audit=audit, files=files)


def _check_against_catalog(route: RouteConfig, opt: Options) -> None:
    """A route naming a seed flow must agree with the catalog (no route where the seed says there is
    no linkage; never looser about the 個人番号 than the catalog)."""
    if route.seed is None:
        return
    reason = check_route(route)
    if reason:
        raise opt.error("seed", reason)


def _parse_audit(opt: Options, node: NodeConfig, routes: Mapping[str, RouteConfig]) -> AuditSettings | None:
    if not opt.bool("enabled", True):
        opt.done()
        return None
    specific = frozenset(r.name for r in routes.values() if r.personal_number == "allowed" or r.seed)
    return audit_settings(opt, node.state_dir, specific)


def _parse_node(opt: Options) -> NodeConfig:
    node_id = _name(opt, "id", opt.str("id", pattern=NAME_RE))
    # systemd's StateDirectory= sets $STATE_DIRECTORY (one path per configured directory)
    default_state = os.environ.get("STATE_DIRECTORY", "/var/lib/jgw").split(":")[0]
    state_dir = opt.path_value("state_dir", default_state)
    certs_dir = opt.path_value("certs_dir", str(opt.base_dir / "certs"))
    metrics = opt.str("metrics_listen", None)
    metrics_listen = None
    if metrics is not None:
        host, sep, port = metrics.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise opt.error("metrics_listen", f"expected HOST:PORT such as '127.0.0.1:9469', got {metrics!r}")
        metrics_listen = (host.strip("[]"), int(port))
    control = opt.path_value("control_socket", None) or Path(state_dir) / "control.sock"
    grace = opt.duration("shutdown_grace", "20s")
    log_format = opt.str("log_format", "logfmt", choices=("logfmt", "json"))
    log_level = opt.str("log_level", "info", choices=("debug", "info", "warning", "error"))
    metrics_tls = None
    if opt.has("metrics_tls"):
        t = opt.table("metrics_tls")
        metrics_tls = MetricsTls(cert=t.path_value("cert"), key=t.path_value("key"),
                                 client_ca=t.path_value("client_ca"))
        t.done()
    opt.done()
    return NodeConfig(id=node_id, state_dir=Path(state_dir), certs_dir=Path(certs_dir),
                      metrics_listen=metrics_listen, control_socket=Path(control), shutdown_grace=grace,
                      log_format=log_format, log_level=log_level, metrics_tls=metrics_tls)


def _name(opt: Options, key: str, name: str) -> str:
    """Names become queue names, metric labels and log fields: none may look like a 個人番号."""
    if contains_personal_number(name):
        raise opt.error(key, "a name may not look like a 個人番号 (it would appear in logs and metrics)")
    return name


CREDENTIAL_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,255}$")


def _check_url(opt: Options, i: int, url: Any, password_source: bool, *, external: bool = False) -> None:
    """Refuse a broker URL that pika could not use, naming ``urls[i]`` and why."""
    key = f"urls[{i}]"
    if not isinstance(url, str):
        raise opt.error(key, f"expected a string, got {_kind(url)}")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        if "IPv6" in str(exc):
            raise opt.error(key, f"unclosed '[' in an IPv6 address: {shown!r} (write IPv6 as "
                                 "amqp://[::1]:5672/VHOST)") from exc
        raise opt.error(key, f"bad port in {shown!r} (expected 1-65535)") from exc
    if parts.scheme not in ("amqp", "amqps"):
        raise opt.error(key, f"expected amqp://HOST[:PORT]/VHOST or amqps://…, got {shown!r}")
    if not host:
        raise opt.error(key, f"no host in {shown!r}")
    if port == 0:
        raise opt.error(key, f"bad port in {shown!r}")
    if parts.query or parts.fragment:
        raise opt.error(key, f"query parameters are not used in {shown!r}: set heartbeat, connect_timeout "
                             "and the like as keys of this broker")
    vhost = parts.path[1:] if parts.path.startswith("/") else parts.path
    if "/" in vhost:
        raise opt.error(key, f"the virtual host is one path segment (write '/' as %2F) in {shown!r}")
    if parts.username is not None and not parts.username:
        raise opt.error(key, f"empty user name in {shown!r}")
    if parts.password is not None and password_source:
        raise opt.error(key, "the password is in the URL and in password_file/credential: give it once "
                             "(preferably not in the config file)")
    if parts.username is not None and parts.password is None and not password_source and not external:
        raise opt.error(key, f"user {unquote(parts.username)!r} has no password: set password_file or "
                             "credential for this broker (see docs/configuration.md), or use TLS with "
                             "external_auth")


def _parse_broker(name: str, opt: Options) -> BrokerConfig:
    if not NAME_RE.match(name):
        raise opt.error("", f"broker name must match {NAME_RE.pattern}")
    _name(opt, "", name)
    urls = opt.list("urls")
    if not urls:
        raise opt.error("urls", "at least one URL is required")
    heartbeat = opt.int("heartbeat", 30, min=0, max=600)
    connect_timeout = opt.duration("connect_timeout", "10s", min=0.1)
    reconnect_min = opt.duration("reconnect_min", "0.5s", min=0.01)
    reconnect_max = opt.duration("reconnect_max", "30s", min=0.1)
    blocked_timeout = opt.duration("blocked_timeout", None)
    tls = None
    if opt.has("tls"):
        t = opt.table("tls")
        tls = TlsConfig(server_hostname=t.str("server_hostname", None), external_auth=t.bool("external_auth", True),
                        ca=t.path_value("ca", None), crl=t.path_value("crl", None))
        t.done()
    password_file = opt.path_value("password_file", None)
    credential = opt.str("credential", None, pattern=CREDENTIAL_RE)
    source = password_file is not None or credential is not None
    for i, url in enumerate(urls):
        _check_url(opt, i, url, source, external=tls is not None and tls.external_auth)
    if tls is not None and any(urlsplit(u).scheme != "amqps" for u in urls):
        raise opt.error("urls", "a broker with [tls] must use amqps:// URLs")
    management = opt.list("management_urls", [])
    for i, url in enumerate(management):
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.password:
            raise opt.error(f"management_urls[{i}]", "expected http(s)://HOST:PORT of a RabbitMQ management "
                                                     "listener, without a password (it comes from the broker's)")
    opt.done()
    return BrokerConfig(name=name, urls=tuple(urls), heartbeat=heartbeat, connect_timeout=connect_timeout,
                        reconnect_min=reconnect_min, reconnect_max=max(reconnect_min, reconnect_max),
                        blocked_timeout=blocked_timeout, tls=tls, password_file=password_file,
                        credential=credential, file=opt.file, management_urls=tuple(management))


def read_password(broker: BrokerConfig) -> str | None:
    """The broker's password from its source: the systemd credential when ``$CREDENTIALS_DIRECTORY``
    is set (jgw under systemd with ``LoadCredential=``), else ``password_file``. None when the
    broker has neither (the URLs carry the password, or TLS logs in). A file that group or others
    can read is refused (exit 77), as private keys are; a missing one is a configuration error."""
    where = f"brokers.{broker.name}"
    if broker.credential is not None:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if directory:
            return _read_secret(Path(directory) / broker.credential, broker.file, f"{where}.credential",
                                check_mode=False)
        if broker.password_file is None:
            raise ConfigError(broker.file, f"{where}.credential",
                              f"systemd credential {broker.credential!r}: $CREDENTIALS_DIRECTORY is not set "
                              f"(run under systemd with LoadCredential={broker.credential}:PATH, or also set "
                              "password_file for commands run by hand)")
    if broker.password_file is not None:
        return _read_secret(broker.password_file, broker.file, f"{where}.password_file", check_mode=True)
    return None


def _read_secret(path: Path, file: str, key: str, *, check_mode: bool) -> str:
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise ConfigError(file, key, f"{path}: file not found") from exc
    except OSError as exc:
        if exc.errno == 13:
            raise PermissionError_(f"{file}: {key}: {path}: cannot read it as uid {os.getuid()} "
                                   f"({exc.strerror})") from exc
        raise ConfigError(file, key, f"{path}: cannot read: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(file, key, f"{path}: not a regular file")
        if check_mode and stat.S_IMODE(st.st_mode) & 0o077:
            raise PermissionError_(f"{file}: {key}: {path} is mode {stat.S_IMODE(st.st_mode):04o}, readable "
                                   "beyond its owner; chmod 600 it (as a private key)")
        data = os.read(fd, 65537)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, key, f"{path}: not UTF-8") from exc
    if not text or len(data) > 65536 or "\n" in text:
        raise ConfigError(file, key, f"{path}: expected the password alone on one line")
    return text


def with_password(broker: BrokerConfig) -> BrokerConfig:
    """``broker`` with its password read from its source (unchanged when it has none)."""
    if broker.password is not None or (broker.password_file is None and broker.credential is None):
        return broker
    return replace(broker, password=read_password(broker))


def with_passwords(config: Config) -> Config:
    """``config`` with every broker's password read (``jgw run`` does this at start)."""
    return replace(config, brokers={name: with_password(b) for name, b in config.brokers.items()})


def _parse_defaults(opt: Options) -> dict[str, Any]:
    allowed = set(ROUTE_DEFAULTS) | {"personal_number", "payload_encoding"}
    values: dict[str, Any] = {}
    for key in list(opt._table):
        if key not in allowed:
            raise opt.error(key, f"unknown key; [defaults] may set {', '.join(sorted(allowed))}")
        values[key] = opt.raw(key)
    opt.done()
    return values


def _parse_route(name: str, opt: Options, defaults: Mapping[str, Any], brokers: Mapping[str, Any],
                 files: FileSettings | None = None) -> RouteConfig:
    if not NAME_RE.match(name):
        raise opt.error("", f"route name must match {NAME_RE.pattern} (it names queues and metric labels)")
    _name(opt, "", name)
    origin: dict[str, str] = {}
    written: dict[str, Any] = {}

    def pick(key: str) -> tuple[Options, str]:
        """Where a value comes from: this route, [defaults], or the built-in default."""
        if opt.has(key):
            origin[key] = "route"
            return opt, key
        origin[key] = "defaults" if key in defaults else "built-in"
        fallback = Options(opt.file, "defaults", {key: defaults.get(key, ROUTE_DEFAULTS.get(key))}, opt.base_dir)
        opt.raw(key, None)
        return fallback, key

    files = files or FileSettings()
    src = opt.table("source")
    src_kind = src.str("kind", "amqp", choices=SOURCE_KINDS)
    if src_kind == "amqp":
        source = SourceConfig(broker=_broker_ref(src, brokers), queue=src.str("queue", pattern=_queue_re()),
                              bind=tuple(_parse_bindings(src)))
        src.done()
    else:
        source = SourceConfig(broker="", queue="", kind=src_kind, file=parse_file_source(src, src_kind, files))
    snk = opt.table("sink")
    snk_kind = snk.str("kind", "amqp", choices=SINK_KINDS)
    if snk_kind == "amqp":
        sink = SinkConfig(broker=_broker_ref(snk, brokers), exchange=snk.str("exchange", pattern=AMQP_NAME_RE),
                          routing_key=snk.str("routing_key", "", pattern=AMQP_NAME_RE),
                          exchange_type=snk.str("exchange_type", None,
                                                choices=("direct", "topic", "fanout", "headers")),
                          queue=snk.str("queue", None, pattern=_queue_re()))
        snk.done()
        if sink.exchange == "" and not sink.routing_key:
            raise snk.error("routing_key", "with the default exchange \"\" the routing key must name the queue")
    else:
        sink = SinkConfig(broker="", exchange="", routing_key="", kind=snk_kind,
                          file=parse_file_sink(snk, snk_kind, files))
    if source.is_file and sink.is_file and source.file and sink.file and source.file.server == sink.file.server \
            and source.file.directory == sink.file.directory:
        raise snk.error("directory", "the sink is the route's own source directory")
    file_route = source.is_file or sink.is_file

    if file_route and not opt.has("prefetch"):
        # a file route holds up to prefetch frames of up to chunk_size each: [defaults] (made for
        # messages) does not apply, the built-in file default does
        origin["prefetch"] = "built-in"
        opt.raw("prefetch", None)
        prefetch = FILE_PREFETCH
    else:
        o, k = pick("prefetch")
        prefetch = o.int(k, min=1, max=65535)
    o, k = pick("window")
    window = o.int(k, min=1, max=100000)
    o, k = pick("retry")
    written[k] = o.raw(k)
    retry_opt, retry_key = o, k
    retry_raw = o.list(k)
    retry: list[float] = []
    for i, item in enumerate(retry_raw):
        try:
            retry.append(parse_duration(item))
        except (ValueError, TypeError) as exc:
            raise o.error(f"{k}[{i}]", str(exc)) from exc
        if retry[-1] < 0.01:
            raise o.error(f"{k}[{i}]", "a retry delay must be at least 10ms")
    o, k = pick("delivery_limit")
    delivery_limit = o.int(k, min=1, max=1000)
    o, k = pick("max_size")
    written[k] = o.raw(k)
    max_size = o.size(k)
    if max_size < 1 or max_size > 128 * 1024 * 1024:
        raise o.error(k, "must be between 1 byte and 128MiB (RabbitMQ's own limit is 128MiB)")
    o, k = pick("dedup")
    dedup = o.bool(k)
    o, k = pick("dedup_window")
    written[k] = o.raw(k)
    dedup_window = o.duration(k, min=1.0)
    o, k = pick("ack_interval")
    written[k] = o.raw(k)
    ack_interval = o.duration(k, min=0.001)
    o, k = pick("personal_number")
    if o is not opt and k not in defaults:
        raise opt.error("personal_number", "required: say whether this route may carry the 個人番号 "
                                           "('allowed' or 'forbidden')")
    personal_number = o.str(k, choices=("allowed", "forbidden"))
    o, k = pick("payload_encoding")
    payload_encoding = o.str(k, None)

    ordering_header = None
    if opt.has("ordering") and file_route:
        raise opt.error("ordering", f"a file route is ordered by file (header {H_FILE!r}): one frame of a "
                                    "file at a time, in order; it takes no ordering table")
    if file_route and not source.is_file:
        ordering_header = H_FILE  # frames arrive over AMQP: the file id is their ordering key
    if source.file is not None and source.file.in_order:
        ordering_header = H_FILE_ORDER  # one key for every frame: files one after the other
    if source.file is not None:
        held = prefetch * source.file.chunk_size
        if held > MAX_HELD:
            raise opt.error("prefetch", f"prefetch {prefetch} × chunk_size {source.file.chunk_size} bytes would "
                                        f"hold {held} bytes in memory, more than {MAX_HELD}")
        if source.file.chunk_size + FRAME_OVERHEAD > max_size:
            raise opt.error("max_size", f"{max_size} bytes cannot carry a frame of chunk_size "
                                        f"{source.file.chunk_size} bytes plus its header (set max_size to at least "
                                        f"chunk_size + {FRAME_OVERHEAD})")
    if opt.has("ordering"):
        ordr = opt.table("ordering")
        ordering_header = ordr.str("header", pattern=HEADER_RE)
        ordr.done()
    # an ordered route retries in place, holding the delivery unacknowledged; RabbitMQ closes a
    # channel whose delivery stays unacknowledged for consumer_timeout (30 minutes by default)
    if ordering_header is not None and not source.is_file and sum(retry) > ORDERED_RETRY_BUDGET:
        raise retry_opt.error(retry_key, "an ordered route retries in place: its retry delays add up to "
                                         f"{sum(retry):g}s, more than {ORDERED_RETRY_BUDGET:g}s "
                                         "(RabbitMQ's consumer_timeout is 30 minutes)")
    consumers, replicas, replicate, fence_after = _parse_cluster(opt, source, ordering_header, dedup, brokers)
    stage_tables: dict[str, Mapping[str, Any]] = {}
    for kind in ("open", "policy", "seal"):
        if opt.has(kind):
            table = opt.raw(kind)
            if not isinstance(table, Mapping):
                raise opt.error(kind, f"expected a table, got {_kind(table)}")
            stage_tables[kind] = table
    if "open" in stage_tables and "seal" in stage_tables:
        raise opt.error("seal", "a route either opens envelopes (inbound) or seals them (outbound), not both")
    route = RouteConfig(
        name=name, source=source, sink=sink, personal_number=personal_number,
        payload_encoding=payload_encoding, seed=opt.str("seed", None), description=opt.str("description", ""),
        enabled=opt.bool("enabled", True), prefetch=prefetch, window=window, retry=tuple(retry),
        delivery_limit=delivery_limit, max_size=max_size, ordering_header=ordering_header, dedup=dedup,
        dedup_window=dedup_window, ack_interval=ack_interval, consumers=consumers, replicas=replicas,
        replicate=replicate, fence_after=fence_after, stage_tables=stage_tables, origin=origin, written=written)
    opt.done()
    return route


def _parse_cluster(opt: Options, source: SourceConfig, ordering_header: str | None, dedup: bool,
                   brokers: Mapping[str, Any]) -> tuple[Any, int | None, bool, float]:
    """Scale-out keys of a route: how instances share its queue, its replicas, the dedup stream, the
    fence. An ordered AMQP route defaults to one instance ("one"): standby instances are opted into
    with "single-active", which changes the queue's arguments (RabbitMQ refuses that on an existing
    queue, so an upgrade must never do it by default)."""
    keys = ("consumers", "replicas", "replicate", "fence_after")
    if source.is_file:
        for key in keys:
            if opt.has(key):
                raise opt.error(key, "only a route with an AMQP source is shared between instances")
        return "one", None, False, 1.0
    ordered = ordering_header is not None
    consumers = opt.str("consumers", "one" if ordered else "shared", choices=("one", "single-active", "shared"))
    if ordered and consumers == "shared":
        raise opt.error("consumers", "an ordered route needs one consumer at a time ('one', or 'single-active' "
                                     "for standby instances): two instances would deliver one key's messages "
                                     "out of order")
    replicas = opt.int("replicas", None, min=1, max=9)
    single = consumers == "single-active"
    replicate = opt.bool("replicate", single and dedup)
    if replicate and not dedup:
        raise opt.error("replicate", "replicating dedup state needs dedup = true")
    if replicate and not single:
        raise opt.error("replicate", "only a 'single-active' route can replicate its dedup state ('one' has "
                                     "no standby to read it; 'shared' consumers would race each other's ids)")
    fence_after = opt.duration("fence_after", "1s", min=0.1)
    heartbeat = getattr(brokers.get(source.broker), "heartbeat", 0)
    if single:
        if heartbeat == 0:
            raise opt.error("consumers", f"a 'single-active' route needs broker {source.broker!r} to use "
                                         "heartbeats (heartbeat > 0): a hung instance is only noticed by them")
        if fence_after >= heartbeat:
            raise opt.error("fence_after", f"must be shorter than broker {source.broker!r}'s heartbeat "
                                           f"({heartbeat}s): the broker gives a hung instance's messages to "
                                           "another after about that long")
    return consumers, replicas, replicate, fence_after


def _queue_re() -> re.Pattern[str]:
    return re.compile(r"^(?!amq\.)[A-Za-z0-9_.:-]{1,200}$")


def _broker_ref(opt: Options, brokers: Mapping[str, Any]) -> str:
    name: str = opt.str("broker")
    if name not in brokers:
        known = ", ".join(sorted(brokers)) or "(none)"
        raise opt.error("broker", f"no broker named {name!r} in [brokers] (known: {known})")
    return name


def _parse_bindings(src: Options) -> list[Binding]:
    out = []
    for i, item in enumerate(src.list("bind", [])):
        b = Options(src.file, f"{src.key('bind')}[{i}]", item, src.base_dir)
        kind = b.str("exchange_type", "direct", choices=("direct", "topic", "fanout", "headers"))
        # a topic binding may use the wildcards * (one word) and # (any words)
        out.append(Binding(exchange=b.str("exchange", pattern=AMQP_NAME_RE),
                           routing_key=b.str("routing_key", "", pattern=TOPIC_RE if kind == "topic" else AMQP_NAME_RE),
                           exchange_type=kind))
        if not out[-1].exchange:
            raise b.error("exchange", "cannot bind to the default exchange; name an exchange")
        b.done()
    return out
