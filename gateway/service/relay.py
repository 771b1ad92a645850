"""The jgw daemon of one node: its broker links, its routes and the services around them.

Start order: state directory and lock → metrics endpoint → dedup store → broker links → routes
(each declares its topology when its links come up) → control socket → READY=1 once every route
has made its first attempt (a route whose broker is down keeps trying; ``jgw_broker_up 0`` says so).
Stop (SIGTERM/SIGINT): STOPPING=1, every route stops taking messages and waits up to
``shutdown_grace`` for those in hand to settle; what is left stays in the source queues.

Security: talks to the configured brokers, listens on the metrics address (loopback unless TLS with
client certificates) and on a 0600 control socket in the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import fcntl
import logging
import os
import signal
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.amqp.link import Link
from gateway.amqp.topology import delivered_stream
from gateway.audit import AuditLog, payload_digest
from gateway.audit.format import OPERATOR_EVENTS
from gateway.cluster.members import queue_members
from gateway.cluster.replication import Replication
from gateway.cluster.stream import StreamLog
from gateway.config import BrokerConfig, Config, with_passwords
from gateway.errors import JgwError, TempFailError, UnavailableError
from gateway.files.endpoint import Account, Endpoint
from gateway.metrics import Metrics
from gateway.policy.redact import IdKey
from gateway.route.chain import build_stages, load_material, node_context
from gateway.route.commit import Committer, Evidence, NoEvidence
from gateway.route.dedup import DedupStore
from gateway.route.ends import Ends
from gateway.route.runner import RouteRunner
from gateway.service import preflight
from gateway.service.control import ControlServer
from gateway.service.metrics_http import MetricsServer, serve_metrics, server_tls_context
from gateway.service.sdnotify import Notifier
from gateway.service.watchdog import ProgressWatchdog

if TYPE_CHECKING:
    from gateway.files.endpoint import Endpoint
    from gateway.keyring import Keyring
    from gateway.pki.material import NodeMaterial

log = logging.getLogger("jgw.relay")

READY_TIMEOUT = 60.0  # READY=1 at the latest after this, even if a broker never answered
MEMBERS_EVERY = 5.0  # how often the management API is asked for each queue's members and leader


class Relay:
    def __init__(self, config: Config, *, notifier: Notifier | None = None) -> None:
        self.config = config
        self.metrics = Metrics(config.node.id)
        # Keys and certificates first: stages check their recipients and keys when built.
        self.material = load_material(config)
        self.node = node_context(config, None if self.material is None else self._keyring)
        self._reloading = asyncio.Lock()
        self.evidence: Evidence = NoEvidence()
        self._audit: AuditLog | None = None
        self._committer: Committer | None = None
        self.notifier = notifier or Notifier(None)
        self.links: dict[tuple[str, str], Link] = {}
        #: Fingerprint of the TLS files each link (by name) last made a connection from; see reload.
        self._tls_used: dict[str, str] = {}
        self.routes: dict[str, RouteRunner] = {}
        self.started_at = time.time()
        #: The last certificate reload: {"at": unix time, "ok": bool, "error"/"generation": ...}; None until one.
        self.last_reload: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._lock_fd: int | None = None
        self._metrics_server: MetricsServer | None = None
        self._control: ControlServer | None = None
        self._dedup: DedupStore | None = None
        self._endpoint: Endpoint | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="jgw-stage")
        # one thread for commits: they are serialised anyway, and must not queue behind crypto
        self._io_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jgw-commit")
        # Stages are built (and so validated) before anything connects: a bad stage table is a
        # configuration error at start, not a surprise at the first message.
        self._stages = {name: build_stages(config, route, self.node)
                        for name, route in config.routes.items() if route.enabled}
        # What check-config refuses, run refuses, in the same order and words (gateway.service.preflight);
        # then the brokers' passwords are read from their files or systemd credentials.
        for text in preflight.check(config):
            log.warning("config warning", extra={"warning": text})
        self.config = with_passwords(config)

    # ------------------------------------------------------------------ run

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._take_lock()
        try:
            await self._start()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            watchdog = ProgressWatchdog.from_environ(self.notifier, self.healthy)
            wd_task = loop.create_task(watchdog.run()) if watchdog is not None else None
            await self._wait_started()
            self.notifier.ready(self._status_line())
            log.info("jgw ready", extra={"node": self.config.node.id, "routes": len(self.routes)})
            status_task = loop.create_task(self._status_updates())
            members_task = loop.create_task(self._watch_members())
            await self._stop.wait()
            status_task.cancel()
            members_task.cancel()
            await self._drain()
            if wd_task is not None:
                wd_task.cancel()
            return 0
        finally:
            await self._shutdown()
            self._release_lock()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested; draining", extra={"grace_s": self.config.node.shutdown_grace})
            self._stop.set()

    async def _start(self) -> None:
        cfg = self.config
        if cfg.node.metrics_listen is not None:
            host, port = cfg.node.metrics_listen
            try:
                tls = cfg.node.metrics_tls
                ctx = None if tls is None else server_tls_context(tls.cert, tls.key, tls.client_ca)
                self._metrics_server = await serve_metrics(self.metrics.registry, host, port, ssl_context=ctx,
                                                           health=self.healthy, config_file=str(cfg.file))
            except OSError as exc:
                raise UnavailableError(f"metrics_listen {host}:{port}: {exc.strerror or exc}") from exc
        self._export_expiries()
        for result in ("success", "failure"):
            self.metrics.reloads.labels(result)
        self._dedup = DedupStore(cfg.node.state_dir / "dedup.sqlite3")
        if cfg.audit is not None:
            a = cfg.audit
            self._audit = AuditLog.open(a.directory, cfg.node.id, retention=a.retention,
                                        segment_bytes=a.segment_bytes, segment_age=a.segment_age,
                                        id_key=None if a.id_key_file is None else IdKey(a.id_key_file))
            self.evidence = self._audit
            self.evidence.record("start", node=cfg.node.id, pid=os.getpid(), config=str(cfg.file),
                                 digest=payload_digest(cfg.file.read_bytes()), routes=sorted(self._stages))
            self._audit.commit()
        self._committer = Committer(self._dedup, self.evidence, self._io_executor)
        ends = Ends(cfg, self.metrics, self._link)  # which source and sink each route gets
        for name, stages in self._stages.items():
            route = cfg.routes[name]
            source, sink = ends.build(route)
            replication = None
            if route.replicate:
                broker = route.source.broker
                stream = StreamLog(delivered_stream(route), instance=cfg.node.id,
                                   publish_link=self._link(broker, "publish"),
                                   follow_link=self._link(broker, "consume"), window=route.dedup_window)
                replication = Replication(stream)
            runner = RouteRunner(route, stages, node_id=cfg.node.id, metrics=self.metrics, dedup=self._dedup,
                                 executor=self._executor, source=source, sink=sink, committer=self._committer,
                                 evidence=self.evidence, replication=replication)
            self.routes[name] = runner
        await self._start_endpoint()
        for link in self.links.values():
            link.start()
        for runner in self.routes.values():
            runner.start()
        self._control = ControlServer(cfg.node.control_socket, {"status": self._control_status,
                                                                "reload": self._control_reload,
                                                                "record": self._control_record})
        await self._control.start()

    async def _start_endpoint(self) -> None:
        """jgw's own SFTP server, when a route takes files from it (one account per business system)."""
        ep = self.config.files.endpoint
        if ep is None or not any(r.source.kind == "endpoint" for r in self.config.routes.values() if r.enabled):
            return
        accounts = [Account(a.name, a.authorized_keys, a.directory) for a in ep.accounts.values()]
        self._endpoint = Endpoint(host_key=ep.host_key, accounts=accounts, host=ep.host, port=ep.port,
                                  login_timeout=ep.login_timeout)
        try:
            await self._endpoint.start()
        except OSError as exc:
            raise UnavailableError(f"endpoint.listen {ep.host}:{ep.port}: {exc.strerror or exc}") from exc
        log.info("sftp endpoint listening", extra={"host": ep.host, "port": self._endpoint.port,
                                                   "accounts": len(accounts)})

    def _link(self, broker: str, role: str) -> Link:
        key = (broker, role)
        if key not in self.links:
            cfg = self.config.brokers[broker]
            name = f"{broker}/{role}"
            factory = (lambda: self._link_context(name, cfg)) if cfg.tls is not None else None
            self.links[key] = Link(cfg, role, self.config.node.id, self.metrics, ssl_context_factory=factory)
        return self.links[key]

    # ------------------------------------------------------------------ keys, certificates, reload

    def _keyring(self) -> Keyring:
        assert self.material is not None
        return self.material.keyring

    def _ssl_context(self, broker: BrokerConfig, material: NodeMaterial | None = None) -> ssl.SSLContext:
        """A fresh client context with the node's live TLS identity (a new one per connection)."""
        material = material or self.material
        if material is None or broker.tls is None:
            raise UnavailableError(f"broker {broker.name}: TLS configured but no certificates loaded")
        return material.ssl_context_for(broker.tls)

    def _link_context(self, link_name: str, broker: BrokerConfig) -> ssl.SSLContext:
        """The context for a link's next connection; remembers what it is made of, so that a reload
        moves only the links whose TLS files changed (fingerprint first: a file replaced meanwhile
        then reads as changed at the next reload, never the reverse)."""
        if self.material is not None and broker.tls is not None:
            self._tls_used[link_name] = self.material.tls_files_for(broker.tls).fingerprint()
        return self._ssl_context(broker)

    def _export_expiries(self) -> None:
        if self.material is None:
            return
        for problem in self.material.peer_problems:
            log.warning("peer left out: its certificates were refused", extra={"error": str(problem)})
        self.metrics.cert_expiry.clear()
        self.metrics.crl_next_update.clear()
        for e in self.material.expiries:
            self.metrics.cert_expiry.labels(e.purpose, e.subject).set(e.not_after.timestamp())
        for crl in self.material.crls:
            self.metrics.crl_next_update.labels(crl.issuer).set(crl.next_update.timestamp())

    def request_reload(self) -> None:
        asyncio.get_running_loop().create_task(self.reload())

    async def reload(self) -> dict[str, Any]:
        """SIGHUP: load and validate the certificates off to the side, make sure every TLS broker
        accepts the new identity, then swap: keyring first, then each TLS link moves to a new
        connection. Anything wrong: keep running on the old material and say why.

        Brokers are probed only when the TLS client certificate changed: a new CRL or a peer's
        certificate must take effect even while a broker is unreachable (LGWAN cut)."""
        async with self._reloading:
            self.notifier.reloading("reloading certificates")
            log.info("reload requested")
            loop = asyncio.get_running_loop()
            old = self.material
            tls_links = [link for link in self.links.values() if link.broker.tls is not None]
            try:
                new = await loop.run_in_executor(None, load_material, self.config)
                if new is not None and not await loop.run_in_executor(None, _same_tls_identity, old, new):
                    for link in tls_links:
                        await link.probe(lambda link=link: self._ssl_context(link.broker, new))  # type: ignore[misc]
            except JgwError as exc:
                self.metrics.reloads.labels("failure").inc()
                log.error("reload refused; still running on the previous certificates", extra={"error": str(exc)})
                self.evidence.record("cert-change", node=self.config.node.id, outcome="refused", reason=str(exc))
                self.notifier.ready(f"reload FAILED ({exc}); {self._status_line()}")
                self.last_reload = {"at": time.time(), "ok": False, "error": str(exc)}
                return {"ok": False, "error": str(exc)}
            self.material = new
            self._export_expiries()
            changed = await loop.run_in_executor(None, self._tls_changed, tls_links, new)
            moved, stayed = 0, []
            for link in changed:
                try:
                    moved += await link.rotate()
                except JgwError as exc:  # this link keeps its old connection until it reconnects
                    stayed.append(f"{link.name}: {exc}")
            generation = new.generation if new is not None else None
            previous = old.generation if old is not None else None
            self.evidence.record("cert-change", node=self.config.node.id, outcome="loaded", new=generation,
                                 old=previous)
            self.metrics.reloads.labels("success").inc()
            self.metrics.last_reload.set(time.time())
            log.info("reload done", extra={"generation": generation, "links_moved": moved,
                                           "links_not_moved": len(stayed),
                                           "links_unchanged": len(tls_links) - len(changed)})
            for text in stayed:
                log.warning("link stays on its current connection until it reconnects", extra={"error": text})
            self.notifier.ready(self._status_line())
            self.last_reload = {"at": time.time(), "ok": True, "generation": generation}
            return {"ok": True, "generation": generation, "links_moved": moved, "links_not_moved": stayed,
                    "links_unchanged": len(tls_links) - len(changed)}

    def _tls_changed(self, links: list[Link], new: NodeMaterial | None) -> list[Link]:
        """The links whose connection was made from other TLS files than ``new`` has: a new client
        certificate, anchor or CRL moves them; a peer's new signing or encryption certificate does not."""
        if new is None:
            return links
        return [link for link in links if link.broker.tls is None
                or self._tls_used.get(link.name) != new.tls_files_for(link.broker.tls).fingerprint()]

    async def _wait_started(self) -> None:
        waits = [asyncio.ensure_future(r.started.wait()) for r in self.routes.values()]
        waits += [asyncio.ensure_future(link.first_attempt_done.wait()) for link in self.links.values()]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=READY_TIMEOUT)
            for fut in pending:
                fut.cancel()

    async def _drain(self) -> int:
        self.notifier.stopping("draining in-flight messages")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.node.shutdown_grace
        results = await asyncio.gather(*(r.drain(deadline) for r in self.routes.values()))
        left = sum(results)
        if left:
            log.warning("stopped with messages still unsettled; they stay in their source queues",
                        extra={"count": left})
        return left

    async def _shutdown(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.close()
        for runner in self.routes.values():
            await runner.stop()
        for link in self.links.values():
            await link.stop()
        if self._control is not None:
            await self._control.close()
        if self._metrics_server is not None:
            await self._metrics_server.close()
        if self._committer is not None:
            await self._committer.flush()
        if self._dedup is not None:
            self._dedup.close()
        if self._audit is not None:
            self._audit.record("stop", node=self.config.node.id, pid=os.getpid())
            self._audit.close()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._io_executor.shutdown(wait=True)

    # ------------------------------------------------------------------ state dir lock

    def _take_lock(self) -> None:
        state = self.config.node.state_dir
        try:
            state.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(state / "jgw.pid", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UnavailableError(f"state_dir {state}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise TempFailError(f"another jgw is already running with state_dir {state}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ health and status

    def healthy(self) -> bool:
        """For the systemd watchdog: every route's worker keeps up with its inbox."""
        return all(r.progressing() for r in self.routes.values())

    def status(self) -> dict[str, Any]:
        links = {f"{b}/{role}": {"up": link.state.up, "blocked": link.state.blocked, "url": link.state.url,
                                 "error": link.state.last_error}
                 for (b, role), link in self.links.items()}
        routes = [r.status().__dict__ for r in self.routes.values()]
        endpoint = None
        if self._endpoint is not None:
            endpoint = {"listen": f"{self._endpoint.host}:{self._endpoint.port}",
                        "accounts": sorted(self._endpoint.accounts)}
        return {"ok": True, "node": self.config.node.id, "pid": os.getpid(), "version": __version__,
                "endpoint": endpoint,
                "started_at": self.started_at, "last_reload": self.last_reload,
                "uptime_seconds": round(time.time() - self.started_at, 1), "links": links, "routes": routes,
                "generation": self.material.generation if self.material is not None else None}

    async def _control_status(self, _request: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _control_reload(self, _request: dict[str, Any]) -> dict[str, Any]:
        return await self.reload()

    async def _control_record(self, request: dict[str, Any]) -> dict[str, Any]:
        """An operator command (jgw dlq replay) records its action in the log this daemon holds."""
        event, fields = request.get("event"), request.get("fields")
        if event not in OPERATOR_EVENTS or not isinstance(fields, dict):
            return {"ok": False, "error": f"not an operator event: {event!r}"}
        if self._committer is None or isinstance(self.evidence, NoEvidence):
            return {"ok": True}
        try:
            self.evidence.record(event, **fields)
        except (ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}
        await self._committer.flush()
        return {"ok": True}

    def _status_line(self) -> str:
        states = [r.status().state for r in self.routes.values()]
        running = states.count("running")
        return f"{running}/{len(states)} routes running"

    async def _watch_members(self) -> None:
        """Each route's source queue: members, online members, leader, active consumer (management API)."""
        loop = asyncio.get_running_loop()
        short: dict[str, bool] = {}
        while True:
            for name, runner in self.routes.items():
                route = runner.cfg
                if route.source.is_file:
                    continue
                broker = self.config.brokers[route.source.broker]
                if not broker.management_urls:
                    continue
                m = await loop.run_in_executor(None, queue_members, broker, route.source.queue)
                runner.set_members(m)
                if m.error:
                    continue
                expected = route.replicas or len(m.members)
                now_short = len(m.online) < expected or len(m.members) < (route.replicas or 0)
                if now_short and not short.get(name):
                    log.warning("queue has fewer online members than configured", extra={
                        "route": name, "queue": route.source.queue, "online": len(m.online),
                        "members": len(m.members), "expected": expected})
                short[name] = now_short
            await asyncio.sleep(MEMBERS_EVERY)

    async def _status_updates(self) -> None:
        last = ""
        while True:
            line = self._status_line()
            if line != last:
                self.notifier.status(line)
                last = line
            await asyncio.sleep(5)


def _same_tls_identity(old: NodeMaterial | None, new: NodeMaterial) -> bool:
    """Whether both use the same TLS client certificate (which the brokers already accepted)."""
    if old is None:
        return False
    try:
        return old.tls.cert.read_bytes() == new.tls.cert.read_bytes()
    except OSError:
        return False


def run(config: Config) -> int:
    """Entry point of ``jgw run``: returns the exit status."""
    faulthandler.enable()  # a watchdog SIGABRT then prints every thread's stack to the journal
    notifier = Notifier.from_environ(forget=True)
    try:
        relay = Relay(config, notifier=notifier)
        return asyncio.run(relay.run())
    except JgwError:
        raise
    finally:
        notifier.close()


def pid_of_running(state_dir: Path) -> int | None:
    """The pid written by a running daemon with this state dir, if it still holds the lock."""
    path = state_dir / "jgw.pid"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
