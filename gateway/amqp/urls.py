"""One broker URL into the daemon's connection parameters, with the broker's password put in.

NAME
    urls - ``connect_params(broker, url, ...)``: ``ConnectParams`` for a URL of a validated config

DESCRIPTION
    The config (``gateway.config``) has already refused a URL that does not parse; a password may
    come from ``password_file`` or a systemd credential instead of the URL
    (``BrokerConfig.password``). A user without a password (``amqp://jgw@host/vhost``) is a user whose
    password comes from that source.

Security: handles the broker password; never logs it. URLs are shown only through ``redact_url``.
"""

from __future__ import annotations

import ssl
from urllib.parse import unquote, urlsplit

from gateway.amqp.connection import ConnectParams
from gateway.config import BrokerConfig


def connect_params(broker: BrokerConfig, url: str, *, ssl_context: ssl.SSLContext | None,
                   connection_name: str) -> ConnectParams:
    """The daemon's connection parameters for ``url`` (jgw's own client, ``gateway.amqp.connection``):
    the host, port and vhost of the URL, the user from the URL and the password from the URL or the
    broker's password source; TLS with EXTERNAL login when the broker's ``[tls]`` says so."""
    parts = urlsplit(url)
    tls = parts.scheme == "amqps"
    host = parts.hostname or "localhost"
    port = parts.port or (5671 if tls else 5672)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    user = unquote(parts.username) if parts.username is not None else "guest"
    password = unquote(parts.password) if parts.password is not None else (broker.password or "guest")
    external = False
    server_hostname: str | None = None
    if broker.tls is not None:
        external = broker.tls.external_auth
        server_hostname = broker.tls.server_hostname or host
    elif tls:
        raise ValueError(f"{broker.name}: an amqps:// URL needs [brokers.{broker.name}.tls]")
    return ConnectParams(host=host, port=port, vhost=vhost, username=user, password=password, external=external,
                         ssl_context=ssl_context if broker.tls is not None else None,
                         server_hostname=server_hostname, heartbeat=broker.heartbeat,
                         connect_timeout=broker.connect_timeout, connection_name=connection_name)
