"""Toxiproxy-compatible fault proxy: cut, delay and break real TCP links in chaos tests and the demo.

The Go Toxiproxy server cannot be installed here, so this module implements, on asyncio streams, the part
of the Toxiproxy 2.x HTTP API that ``toxiproxy-python`` 0.1.1 uses (``../shared/research/tech-stack.md``
§4). Each proxy forwards one loopback port to an upstream ``host:port``. Toxics on the ``upstream``
(client→server) and ``downstream`` (server→client) streams delay, throttle, slice, stall, truncate or
reset the traffic of live connections as well as new ones.

Two ways to run it: in-process with :class:`FaultProxyServer` (a background thread with its own event
loop), or as a process: ``python -m tests.lab.faultproxy --listen 127.0.0.1:8474``.

Deliberate differences from Toxiproxy: ``reset_peer`` always resets with an RST, also on connections that
existed before the toxic (Toxiproxy sends a FIN there); removing a ``timeout`` toxic closes only the
connections on which its toxicity roll hit; listen addresses must be loopback; negative attributes and
names containing ``/`` are rejected with 400; the API answers one request per connection (no keep-alive,
no chunked bodies) and has no ``/metrics``.

Security: test/demo only; unauthenticated API, so it and all proxies bind loopback; browser agents get 403.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import ipaddress
import json
import logging
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import unquote, urlsplit

__all__ = [
    "DEFAULT_API_PORT",
    "TOXIC_TYPES",
    "VERSION",
    "FaultProxy",
    "FaultProxyServer",
    "main",
]

log = logging.getLogger(__name__)

#: The Toxiproxy API level this stand-in answers as (``GET /version``).
VERSION: Final = "2.12.0"
DEFAULT_API_PORT: Final = 8474
UPSTREAM: Final = "upstream"
DOWNSTREAM: Final = "downstream"

#: Toxic types with their attributes and defaults (all integers, like the Go structs).
TOXIC_TYPES: Final[dict[str, dict[str, int]]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "slow_close": {"delay": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "limit_data": {"bytes": 0},
}

_READ_SIZE = 65536
_QUEUE_CHUNKS = 64  # per direction; bounded so that a throttled stream pushes back on its sender
_DIAL_TIMEOUT = 5.0
_CLOSE_GRACE = 1.0  # a FIN close that cannot flush (peer not reading) is aborted after this
_MAX_HEADER = 16384
_MAX_BODY = 1 << 20
_READ_REQUEST_TIMEOUT = 25.0  # Toxiproxy's handler timeout
_MAX_NAME = 200

_rng = random.Random()  # fault injection only; not security relevant

Json = dict[str, Any]
_Chunks = asyncio.Queue[tuple[bytes, float] | None]  # (data, arrival time); None marks EOF


class ApiError(Exception):
    """An HTTP error with Toxiproxy's body ``{"error": ..., "status": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> Json:
        return {"error": self.message, "status": self.status}


# --------------------------------------------------------------------------- addresses


def _split_hostport(value: object, what: str) -> tuple[str, int]:
    """Parses ``host:port`` / ``[v6]:port``; errors are 400 because they come from API bodies."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{what}: expected host:port")
    host, sep, port_s = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port_s.isascii() and port_s.isdigit()) or int(port_s) > 65535:
        raise ApiError(400, f"{what}: expected host:port, got {value!r}")
    return host, int(port_s)


def _loopback_host(host: str, what: str) -> str:
    """Returns a literal loopback IP for ``host`` so a port-0 bind yields exactly one socket."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ApiError(400, f"{what}: only loopback addresses are allowed, got {host!r}")


