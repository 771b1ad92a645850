"""What ``jgw run`` refuses at start, decided once, so ``jgw check-config`` says exactly the same.

NAME
    preflight - ``check(config)``: refuse what cannot run (ConfigError naming the key path), and
    return the advice worth reading (warnings)

DESCRIPTION
    Refused (exit 78, ``FILE: KEY: reason``; a readable-by-others password file 77):
      node.metrics_listen       not loopback without [node.metrics_tls]
      node.state_dir            exists but is not a directory
      brokers.X.password_file   missing, unreadable, or readable by group or others
      brokers.X.credential      no $CREDENTIALS_DIRECTORY and no password_file to fall back to
      routes.R.payload_encoding an encoding the policy stage cannot scan, on a forbidden route
      routes.R.sink             delivers into the route's own source queue (every message would
                                be delivered, come back, and be suppressed as a duplicate: lost)
      routes.R.source.directory a spool source's directory missing or not a directory
      routes.R.sink.directory   a directory sink missing, not a directory or not writable
      sftp.S.client_key         missing, not an unencrypted private key, or readable by group or
                                others (77)
      sftp.S.known_hosts        missing, unreadable, or without a key for HOST:PORT (the pin)
      endpoint.host_key         as a client key; endpoint.accounts.A.directory missing,
                                endpoint.accounts.A.authorized_keys unreadable or without a key
    Warned: a forbidden route with no payload encoding (every message quarantined), the seed
    catalog's advice (ordering per person, encodings), a sink whose headers exchange feeds the
    source queue (cannot be decided from the config).

Security: reads the config, the password files it names, the state directory's type, the file
routes' directories (type and access) and their key files (mode first, then parsed).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from gateway import catalog
from gateway.config import BrokerConfig, Config, RouteConfig, read_password
from gateway.errors import ConfigError
from gateway.files.sftp import ip_or_empty
from gateway.pki.errors import CertificateError
from gateway.pki.files import check_key_mode
from gateway.policy.stage import config_warnings
from gateway.service.metrics_http import is_loopback


def check(cfg: Config, *, passwords: bool = True) -> list[str]:
    """Raise ConfigError for what ``jgw run`` cannot start with; return warnings."""
    file = str(cfg.file)
    node = cfg.node
    warnings: list[str] = []
    if node.metrics_listen is not None and node.metrics_tls is None and not is_loopback(node.metrics_listen[0]):
        raise ConfigError(file, "node.metrics_listen",
                          f"{node.metrics_listen[0]} is not a loopback address: serving metrics beyond this host "
                          "needs TLS with client certificates ([node.metrics_tls]), or listen on 127.0.0.1 and "
                          "scrape through a tunnel")
    if node.state_dir.exists() and not node.state_dir.is_dir():
        raise ConfigError(file, "node.state_dir", f"{node.state_dir} exists and is not a directory")
    if passwords:
        for broker in cfg.brokers.values():
            read_password(broker)
    cat = catalog.default_catalog()
    for route in cfg.routes.values():
        for text in config_warnings(route):
            if route.payload_encoding is not None:
                raise ConfigError(file, f"routes.{route.name}.payload_encoding", text)
            warnings.append(text)
        loop = feeds_own_source(route, cfg.brokers)
        if loop is not None:
            if loop.startswith("maybe:"):
                warnings.append(f"route {route.name}: {loop[6:]}")
            else:
                raise ConfigError(file, f"routes.{route.name}.sink", loop)
        warnings.extend(catalog.advise_route(route, cat))
    check_files(cfg)
    return warnings


def check_files(cfg: Config) -> None:
    """The file routes' directories, keys and pins (see the module docstring)."""
    file = str(cfg.file)
    used_servers: dict[str, str] = {}
    for route in cfg.routes.values():
        if not route.enabled:
            continue
        src, snk = route.source.file, route.sink.file
        if src is not None and src.kind == "spool":
            _directory(file, f"routes.{route.name}.source.directory", Path(src.directory), write=True)
        if src is not None and src.server is not None:
            used_servers.setdefault(src.server, f"routes.{route.name}.source.server")
        if snk is not None and snk.kind == "directory":
            _directory(file, f"routes.{route.name}.sink.directory", Path(snk.directory), write=True)
        if snk is not None and snk.server is not None:
            used_servers.setdefault(snk.server, f"routes.{route.name}.sink.server")
    for name in used_servers:
        server = cfg.files.sftp[name]
        _private_key(file, f"sftp.{name}.client_key", server.client_key)
        _known_hosts(file, f"sftp.{name}.known_hosts", server.known_hosts, server.host, server.port)
    ep = cfg.files.endpoint
    if ep is not None and any(r.source.kind == "endpoint" for r in cfg.routes.values() if r.enabled):
        _private_key(file, "endpoint.host_key", ep.host_key)
        for account in ep.accounts.values():
            where = f"endpoint.accounts.{account.name}"
            _directory(file, f"{where}.directory", account.directory, write=True)
            try:
                import asyncssh

                keys = asyncssh.read_authorized_keys(str(account.authorized_keys))
            except (OSError, ValueError, asyncssh.KeyImportError) as exc:
                raise ConfigError(file, f"{where}.authorized_keys", f"{account.authorized_keys}: cannot be read as "
                                  f"an OpenSSH authorized_keys file ({type(exc).__name__})") from exc
            if not any(getattr(keys, a, None) for a in ("_user_entries", "_ca_entries", "_x509_entries")):
                raise ConfigError(file, f"{where}.authorized_keys", f"{account.authorized_keys}: holds no key")


