"""The node's TOML configuration: parsed strictly, validated early, frozen.

Every error names the file, the key path and what is wrong (``ConfigError``). Unknown keys are
errors, never ignored: a misspelt ``delivery_limt`` must not silently fall back to a default.
Values a route does not set come from ``[defaults]`` and then from the built-in defaults below;
``jgw check-config`` shows which is which.

Security: reads one local file written by staff. Broker passwords in URLs are redacted whenever a
URL is shown (``redact_url``).
"""

from __future__ import annotations

import builtins
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.audit import AuditSettings

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
AMQP_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{0,200}$")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "KB": 1000, "MB": 1000**2,
               "GB": 1000**3}

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

T = TypeVar("T")
_MISSING: Any = object()


def parse_duration(text: str | int | float) -> float:
    """'250ms', '5s', '2m', '1h', '7d' or a number of seconds."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as '5s', got a boolean")
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    m = _DURATION_RE.match(text)
    if not m:
        raise ValueError(f"expected a duration such as '250ms', '5s', '2m', '1h' or '7d', got {text!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text: str | int) -> int:
    """'512', '64KiB', '8MiB' (binary) or '1MB' (decimal); a plain integer is bytes."""
    if isinstance(text, bool):
        raise ValueError("expected a size such as '8MiB', got a boolean")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"expected a size such as '512', '64KiB' or '8MiB', got {text!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{netloc}", parts.path, parts.query, parts.fragment))


class Options:
    """One TOML table being read strictly: take what you know, then ``done()`` refuses the rest."""

    def __init__(self, file: str, path: str, table: Mapping[str, Any], base_dir: Path) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(file, path, f"expected a table, got {_kind(table)}")
        self.file = file
        self.path = path
        self.base_dir = base_dir
        self._table = dict(table)
        self._seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, reason: str) -> ConfigError:
        return ConfigError(self.file, self.key(name) if name else self.path, reason)

    def has(self, name: str) -> bool:
        return name in self._table

    def raw(self, name: str, default: Any = _MISSING) -> Any:
        self._seen.add(name)
        if name in self._table:
            return self._table[name]
        if default is _MISSING:
            raise self.error(name, "required key is missing")
        return default

    def _typed(self, name: str, kind: type[T] | tuple[type, ...], default: Any, what: str) -> Any:
        value = self.raw(name, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) and kind is not bool:
            raise self.error(name, f"expected {what}, got a boolean")
        if not isinstance(value, kind):
            raise self.error(name, f"expected {what}, got {_kind(value)}")
        return value

    def str(self, name: builtins.str, default: Any = _MISSING, *, pattern: re.Pattern[str] | None = None,
            choices: tuple[str, ...] | None = None) -> Any:
        value = self._typed(name, builtins.str, default, "a string")
        if value is default and default is not _MISSING:
            return value
        if choices is not None and value not in choices:
            raise self.error(name, f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        if pattern is not None and not pattern.match(value):
            raise self.error(name, f"{value!r} does not match {pattern.pattern}")
        return value

    def int(self, name: builtins.str, default: Any = _MISSING, *, min: builtins.int | None = None,
            max: builtins.int | None = None) -> Any:
        value = self._typed(name, int, default, "an integer")
        if value is default and default is not _MISSING:
            return value
        if min is not None and value < min:
            raise self.error(name, f"must be at least {min}, got {value}")
        if max is not None and value > max:
            raise self.error(name, f"must be at most {max}, got {value}")
        return value

    def bool(self, name: builtins.str, default: Any = _MISSING) -> Any:
        return self._typed(name, bool, default, "true or false")

    def duration(self, name: builtins.str, default: Any = _MISSING, *, min: builtins.float | None = None) -> Any:
        value = self.raw(name, default)
        if value is None:
            return None
        try:
            seconds = parse_duration(value)
        except (ValueError, TypeError) as exc:
            raise self.error(name, str(exc)) from exc
        if min is not None and seconds < min:
            raise self.error(name, f"must be at least {min}s, got {seconds}s")
        return seconds

    def size(self, name: builtins.str, default: Any = _MISSING) -> builtins.int:
        value = self.raw(name, default)
        try:
            return parse_size(value)
        except (ValueError, TypeError) as exc:
            raise self.error(name, str(exc)) from exc

    def path_value(self, name: builtins.str, default: Any = _MISSING) -> Any:
        value = self._typed(name, builtins.str, default, "a path")
        if value is None or (value is default and default is not _MISSING and not isinstance(value, builtins.str)):
            return value
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)

    def list(self, name: builtins.str, default: Any = _MISSING) -> Any:
        return self._typed(name, list, default, "a list")

    def table(self, name: builtins.str, default: Any = _MISSING) -> Options:
        value = self.raw(name, default)
        return Options(self.file, self.key(name), value, self.base_dir)

    def tables(self) -> Iterator[tuple[builtins.str, Options]]:
        """Every key of this table, each read as a sub-table (for [brokers.X], [routes.X])."""
        for name in list(self._table):
            yield name, self.table(name)

    def done(self) -> None:
        unknown = sorted(set(self._table) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown key (check the spelling; see docs/configuration.md)")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


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

    def describe(self) -> str:
        return ", ".join(redact_url(u) for u in self.urls)


@dataclass(frozen=True)
class Binding:
    exchange: str
    routing_key: str
    exchange_type: str = "direct"


@dataclass(frozen=True)
class SourceConfig:
    broker: str
    queue: str
    bind: tuple[Binding, ...] = ()


@dataclass(frozen=True)
class SinkConfig:
    broker: str
    exchange: str
    routing_key: str
    #: When set, jgw declares this exchange (type) instead of only checking that it exists.
    exchange_type: str | None = None
    #: When set, jgw declares this quorum queue and binds it (a final delivery queue).
    queue: str | None = None


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
    #: Raw tables for the stages this route uses ("open", "policy", "seal"), validated when the
    #: stages are built (``gateway.route.build_stages``).
    stage_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Where each effective value came from: "route", "defaults" or "built-in".
    origin: Mapping[str, str] = field(default_factory=dict)


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

    def route(self, name: str) -> RouteConfig:
        return self.routes[name]


def load(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError naming file, key path and reason."""
    path = Path(path)
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(shown, "", "file not found") from exc
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
    brokers_opt = top.table("brokers")
    brokers = {name: _parse_broker(name, opt) for name, opt in brokers_opt.tables()}
    if not brokers:
        raise brokers_opt.error("", "at least one broker is required")
    defaults_opt = top.table("defaults", {})
    defaults = _parse_defaults(defaults_opt)
    routes_opt = top.table("routes", {})
    routes: dict[str, RouteConfig] = {}
    sources: dict[tuple[str, str], str] = {}
    for name, opt in routes_opt.tables():
        route = _parse_route(name, opt, defaults, brokers)
        key = (route.source.broker, route.source.queue)
        if key in sources:
            raise opt.error("source.queue", f"queue {route.source.queue!r} on broker {route.source.broker!r} "
                                            f"is already the source of route {sources[key]!r}")
        sources[key] = name
        _check_against_catalog(route, opt)
        routes[name] = route
    audit = _parse_audit(top.table("audit", {}), node, routes)
    top.done()
    return Config(file=path or Path(file), node=node, brokers=brokers, routes=routes, audit=audit)