def _format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_name(value: object, what: str) -> str:
    """Names end up in URL paths, so they must be addressable there."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"missing required field: {what}")
    if len(value) > _MAX_NAME or "/" in value or not value.isprintable():
        raise ApiError(400, f"invalid {what}: {value[:40]!r}")
    return value


# --------------------------------------------------------------------------- toxics


@dataclass(eq=False)
class _Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int]
    removed: bool = False
    # Set when the toxic is updated or removed, so in-flight delays stop waiting (Go's stub.Interrupt).
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self) -> Json:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
            "attributes": dict(self.attributes),
        }

    def kick(self) -> None:
        """Wakes every wait on the current event; a removed toxic keeps a set event forever."""
        self.interrupt.set()
        if not self.removed:
            self.interrupt = asyncio.Event()


def _parse_toxicity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ApiError(400, "toxicity must be a number between 0 and 1")
    return float(value)


def _merge_attributes(kind: str, base: dict[str, int], given: object) -> dict[str, int]:
    """Known attributes must be non-negative integers; unknown ones are ignored, as Go's decoder does."""
    if given is None:
        return dict(base)
    if not isinstance(given, dict):
        raise ApiError(400, "attributes must be an object")
    merged = dict(base)
    for key in TOXIC_TYPES[kind]:
        if key not in given:
            continue
        value = given[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ApiError(400, f"attribute {key} must be a non-negative integer")
        merged[key] = value
    return merged


def _roll(toxicity: float) -> bool:
    return toxicity >= 1.0 or _rng.random() < toxicity


async def _pause(toxic: _Toxic, seconds: float) -> bool:
    """Sleeps; returns False if the toxic was updated or removed meanwhile (caller stops delaying)."""
    if seconds <= 0:
        return not toxic.interrupt.is_set()
    try:
        await asyncio.wait_for(toxic.interrupt.wait(), seconds)
    except TimeoutError:
        return True
    return False


@dataclass
class _ToxicState:
    """What one toxic knows about one link: its toxicity roll and the stateful toxics' counters."""

    active: bool
    transferred: int = 0
    timer: asyncio.Task[None] | None = None
    fired: bool = False


# --------------------------------------------------------------------------- links


def _set_rst_on_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Link:
    """One accepted client connection and its upstream connection, pumped in both directions."""

    def __init__(self, proxy: _Proxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = (reader, writer)
        self.upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.states: dict[str, _ToxicState] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        for toxic in proxy.toxics.values():
            self.attach(toxic)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self) -> None:
        """Dials the upstream now (a dead upstream closes the client) and pumps until the link closes."""
        host, port = _split_hostport(self.proxy.upstream, "upstream")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _DIAL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            log.info("proxy %s: upstream %s unreachable (%s); closing client", self.proxy.name,
                     self.proxy.upstream, exc)
            self.close()
            return
        if self.closed:  # the proxy was disabled or deleted while we dialled
            writer.transport.abort()
            return
        self.upstream = (reader, writer)
        pumps = [self._spawn(self._pump(UPSTREAM, self.client[0], writer)),
                 self._spawn(self._pump(DOWNSTREAM, reader, self.client[1]))]
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self.close()

    # -- toxic bookkeeping (called from the API on live links) --

    def attach(self, toxic: _Toxic) -> None:
        if toxic.name in self.states:
            return
        state = _ToxicState(active=_roll(toxic.toxicity))
        self.states[toxic.name] = state
        self._arm(toxic, state)

    def update(self, toxic: _Toxic) -> None:
        """Like Go: the toxic restarts on the link (new roll, new timer); stateful counters survive."""
        state = self.states.get(toxic.name)
        if state is None:
            self.attach(toxic)
            return
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        state.active = _roll(toxic.toxicity)
        self._arm(toxic, state)

    def detach(self, toxic: _Toxic) -> None:
        state = self.states.pop(toxic.name, None)
        if state is None:
            return
        if state.timer is not None:
            state.timer.cancel()
        if toxic.type == "timeout" and state.active:
            self.close()  # the held stream cannot be resumed consistently (Go: TimeoutToxic.Cleanup)

    def _arm(self, toxic: _Toxic, state: _ToxicState) -> None:
        if toxic.type == "timeout" and state.active and toxic.attributes["timeout"] > 0:
            state.timer = self._spawn(self._close_later(toxic.attributes["timeout"] / 1000, reset=False))

    async def _close_later(self, seconds: float, *, reset: bool) -> None:
        await asyncio.sleep(seconds)
        self.close(reset=reset)

    # -- data path --

    async def _read(self, src: asyncio.StreamReader, queue: _Chunks) -> None:
        """Timestamps chunks on arrival so latency does not accumulate on a pipelined stream."""
        try:
            while True:
                data = await src.read(_READ_SIZE)
                if not data:
                    break
                await queue.put((data, time.monotonic()))
        except (ConnectionError, OSError):
            pass
        await queue.put(None)

    async def _pump(self, stream: str, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        queue: _Chunks = asyncio.Queue(_QUEUE_CHUNKS)
        self._spawn(self._read(src, queue))
        try:
            while not self.closed:
                item = await queue.get()
                if item is None:
                    await self._deliver(self.proxy.chain(stream), 0, None, time.monotonic(), dst)
                    return
                await self._deliver(self.proxy.chain(stream), 0, item[0], item[1], dst)
        except (ConnectionError, OSError):
            self.close()
        except Exception:
            log.exception("proxy %s: %s pump failed", self.proxy.name, stream)
            self.close()

    async def _deliver(self, chain: list[_Toxic], i: int, data: bytes | None, ts: float,
                       dst: asyncio.StreamWriter) -> None:
        """Runs one chunk (``None`` = EOF) through the toxics from index ``i`` on, then writes it."""
        while i < len(chain):
            toxic = chain[i]
            i += 1
            state = self.states.get(toxic.name)
            if toxic.removed or state is None or not state.active or self.closed:
                continue
            attrs = toxic.attributes
            kind = toxic.type
            if kind == "timeout":
                # Hold everything (EOF included) until the timer closes the link or the toxic changes.
                while state.active and not toxic.removed and not self.closed:
                    await toxic.interrupt.wait()  # kick() runs before update()/detach(), in one step
                if self.closed or toxic.removed:
                    return
            elif kind == "reset_peer":
                if not state.fired:
                    state.fired = True
                    self._spawn(self._close_later(attrs["timeout"] / 1000, reset=True))
                return
            elif kind == "slow_close":
                if data is None:
                    await _pause(toxic, attrs["delay"] / 1000)
            elif data is None:
                continue  # the other toxics let EOF through at once
            elif kind == "latency":
                delay = attrs["latency"]
                if attrs["jitter"] > 0:
                    delay += _rng.randint(-attrs["jitter"], attrs["jitter"])
                await _pause(toxic, ts + delay / 1000 - time.monotonic())
            elif kind == "limit_data":
                limit = attrs["bytes"]
                data = data[: max(limit - state.transferred, 0)]
                if data:
                    state.transferred += len(data)
                    await self._deliver(chain, i, data, ts, dst)
                if state.transferred >= limit:
                    self.close()
                return
            elif kind == "bandwidth":
                rate = attrs["rate"]  # KB/s == bytes per millisecond
                if rate <= 0:
                    continue
                step = rate * 100  # Go sends big chunks in 100 ms slices
                throttled = True
                while throttled and len(data) > step:
                    throttled = await _pause(toxic, 0.1)
                    if throttled:
                        await self._deliver(chain, i, data[:step], ts, dst)
                        data = data[step:]
                if throttled:
                    await _pause(toxic, len(data) / rate / 1000)
                await self._deliver(chain, i, data, ts, dst)
                return
            elif kind == "slicer":
                average, variation = attrs["average_size"], attrs["size_variation"]
                if average <= 0:
                    continue
                first = True
                while data:
                    if not first and not await _pause(toxic, attrs["delay"] / 1_000_000):
                        break  # interrupted: the rest goes on in one piece
                    first = False
                    size = max(1, average + (_rng.randint(-variation, variation) if variation > 0 else 0))
                    await self._deliver(chain, i, data[:size], ts, dst)
                    data = data[size:]
                if data:
                    await self._deliver(chain, i, data, ts, dst)
                return
        if self.closed:
            return
        if data is None:
            self.close()  # EOF on one side fully closes the other, as in Toxiproxy
            return
        dst.write(data)
        await dst.drain()

    def close(self, *, reset: bool = False, abort: bool = False) -> None:
        """FIN-closes both sockets (flushing what was written), or RSTs them, or drops them at once."""
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        loop = asyncio.get_running_loop()
        writers = [self.client[1]] + ([self.upstream[1]] if self.upstream else [])
        for writer in writers:
            if reset:
                _set_rst_on_close(writer)
                writer.transport.abort()
            elif abort:
                writer.transport.abort()
            else:
                writer.close()
                loop.call_later(_CLOSE_GRACE, writer.transport.abort)
        for state in self.states.values():
            if state.timer is not None:
                state.timer.cancel()
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current:
                task.cancel()


# --------------------------------------------------------------------------- proxies


class _Proxy:
    def __init__(self, name: str, listen: str, upstream: str) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.toxics: dict[str, _Toxic] = {}
        self.links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    def chain(self, stream: str) -> list[_Toxic]:
        return [t for t in self.toxics.values() if t.stream == stream]

    def toxics_json(self) -> list[Json]:
        return [t.to_json() for s in (UPSTREAM, DOWNSTREAM) for t in self.chain(s)]

    def to_json(self) -> Json:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": self.toxics_json()}

    async def start(self) -> None:
        """Binds ``listen`` and rewrites it to the real address, so re-enabling reuses the same port."""
        if self._server is not None:
            return
        host, port = _split_hostport(self.listen, "listen")
        try:
            server = await asyncio.start_server(self._accept, host, port, reuse_address=True)
        except OSError as exc:
            raise ApiError(500, f"listen {self.listen}: {exc.strerror or exc}") from exc
        bound = server.sockets[0].getsockname()
        self._server = server
        self.listen = _format_hostport(bound[0], bound[1])
        self.enabled = True
        log.info("proxy %s: listening on %s -> %s", self.name, self.listen, self.upstream)

    def stop(self, *, abort: bool = False) -> None:
        """Closes the listener (new connects are refused) and every live connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.close(abort=abort)
        self.enabled = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self, reader, writer)
        self.links.add(link)
        await link.run()

    def add_toxic(self, toxic: _Toxic) -> None:
        self.toxics[toxic.name] = toxic
        for link in list(self.links):
            link.attach(toxic)

    def update_toxic(self, toxic: _Toxic) -> None:
        toxic.kick()
        for link in list(self.links):
            link.update(toxic)

    def remove_toxic(self, toxic: _Toxic) -> None:
        del self.toxics[toxic.name]
        toxic.removed = True
        toxic.kick()
        for link in list(self.links):
            link.detach(toxic)

    def remove_all_toxics(self) -> None:
        for toxic in list(self.toxics.values()):
            self.remove_toxic(toxic)


# --------------------------------------------------------------------------- API


def _object_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "bad request body") from exc


def _dict_body(body: bytes) -> Json:
    data = _object_body(body)
    if not isinstance(data, dict):
        raise ApiError(400, "bad request body: expected a JSON object")
    return data


@dataclass
class _ProxyInput:
    name: str
    listen: str
    upstream: str
    enabled: bool


def _proxy_input(data: object) -> _ProxyInput:
    if not isinstance(data, dict):
        raise ApiError(400, "bad request body: expected a JSON object")
    name = _check_name(data.get("name"), "name")
    upstream = data.get("upstream")
    if not upstream:
        raise ApiError(400, "missing required field: upstream")
    _split_hostport(upstream, "upstream")
    listen = _normalise_listen(data.get("listen") or "127.0.0.1:0")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ApiError(400, "enabled must be a boolean")
    return _ProxyInput(name, listen, str(upstream), enabled)


def _normalise_listen(value: object) -> str:
    host, port = _split_hostport(value, "listen")
    return _format_hostport(_loopback_host(host, "listen"), port)


class FaultProxy:
    """The proxy collection and its HTTP API. All methods run on the one event loop that owns it."""

    def __init__(self) -> None:
        self.proxies: dict[str, _Proxy] = {}
        self._lock = asyncio.Lock()  # API mutations await (bind), so serialise them
        self._api: asyncio.Server | None = None

    async def start_api(self, host: str = "127.0.0.1", port: int = DEFAULT_API_PORT) -> tuple[str, int]:
        """Binds the HTTP API on a loopback address; returns the bound (host, port)."""
        try:
            host = _loopback_host(host, "API listen")
        except ApiError as exc:
            raise ValueError(exc.message) from None
        self._api = await asyncio.start_server(self._serve_http, host, port, limit=_MAX_HEADER,
                                               reuse_address=True)
        bound = self._api.sockets[0].getsockname()
        log.info("faultproxy API on %s", _format_hostport(bound[0], bound[1]))
        return bound[0], bound[1]

    async def close(self) -> None:
        """Stops the API and drops every proxy and connection at once (shutdown path)."""
        if self._api is not None:
            self._api.close()
            self._api = None
        for proxy in list(self.proxies.values()):
            proxy.remove_all_toxics()
            proxy.stop(abort=True)
        self.proxies.clear()
        await asyncio.sleep(0)  # let the aborted transports run connection_lost

    # -- HTTP plumbing: one request per connection, Connection: close --

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(self._read_request(reader), _READ_REQUEST_TIMEOUT)
                if request is None:
                    return
                status, payload = await self.dispatch(*request)
            except ApiError as exc:
                status, payload = exc.status, exc.body()
            except TimeoutError:
                status, payload = 408, ApiError(408, "request timeout").body()
            except Exception:
                log.exception("faultproxy API: request failed")
                status, payload = 500, ApiError(500, "internal error").body()
            await self._respond(writer, status, payload)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ApiError(431, "request header too large") from None
        except asyncio.IncompleteReadError:
            return None  # client went away (or a bare TCP probe such as Toxiproxy.running())
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ApiError(400, "malformed request line")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise ApiError(400, "malformed header")
            headers[key.strip().lower()] = value.strip()
        if headers.get("user-agent", "").startswith("Mozilla/"):
            raise ApiError(403, "User agent not allowed")  # Toxiproxy's CSRF guard against browsers
        if "transfer-encoding" in headers:
            raise ApiError(400, "transfer-encoding is not supported; send Content-Length")
        length_s = headers.get("content-length", "0")
        if not (length_s.isascii() and length_s.isdigit()):
            raise ApiError(400, "bad content-length")
        length = int(length_s)
        if length > _MAX_BODY:
            raise ApiError(413, "request body too large")
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            return None
        return method, urlsplit(target).path, body

    @staticmethod
    async def _respond(writer: asyncio.StreamWriter, status: int, payload: Any) -> None:
        phrase = http.HTTPStatus(status).phrase
        if status == 204:
            head = f"HTTP/1.1 204 {phrase}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode("ascii"))
        else:
            body = json.dumps(payload).encode() + b"\n"
            head = (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode("ascii") + body)
        await writer.drain()

    # -- routing --

    async def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        """Routes one request; returns (status, JSON payload). Raises ApiError for error statuses."""
        stripped = path.strip("/")
        parts = [unquote(p) for p in stripped.split("/")] if stripped else []
        async with self._lock:
            match method, parts:
                case "GET", ["proxies"]:
                    return 200, {name: p.to_json() for name, p in self.proxies.items()}
                case "POST", ["proxies"]:
                    return 201, (await self._create(_proxy_input(_object_body(body)))).to_json()
                case "POST", ["populate"]:
                    return await self._populate(_object_body(body))
                case "POST", ["reset"]:
                    await self._reset()
                    return 204, None
                case "GET", ["version"]:
                    return 200, {"version": VERSION}
                case "GET", ["proxies", name]:
                    return 200, self._proxy(name).to_json()
                case "POST" | "PATCH", ["proxies", name]:
                    return 200, (await self._update(self._proxy(name), _dict_body(body))).to_json()
                case "DELETE", ["proxies", name]:
                    self._delete(self._proxy(name))
                    return 204, None
                case "GET", ["proxies", name, "toxics"]:
                    return 200, self._proxy(name).toxics_json()
                case "POST", ["proxies", name, "toxics"]:
                    return 200, self._add_toxic(self._proxy(name), _dict_body(body)).to_json()
                case "GET", ["proxies", name, "toxics", tname]:
                    return 200, self._toxic(self._proxy(name), tname).to_json()
                case "POST" | "PATCH", ["proxies", name, "toxics", tname]:
                    proxy = self._proxy(name)
                    toxic = self._update_toxic(proxy, self._toxic(proxy, tname), _dict_body(body))
                    return 200, toxic.to_json()
                case "DELETE", ["proxies", name, "toxics", tname]:
                    proxy = self._proxy(name)
                    proxy.remove_toxic(self._toxic(proxy, tname))
                    return 204, None
                case _, (["proxies"] | ["populate"] | ["reset"] | ["version"] | ["proxies", _]
                         | ["proxies", _, "toxics"] | ["proxies", _, "toxics", _]):
                    raise ApiError(405, "method not allowed")
                case _:
                    raise ApiError(404, "not found")

    def _proxy(self, name: str) -> _Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(404, "proxy not found")
        return proxy

    @staticmethod
    def _toxic(proxy: _Proxy, name: str) -> _Toxic:
        toxic = proxy.toxics.get(name)
        if toxic is None:
            raise ApiError(404, "toxic not found")
        return toxic

    async def _create(self, spec: _ProxyInput) -> _Proxy:
        if spec.name in self.proxies:
            raise ApiError(409, "proxy already exists")
        proxy = _Proxy(spec.name, spec.listen, spec.upstream)
        if spec.enabled:
            await proxy.start()
        self.proxies[spec.name] = proxy
        return proxy

    def _delete(self, proxy: _Proxy) -> None:
        proxy.remove_all_toxics()
        proxy.stop()
        del self.proxies[proxy.name]
        log.info("proxy %s: deleted", proxy.name)

    async def _update(self, proxy: _Proxy, data: Json) -> _Proxy:
        """Missing fields keep their values; a new listen or upstream restarts the proxy."""
        listen = _normalise_listen(data["listen"]) if "listen" in data else proxy.listen
        upstream = proxy.upstream
        if "upstream" in data:
            _split_hostport(data["upstream"], "upstream")
            upstream = str(data["upstream"])
        enabled = data.get("enabled", proxy.enabled)
        if not isinstance(enabled, bool):
            raise ApiError(400, "enabled must be a boolean")
        if listen != proxy.listen or upstream != proxy.upstream:
            proxy.stop()
            proxy.listen, proxy.upstream = listen, upstream
        if enabled:
            await proxy.start()
        elif proxy.enabled:
            proxy.stop()
            log.info("proxy %s: disabled", proxy.name)
        return proxy

    def _add_toxic(self, proxy: _Proxy, data: Json) -> _Toxic:
        kind = data.get("type")
        if not isinstance(kind, str) or kind not in TOXIC_TYPES:
            raise ApiError(400, "invalid toxic type")
        stream = data.get("stream") or DOWNSTREAM
        if not isinstance(stream, str) or stream.lower() not in (UPSTREAM, DOWNSTREAM):
            raise ApiError(400, "stream was invalid, can be either upstream or downstream")
        stream = stream.lower()
        name = _check_name(data.get("name") or f"{kind}_{stream}", "toxic name")
        toxicity = _parse_toxicity(data.get("toxicity", 1.0))
        attributes = _merge_attributes(kind, TOXIC_TYPES[kind], data.get("attributes"))
        if name in proxy.toxics:
            raise ApiError(409, "toxic already exists")
        toxic = _Toxic(name, kind, stream, toxicity, attributes)
        proxy.add_toxic(toxic)
        log.info("proxy %s: toxic %s added %s", proxy.name, name, toxic.to_json())
        return toxic

    @staticmethod
    def _update_toxic(proxy: _Proxy, toxic: _Toxic, data: Json) -> _Toxic:
        """Only attributes and toxicity change; type and stream are fixed, as in Toxiproxy."""
        attributes = _merge_attributes(toxic.type, toxic.attributes, data.get("attributes"))
        toxicity = _parse_toxicity(data["toxicity"]) if "toxicity" in data else toxic.toxicity
        toxic.attributes, toxic.toxicity = attributes, toxicity
        proxy.update_toxic(toxic)
        return toxic

    async def _reset(self) -> None:
        """Re-enables every proxy and removes every toxic; connections stay (except timeout-held ones)."""
        for proxy in self.proxies.values():
            proxy.remove_all_toxics()
            await proxy.start()

    async def _populate(self, data: object) -> tuple[int, Any]:
        """Creates or replaces proxies in bulk; one with the same listen and upstream is left as is."""
        if not isinstance(data, list):
            raise ApiError(400, "bad request body: expected a JSON array of proxies")
        specs = [_proxy_input(item) for item in data]
        done: list[_Proxy] = []
        for spec in specs:
            existing = self.proxies.get(spec.name)
            if existing is not None and (existing.listen, existing.upstream) == (spec.listen, spec.upstream):
                done.append(existing)
                continue
            if existing is not None:
                self._delete(existing)
            try:
                done.append(await self._create(spec))
            except ApiError as exc:
                return exc.status, {**exc.body(), "proxies": [p.to_json() for p in done]}
        return 201, {"proxies": [p.to_json() for p in done]}


# --------------------------------------------------------------------------- in-process server


class FaultProxyServer:
    """Runs a :class:`FaultProxy` on a background thread with its own event loop (for tests).

    Use as a context manager; ``api_port`` is the bound API port. ``configure_client()`` points
    toxiproxy-python at it, which sets that library's class attributes for the whole process.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._app: FaultProxy | None = None
        self._api_port: int | None = None

    @property
    def api_port(self) -> int:
        if self._api_port is None:
            raise RuntimeError("FaultProxyServer is not running")
        return self._api_port

    @property
    def url(self) -> str:
        return f"http://{_format_hostport(self.host, self.api_port)}"

    def configure_client(self) -> None:
        """Points toxiproxy-python (class-level, process-wide) at this server."""
        from toxiproxy import Toxiproxy  # test extra; imported late so the module works without it

        Toxiproxy().update_api_consumer(self.host, self.api_port)

    def start(self) -> FaultProxyServer:
        if self._thread is not None:
            raise RuntimeError("FaultProxyServer already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app = FaultProxy()
            try:
                _, self._api_port = loop.run_until_complete(app.start_api(self.host, self._port))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            self._loop, self._app = loop, app
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(app.close())
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("faultproxy did not start")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stops the loop; every proxy and connection is dropped."""
        if self._thread is None:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._thread = None
        self._loop = self._app = None
        self._api_port = None

    def __enter__(self) -> FaultProxyServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------- process mode


async def _serve(host: str, port: int, config: Path | None) -> int:
    app = FaultProxy()
    bound_host, bound_port = await app.start_api(host, port)
    if config is not None:
        try:
            status, payload = await app.dispatch("POST", "/populate", config.read_bytes())
            if status != 201:
                raise ApiError(status, str(payload.get("error", payload)))
        except (ApiError, OSError) as exc:
            print(f"faultproxy: config {config}: {exc}", file=sys.stderr)
            await app.close()
            return 1
    print(f"faultproxy: API listening on {_format_hostport(bound_host, bound_port)}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m tests.lab.faultproxy`` (demo script, manual chaos)."""
    parser = argparse.ArgumentParser(prog="python -m tests.lab.faultproxy",
                                     description="Toxiproxy-compatible fault proxy (loopback only).")
    parser.add_argument("--listen", default=f"127.0.0.1:{DEFAULT_API_PORT}",
                        help="API address, loopback host:port (default %(default)s)")
    parser.add_argument("--config", type=Path, help="JSON array of proxies to create at start (as /populate)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = _split_hostport(args.listen, "--listen")
        host = _loopback_host(host, "--listen")
    except ApiError as exc:
        parser.error(exc.message)
    try:
        return asyncio.run(_serve(host, port, args.config))
    except OSError as exc:
        print(f"faultproxy: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