def _directory(file: str, key: str, path: Path, *, write: bool) -> None:
    import os

    if not path.exists():
        raise ConfigError(file, key, f"{path}: no such directory")
    if not path.is_dir():
        raise ConfigError(file, key, f"{path}: not a directory")
    if write and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(file, key, f"{path}: jgw (uid {os.getuid()}) may not write here")


def _private_key(file: str, key: str, path: Path) -> None:
    """0600 first (exit 77 otherwise, as every key of the node), then it must parse."""
    import asyncssh

    try:
        check_key_mode(path)
    except CertificateError as exc:
        raise ConfigError(file, key, f"{path}: {exc.reason}") from exc
    try:
        asyncssh.read_private_key(str(path))
    except (asyncssh.KeyImportError, OSError, ValueError) as exc:
        raise ConfigError(file, key, f"{path}: not an unencrypted OpenSSH or PKCS#8 private key") from exc


def _known_hosts(file: str, key: str, path: Path, host: str, port: int) -> None:
    import asyncssh

    try:
        known = asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError, asyncssh.KeyImportError) as exc:
        raise ConfigError(file, key, f"{path}: cannot be read as an OpenSSH known_hosts file "
                                     f"({type(exc).__name__})") from exc
    keys, ca_keys, *_ = asyncssh.match_known_hosts(known, host, ip_or_empty(host), port)
    if not (keys or ca_keys):
        where = host if port == 22 else f"[{host}]:{port}"
        raise ConfigError(file, key, f"{path}: no key pinned for {where} (add the server's host key, checked "
                                     "out of band: ssh-keyscan output must be verified before it is trusted)")


def same_broker(a: BrokerConfig, b: BrokerConfig) -> bool:
    """The same broker and virtual host, by name or by any URL they share (host, port, vhost)."""
    if a.name == b.name:
        return True
    return bool(_endpoints(a) & _endpoints(b))


def _endpoints(broker: BrokerConfig) -> set[tuple[str, int, str]]:
    out = set()
    for url in broker.urls:
        parts = urlsplit(url)
        default = 5671 if parts.scheme == "amqps" else 5672
        host = (parts.hostname or "").lower()
        if host in ("localhost", "::1") or host.startswith("127."):
            host = "loopback"
        out.add((host, parts.port or default, unquote(parts.path[1:]) or "/"))
    return out


def _topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` one word, ``#`` zero or more words."""
    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])
    return match(pattern.split("."), key.split(".") if key else [])


def feeds_own_source(route: RouteConfig, brokers: Mapping[str, BrokerConfig]) -> str | None:
    """Why the route's sink delivers into its own source queue, or None. A text starting with
    ``maybe:`` is a doubt the config cannot settle (a headers exchange)."""
    src, snk = route.source, route.sink
    if src.is_file or snk.is_file:
        return None  # files: the config refuses a sink directory that is the source's own
    if not same_broker(brokers[src.broker], brokers[snk.broker]):
        return None
    where = f"the sink (exchange {snk.exchange or '(default)'!r}, routing key {snk.routing_key!r}) delivers " \
            f"into the route's own source queue {src.queue!r}"
    tail = ": every message would be delivered, come back and be suppressed as a duplicate"
    if snk.queue == src.queue:
        return f"sink.queue is the route's own source queue {src.queue!r}{tail}"
    if snk.exchange == "":
        return where + tail if snk.routing_key == src.queue else None
    for b in src.bind:
        if b.exchange != snk.exchange:
            continue
        kind = snk.exchange_type or b.exchange_type
        if kind == "fanout" or (kind == "direct" and b.routing_key == snk.routing_key) or \
                (kind == "topic" and _topic_matches(b.routing_key, snk.routing_key)):
            return where + f" (source.bind on {b.exchange!r})" + tail
        if kind == "headers":
            return (f"maybe:the sink exchange {snk.exchange!r} is a headers exchange that source.bind also binds "
                    f"to {src.queue!r}: make sure its arguments never match what this route delivers")
    return None