def _check_against_catalog(route: RouteConfig, opt: Options) -> None:
    """A route naming a seed flow must agree with the catalog (no route where the seed says there is
    no linkage; never looser about the 個人番号 than the catalog)."""
    if route.seed is None:
        return
    from gateway.catalog import check_route

    reason = check_route(route)
    if reason:
        raise opt.error("seed", reason)


def _parse_audit(opt: Options, node: NodeConfig, routes: Mapping[str, RouteConfig]) -> AuditSettings | None:
    from gateway.audit import audit_settings

    if not opt.bool("enabled", True):
        opt.done()
        return None
    return audit_settings(opt, node.state_dir, routes)


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
    from gateway.redact import contains_personal_number

    if contains_personal_number(name):
        raise opt.error(key, "a name may not look like a 個人番号 (it would appear in logs and metrics)")
    return name


def _parse_broker(name: str, opt: Options) -> BrokerConfig:
    if not NAME_RE.match(name):
        raise opt.error("", f"broker name must match {NAME_RE.pattern}")
    _name(opt, "", name)
    urls = opt.list("urls")
    if not urls:
        raise opt.error("urls", "at least one URL is required")
    for i, url in enumerate(urls):
        if not isinstance(url, str):
            raise opt.error(f"urls[{i}]", f"expected a string, got {_kind(url)}")
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise opt.error(f"urls[{i}]", f"expected amqp://HOST[:PORT]/VHOST or amqps://…, got "
                                          f"{redact_url(url)!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise opt.error(f"urls[{i}]", f"bad port in {redact_url(url)!r}") from exc
        unquote(parts.path)
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
        if any(urlsplit(u).scheme != "amqps" for u in urls):
            raise opt.error("urls", "a broker with [tls] must use amqps:// URLs")
    opt.done()
    return BrokerConfig(name=name, urls=tuple(urls), heartbeat=heartbeat, connect_timeout=connect_timeout,
                        reconnect_min=reconnect_min, reconnect_max=max(reconnect_min, reconnect_max),
                        blocked_timeout=blocked_timeout, tls=tls)


def _parse_defaults(opt: Options) -> dict[str, Any]:
    allowed = set(ROUTE_DEFAULTS) | {"personal_number", "payload_encoding"}
    values: dict[str, Any] = {}
    for key in list(opt._table):
        if key not in allowed:
            raise opt.error(key, f"unknown key; [defaults] may set {', '.join(sorted(allowed))}")
        values[key] = opt.raw(key)
    opt.done()
    return values


def _parse_route(name: str, opt: Options, defaults: Mapping[str, Any], brokers: Mapping[str, Any]) -> RouteConfig:
    if not NAME_RE.match(name):
        raise opt.error("", f"route name must match {NAME_RE.pattern} (it names queues and metric labels)")
    _name(opt, "", name)
    origin: dict[str, str] = {}

    def pick(key: str) -> tuple[Options, str]:
        """Where a value comes from: this route, [defaults], or the built-in default."""
        if opt.has(key):
            origin[key] = "route"
            return opt, key
        origin[key] = "defaults" if key in defaults else "built-in"
        fallback = Options(opt.file, "defaults", {key: defaults.get(key, ROUTE_DEFAULTS.get(key))}, opt.base_dir)
        opt.raw(key, None)
        return fallback, key

    src = opt.table("source")
    source = SourceConfig(broker=_broker_ref(src, brokers), queue=src.str("queue", pattern=_queue_re()),
                          bind=tuple(_parse_bindings(src)))
    src.done()
    snk = opt.table("sink")
    sink = SinkConfig(broker=_broker_ref(snk, brokers), exchange=snk.str("exchange", pattern=AMQP_NAME_RE),
                      routing_key=snk.str("routing_key", "", pattern=AMQP_NAME_RE),
                      exchange_type=snk.str("exchange_type", None,
                                            choices=("direct", "topic", "fanout", "headers")),
                      queue=snk.str("queue", None, pattern=_queue_re()))
    snk.done()
    if sink.exchange == "" and not sink.routing_key:
        raise snk.error("routing_key", "with the default exchange \"\" the routing key must name the queue")

    o, k = pick("prefetch")
    prefetch = o.int(k, min=1, max=65535)
    o, k = pick("window")
    window = o.int(k, min=1, max=100000)
    o, k = pick("retry")
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
    max_size = o.size(k)
    if max_size < 1 or max_size > 128 * 1024 * 1024:
        raise o.error(k, "must be between 1 byte and 128MiB (RabbitMQ's own limit is 128MiB)")
    o, k = pick("dedup")
    dedup = o.bool(k)
    o, k = pick("dedup_window")
    dedup_window = o.duration(k, min=1.0)
    o, k = pick("ack_interval")
    ack_interval = o.duration(k, min=0.001)
    o, k = pick("personal_number")
    if o is not opt and k not in defaults:
        raise opt.error("personal_number", "required: say whether this route may carry the 個人番号 "
                                           "('allowed' or 'forbidden')")
    personal_number = o.str(k, choices=("allowed", "forbidden"))
    o, k = pick("payload_encoding")
    payload_encoding = o.str(k, None)

    ordering_header = None
    if opt.has("ordering"):
        ordr = opt.table("ordering")
        ordering_header = ordr.str("header", pattern=HEADER_RE)
        ordr.done()
        # an ordered route retries in place, holding the delivery unacknowledged; RabbitMQ closes a
        # channel whose delivery stays unacknowledged for consumer_timeout (30 minutes by default)
        if sum(retry) > ORDERED_RETRY_BUDGET:
            raise retry_opt.error(retry_key, "an ordered route retries in place: its retry delays add up to "
                                             f"{sum(retry):g}s, more than {ORDERED_RETRY_BUDGET:g}s "
                                             "(RabbitMQ's consumer_timeout is 30 minutes)")
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
        dedup_window=dedup_window, ack_interval=ack_interval, stage_tables=stage_tables, origin=origin)
    opt.done()
    return route


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
        out.append(Binding(exchange=b.str("exchange", pattern=AMQP_NAME_RE),
                           routing_key=b.str("routing_key", "", pattern=AMQP_NAME_RE),
                           exchange_type=b.str("exchange_type", "direct",
                                               choices=("direct", "topic", "fanout", "headers"))))
        if not out[-1].exchange:
            raise b.error("exchange", "cannot bind to the default exchange; name an exchange")
        b.done()
    return out
