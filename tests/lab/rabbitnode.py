"""Private RabbitMQ nodes for tests, the demo and benchmarks.

Starts the Debian ``rabbitmq-server`` install as a separate node with its own name, ports, data
directory and Erlang cookie, so a test can kill it, restart it or give it TLS without touching the
machine's own broker. Recipe: ``../shared/research/probes/rmq-node.sh``.

``Cluster`` forms a real RabbitMQ cluster of such nodes (one cookie, ``join_cluster``) and removes it.

Security: development and test use only. Listens on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
_counter = 0


def rabbitmq_installed() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class TlsListener:
    """Files for a TLS listener with mTLS (verify_peer, fail_if_no_peer_cert) and EXTERNAL auth."""

    cacert: Path
    cert: Path
    key: Path
    port: int = 0
    login_from: str = "common_name"


@dataclass
class PrivateNode:
    base: Path
    name: str = ""
    amqp_port: int = 0
    dist_port: int = 0
    plugins: tuple[str, ...] = ()
    tls: TlsListener | None = None
    extra_conf: str = ""
    cookie: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        global _counter
        _counter += 1
        if not self.name:
            self.name = f"jgwt{os.getpid()}x{_counter}"
        self.amqp_port = self.amqp_port or free_port()
        self.dist_port = self.dist_port or free_port()
        if self.tls is not None and not self.tls.port:
            self.tls.port = free_port()
        self.cookie = self.cookie or secrets.token_hex(20)
        self.base = Path(self.base) / self.name

    @property
    def nodename(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    def env(self) -> dict[str, str]:
        b = self.base
        env = dict(os.environ)
        env.update({
            "HOME": str(b),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(b / "mnesia"),
            "RABBITMQ_LOG_BASE": str(b / "log"),
            "RABBITMQ_CONFIG_FILE": str(b / "etc" / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(b / "etc" / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(b / "etc" / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(b / "pid"),
            "RABBITMQ_ALLOW_INPUT": "",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        })
        return env

    def _write_files(self) -> None:
        b = self.base
        for d in ("mnesia", "log", "etc"):
            (b / d).mkdir(parents=True, exist_ok=True)
        cookie = b / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        lines = [
            f"listeners.tcp.1 = 127.0.0.1:{self.amqp_port}",
            "loopback_users.guest = true",
            "log.console = false",
            "log.file.level = info",
        ]
        plugins = list(self.plugins)
        if self.tls is not None:
            t = self.tls
            lines += [
                f"listeners.ssl.1 = 127.0.0.1:{t.port}",
                f"ssl_options.cacertfile = {t.cacert}",
                f"ssl_options.certfile = {t.cert}",
                f"ssl_options.keyfile = {t.key}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = true",
                "ssl_options.versions.1 = tlsv1.3",
                "ssl_options.versions.2 = tlsv1.2",
                "auth_mechanisms.1 = EXTERNAL",
                "auth_mechanisms.2 = PLAIN",
                f"ssl_cert_login_from = {t.login_from}",
            ]
            if "rabbitmq_auth_mechanism_ssl" not in plugins:
                plugins.append("rabbitmq_auth_mechanism_ssl")
        if self.extra_conf:
            lines.append(self.extra_conf)
        (b / "etc" / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (b / "etc" / "enabled_plugins").write_text("[" + ",".join(plugins) + "].\n")
        (b / "etc" / "rabbitmq-env.conf").write_text("# private node: environment comes from the launcher\n")

    def start(self, timeout: float = 90.0) -> PrivateNode:
        if not rabbitmq_installed():
            raise RuntimeError("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        self._write_files()
        log = open(self.base / "stdout.log", "ab")  # noqa: SIM115 - handed to the child
        self._proc = subprocess.Popen([str(RABBIT_BIN / "rabbitmq-server")], env=self.env(), stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        log.close()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"node {self.nodename} exited during start; see {self.base}/log")
            if port_open(self.amqp_port):
                # the port opens before every boot step has finished; ask the node itself
                r = self.ctl("await_startup", "--timeout", "60", check=False, timeout=70)
                if r.returncode == 0:
                    return
            time.sleep(0.3)
        raise TimeoutError(f"node {self.nodename} did not start within {timeout}s; see {self.base}/log")

    def ctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self._cli("rabbitmqctl", *args, check=check, timeout=timeout)

    def plugins_cmd(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._cli("rabbitmq-plugins", *args)

    def _cli(self, tool: str, *args: str, check: bool = True, timeout: float = 60.0
             ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(RABBIT_BIN / tool), "-n", self.nodename, *args], env=self.env(),
                              capture_output=True, text=True, check=check, timeout=timeout)

    def beam_pid(self) -> int | None:
        pidfile = self.base / "pid"
        with contextlib.suppress(OSError, ValueError):
            return int(pidfile.read_text().strip())
        r = subprocess.run(["pgrep", "-f", f"-sname {self.nodename}|{self.nodename}"], capture_output=True,
                           text=True)
        pids = [int(p) for p in r.stdout.split()]
        return pids[0] if pids else None

    def kill(self) -> None:
        """kill -9 the Erlang VM: the crash a power cut or OOM killer would cause."""
        pid = self.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while port_open(self.amqp_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        (self.base / "pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self._proc is None and self.beam_pid() is None:
            return
        r = self.ctl("stop", check=False, timeout=60)
        if r.returncode != 0:
            self.kill()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc = None

    def destroy(self) -> None:
        """Stop the node and remove its data directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def add_vhost(self, vhost: str, user: str = "guest") -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def __enter__(self) -> PrivateNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def start_together(nodes: Sequence[PrivateNode], timeout: float = 90.0) -> None:
    """Start the nodes side by side (each boot takes seconds of waiting); the first error is raised
    once every start has ended, so no node is left half-started behind it."""
    errors: list[BaseException] = []

    def boot(node: PrivateNode) -> None:
        try:
            node.start(timeout)
        except BaseException as exc:  # collected; raised below after every thread ended
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@dataclass
class Cluster:
    """A real RabbitMQ cluster of private nodes on this host: the same Erlang cookie, nodes 2..n
    ``join_cluster`` the first (``../shared/research/tech-stack.md`` §2.3), the management plugin on
    each (jgw asks it for members, leader and the single active consumer). ``destroy`` removes all.
    """

    base: Path
    size: int = 3
    management: bool = True
    nodes: list[PrivateNode] = field(default_factory=list)
    mgmt_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        cookie = secrets.token_hex(20)
        for _ in range(self.size):
            port = free_port()
            # statistics every second (default 5 s): members and the active consumer show sooner
            conf = (f"management.tcp.port = {port}\nmanagement.tcp.ip = 127.0.0.1\n"
                    "collect_statistics_interval = 1000") if self.management else ""
            self.nodes.append(PrivateNode(self.base, cookie=cookie, extra_conf=conf,
                                          plugins=("rabbitmq_management",) if self.management else ()))
            self.mgmt_ports.append(port)

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    @property
    def management_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.mgmt_ports]

    def start(self, timeout: float = 180.0) -> Cluster:
        start_together(self.nodes, timeout)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.nodename)
            node.ctl("start_app")
        self.wait_running(len(self.nodes), timeout=60)
        return self

    def running(self, via: PrivateNode | None = None) -> list[str]:
        """Names of the running nodes, as a live node sees them."""
        for node in [via] if via is not None else self.nodes:
            r = node.ctl("cluster_status", "--formatter", "json", check=False, timeout=30)
            if r.returncode == 0:
                data = json.loads(r.stdout)
                return sorted(data.get("running_nodes", []))
        return []

    def wait_running(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.running()) >= count:
                return
            time.sleep(0.5)
        raise TimeoutError(f"fewer than {count} nodes running after {timeout}s: {self.running()}")

    def queue(self, queue: str, vhost: str = "/") -> dict[str, Any]:
        """The management API's view of a queue (members, online, leader, single_active_consumer_tag)."""
        token = base64.b64encode(b"guest:guest").decode()
        last: Exception | None = None
        for url in self.management_urls:
            req = urllib.request.Request(f"{url}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}",
                                         headers={"Authorization": f"Basic {token}"})
            try:
                with urllib.request.urlopen(req, timeout=3) as resp:
                    answer: dict[str, Any] = json.load(resp)
                    return answer
            except (OSError, ValueError) as exc:
                last = exc
        raise RuntimeError(f"no management API answered for {queue}: {last}")

    def save(self, path: Path) -> None:
        """Write what ``attach`` needs to use this cluster from another process (a developer keeps
        one cluster up between runs: ``JGW_TEST_CLUSTER=FILE``)."""
        path.write_text(json.dumps({"base": str(self.base), "mgmt_ports": self.mgmt_ports, "nodes": [
            {"name": n.name, "amqp_port": n.amqp_port, "dist_port": n.dist_port, "cookie": n.cookie,
             "extra_conf": n.extra_conf, "plugins": list(n.plugins)} for n in self.nodes]}))

    @classmethod
    def attach(cls, path: Path) -> Cluster:
        data = json.loads(path.read_text())
        nodes = [PrivateNode(Path(data["base"]), name=n["name"], amqp_port=n["amqp_port"], dist_port=n["dist_port"],
                             cookie=n["cookie"], extra_conf=n["extra_conf"], plugins=tuple(n["plugins"]))
                 for n in data["nodes"]]
        return cls(Path(data["base"]), size=0, management=bool(data["mgmt_ports"]), nodes=nodes,
                   mgmt_ports=list(data["mgmt_ports"]))

    def node_named(self, nodename: str) -> PrivateNode:
        return next(n for n in self.nodes if n.nodename == nodename)

    def leader(self, queue: str) -> PrivateNode:
        return self.node_named(self.queue(queue)["leader"])

    def restart(self, node: PrivateNode, timeout: float = 120.0) -> None:
        """Start a stopped or killed member again (same name, ports and data: it rejoins)."""
        node.start(timeout)

    def destroy(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()
        for node in self.nodes:
            shutil.rmtree(node.base, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()
