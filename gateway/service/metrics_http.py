"""The daemon's own ``/metrics`` and ``/healthz`` endpoint, on its asyncio loop.

Not ``prometheus_client.start_http_server``: that runs TLS handshakes in one accept thread, so a
single client that connects and says nothing blocks every scrape (research tech-stack §6.1). Here
each connection is its own task with a handshake timeout, a deadline for the request head, a size
limit and a cap on concurrent connections, so a bad client costs one slot for a few seconds.

The endpoint listens on loopback unless TLS with client-certificate verification is configured:
metric labels name routes and brokers, which is no one else's business. The TLS context can be
replaced at run time (certificate rotation, SIGHUP) without closing the listener: new handshakes
get the new certificate and trust store through ``sni_callback`` (research tech-stack §3.6).

Only ``GET``/``HEAD`` of ``/metrics`` and ``/healthz`` are served, one request per connection.
Responses never echo anything the client sent.

Security: listens for scrapers (hostile if not on loopback: they must present a client certificate
our CA signed). Reads the registry; trusts nothing from the request but the Accept headers.
"""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

from gateway.errors import ConfigError, DataError, NoInputError, UnavailableError

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}


@dataclass(frozen=True)
class Limits:
    """What one client may cost us. Defaults suit a Prometheus scraping every 15 s."""

    #: TLS handshake must finish within this (asyncio's ssl_handshake_timeout).
    handshake_timeout: float = 5.0
    #: Request line and headers must arrive within this after the connection is up.
    header_timeout: float = 5.0
    #: Response must be taken by the client within this.
    write_timeout: float = 10.0
    #: Largest request head (request line plus headers) accepted.
    max_header_bytes: int = 8192
    #: Connections served at once; more are answered 503 and closed.
    max_connections: int = 32


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the name localhost; any other name counts as exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_tls_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A TLS >= 1.2 server context that requires a client certificate signed by ``client_ca``.

    Built off to the side and complete before it is used, so a reload can validate it and only
    then swap it in with ``MetricsServer.set_ssl_context``.
    """
    for path in (cert, key, client_ca):
        if not Path(path).is_file():
            raise NoInputError(f"{path}: metrics TLS file not found")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise DataError(f"{cert}: cannot use this certificate with key {key}: {exc.reason or exc}") from exc
    except OSError as exc:
        raise DataError(f"{cert}: cannot read certificate or key: {exc.strerror or exc}") from exc
    try:
        ctx.load_verify_locations(cafile=str(client_ca))
    except (ssl.SSLError, OSError) as exc:
        raise DataError(f"{client_ca}: cannot load client CA certificates: {exc}") from exc
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _requires_client_cert(ctx: ssl.SSLContext | None) -> bool:
    return ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED


class MetricsServer:
    """A running endpoint. ``close()`` stops it; ``set_ssl_context()`` rotates its certificate."""

    def __init__(self, registry: CollectorRegistry, host: str, *, ssl_context: ssl.SSLContext | None,
                 health: Callable[[], bool] | None, limits: Limits) -> None:
        self.registry = registry
        self.host = host
        self.port = 0
        self.limits = limits
        self.health = health
        self._listen_context = ssl_context
        self._ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._encodings: dict[tuple[str, bool], asyncio.Future[bytes]] = {}
        self.requests = 0
        self.rejected = 0

    def __repr__(self) -> str:
        scheme = "https" if self._listen_context else "http"
        return f"<MetricsServer {scheme}://{self.host}:{self.port} connections={len(self._handlers)}>"

    @property
    def connections(self) -> int:
        return len(self._handlers)

    @property
    def url(self) -> str:
        scheme = "https" if self._listen_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    async def _start(self, port: int) -> None:
        if self._listen_context is not None:
            self._listen_context.sni_callback = self._pick_context
        self._server = await asyncio.start_server(
            self._accept, self.host, port, ssl=self._listen_context,
            ssl_handshake_timeout=self.limits.handshake_timeout if self._listen_context else None,
            ssl_shutdown_timeout=self.limits.handshake_timeout if self._listen_context else None,
            limit=self.limits.max_header_bytes, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def _pick_context(self, sslobj: ssl.SSLObject, server_name: str | None,
                      listen: ssl.SSLContext) -> None:
        """Runs for every ClientHello (with or without SNI): hand it the current context."""
        current = self._ssl_context
        if current is not None and current is not listen:
            sslobj.context = current

    def set_ssl_context(self, ctx: ssl.SSLContext) -> None:
        """Use ``ctx`` for every handshake from now on; open connections keep theirs."""
        if self._listen_context is None:
            raise ValueError("this metrics endpoint was started without TLS; restart it to enable TLS")
        if ctx.verify_mode != self._listen_context.verify_mode:
            raise ValueError("the new TLS context must verify client certificates exactly as the old one")
        self._ssl_context = ctx

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            if len(self._handlers) > self.limits.max_connections:
                self.rejected += 1
                await self._respond(writer, 503, b"too many connections\n", head_only=False)
            else:
                await self._serve_one(reader, writer)
        except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
            log.debug("metrics client went away: %s", type(exc).__name__)
        finally:
            self._handlers.discard(task)
            await self._close(writer)

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        """Close politely (TLS close_notify) but never wait on the client longer than write_timeout."""
        if writer.transport.is_closing():
            writer.transport.abort()
            return
        writer.close()
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            writer.transport.abort()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.limits.header_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await self._respond(writer, 408, b"request head not received in time\n")
            return
        except asyncio.LimitOverrunError:
            await self._respond(writer, 431, b"request head too large\n")
            return
        except asyncio.IncompleteReadError:
            return  # closed before a full request: nothing to answer
        self.requests += 1
        try:
            request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
        except ValueError:
            await self._respond(writer, 400, b"malformed request\n")
            return
        if not version.startswith("HTTP/1."):
            await self._respond(writer, 505, b"HTTP/1.x only\n")
            return
        headers: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if not sep:
                await self._respond(writer, 400, b"malformed header\n")
                return
            headers[name.strip().lower()] = value.strip()
        if method not in ("GET", "HEAD"):
            await self._respond(writer, 405, b"only GET and HEAD\n", extra=(("Allow", "GET, HEAD"),))
            return
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if path == "/metrics":
            await self._metrics(writer, headers, head_only)
        elif path == "/healthz":
            ok = True
            if self.health is not None:
                try:
                    ok = bool(self.health())
                except Exception:
                    log.exception("metrics endpoint: health check raised")
                    ok = False
            await self._respond(writer, 200 if ok else 503, b"ok\n" if ok else b"unhealthy\n",
                                head_only=head_only)
        else:
            await self._respond(writer, 404, b"try /metrics or /healthz\n", head_only=head_only)

    async def _metrics(self, writer: asyncio.StreamWriter, headers: dict[str, str], head_only: bool) -> None:
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        compress = gzip_accepted(headers.get("accept-encoding", ""))
        try:
            body = await self._encoded(encoder, content_type, compress)
        except Exception:
            log.exception("metrics endpoint: collecting metrics failed")
            await self._respond(writer, 500, b"collecting metrics failed; see the jgw log\n")
            return
        extra: tuple[tuple[str, str], ...] = (("Content-Encoding", "gzip"),) if compress else ()
        await self._respond(writer, 200, body, content_type=content_type, extra=extra, head_only=head_only)

    async def _encoded(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str,
                       compress: bool) -> bytes:
        """Encode off the event loop, so a large registry (50 routes: ~100 ms) never stalls the relay.

        Scrapes that arrive while the same encoding is running share its result instead of
        starting another: a burst of scrapes costs one encoding, not one per connection.
        """
        key = (content_type, compress)
        pending = self._encodings.get(key)
        if pending is None:
            def work() -> bytes:
                body = encoder(self.registry)
                return gzip.compress(body, compresslevel=5) if compress else body

            pending = asyncio.ensure_future(asyncio.to_thread(work))
            self._encodings[key] = pending
            pending.add_done_callback(lambda _f: self._encodings.pop(key, None))
        return await asyncio.shield(pending)

    async def _respond(self, writer: asyncio.StreamWriter, status: int, body: bytes, *,
                       content_type: str = "text/plain; charset=utf-8",
                       extra: tuple[tuple[str, str], ...] = (), head_only: bool = False) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {content_type}",
                 f"Content-Length: {len(body)}", "Connection: close",
                 *(f"{k}: {v}" for k, v in extra)]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head_only:
            writer.write(body)
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, *,
                        ssl_context: ssl.SSLContext | None = None, health: Callable[[], bool] | None = None,
                        limits: Limits | None = None, config_file: str = "(config)",
                        config_key: str = "node.metrics_listen") -> MetricsServer:
    """Start the endpoint on ``host:port`` (port 0 picks a free one; see ``.port``).

    A non-loopback ``host`` is refused with ``ConfigError(config_file, config_key, …)`` unless
    ``ssl_context`` requires client certificates (``server_tls_context``). ``health`` decides
    ``/healthz`` (200 or 503); without it ``/healthz`` says the endpoint is alive. The listening
    context's ``sni_callback`` is taken over for certificate rotation.
    """
    if not is_loopback(host) and not _requires_client_cert(ssl_context):
        raise ConfigError(config_file, config_key,
                          f"{host} is not a loopback address: serving metrics beyond this host needs TLS "
                          "with client certificates (or listen on 127.0.0.1 and scrape through a tunnel)")
    server = MetricsServer(registry, host, ssl_context=ssl_context, health=health, limits=limits or Limits())
    try:
        await server._start(port)
    except OSError as exc:  # often transient (old process still bound, address not up yet): retryable
        raise UnavailableError(f"{config_file}: {config_key}: cannot listen on {host}:{port}: "
                               f"{exc.strerror or exc}") from exc
    log.info("metrics endpoint listening on %s", server.url)
    return server


__all__ = ["Limits", "MetricsServer", "is_loopback", "serve_metrics", "server_tls_context"]
