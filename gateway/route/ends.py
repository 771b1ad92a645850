"""Which source and which sink a route gets: the one place that knows every kind of end.

The relay asks here for each route's two ends (``build``); the runner never learns which kind it
drives (``gateway.route.behaviour``). AMQP ends share the node's broker links (one per broker and
role); file ends get their own adapter each: a ``SpoolSource`` on a local directory (for
``endpoint`` routes, the account's directory jgw's SFTP endpoint writes into), an ``SftpLink`` of
their own per route and end (a fault on one route's session never resets another's), a
``SpoolSink`` or ``SftpSink``. File ids (``gateway.files.fileid``) and the sinks' journals live in
the node's state directory.

Security: builds objects from validated config; opens no connection itself (the ends connect when
run). Key files are read by the adapters when they connect, after ``gateway.service.preflight``
checked them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.amqp.link import Link
from gateway.amqp.sink import AmqpSink
from gateway.amqp.source import AmqpSource
from gateway.config import Config, RouteConfig
from gateway.files.adapter import FileSink, FileSource
from gateway.files.fileid import FileIds
from gateway.files.journal import Journals
from gateway.files.route_sink import FileRouteSink
from gateway.files.route_source import FileRouteSource
from gateway.files.sftp import SftpLink, SftpPeer, SftpSink, SftpSource
from gateway.files.spool import SpoolSink, SpoolSource
from gateway.metrics import Metrics
from gateway.route.behaviour import Sink, Source

#: a link of the node for (broker, role)
LinkFor = Callable[[str, str], Link]


def sftp_link(config: Config, server: str) -> SftpLink:
    s = config.files.sftp[server]
    return SftpLink(SftpPeer(s.host, s.port, s.user, s.client_key, s.known_hosts, connect_timeout=s.connect_timeout,
                             keepalive_interval=s.keepalive_interval))


def files_dir(config: Config) -> Path:
    return config.node.state_dir / "files"


class Ends:
    """Builds the ends of a node's routes (the relay keeps one)."""

    def __init__(self, config: Config, metrics: Metrics, link_for: LinkFor) -> None:
        self.config = config
        self.metrics = metrics
        self.link_for = link_for
        self._ids: FileIds | None = None

    def _file_ids(self) -> FileIds:
        if self._ids is None:
            self._ids = FileIds(files_dir(self.config))
        return self._ids

    def build(self, route: RouteConfig) -> tuple[Source, Sink]:
        return self.source(route), self.sink(route)

    def source(self, route: RouteConfig) -> Source:
        if route.source.file is None:
            broker = route.source.broker
            return AmqpSource(route, node_id=self.config.node.id, consume_link=self.link_for(broker, "consume"),
                              side_link=self.link_for(broker, "publish"))
        f = route.source.file
        rule = f.completion.rule()
        if f.kind == "sftp":
            assert f.server is not None
            adapter: FileSource = SftpSource(sftp_link(self.config, f.server), f.directory, rule)
        else:
            adapter = SpoolSource(Path(f.directory), rule)
        return FileRouteSource(route, adapter, ids=self._file_ids(), metrics=self.metrics, server=f.server)

    def sink(self, route: RouteConfig) -> Sink:
        if route.sink.file is None:
            return AmqpSink(route, link=self.link_for(route.sink.broker, "publish"))
        f = route.sink.file
        # the adapters' own sweep of .jgw-*.part files must spare partials a journal can still resume
        sweep_after = 2 * f.partial_timeout
        if f.kind == "sftp":
            assert f.server is not None
            adapter: FileSink = SftpSink(sftp_link(self.config, f.server), f.directory, verify=f.verify,
                                         sweep_after=sweep_after)
        else:
            adapter = SpoolSink(Path(f.directory), fsync=f.fsync, sweep_after=sweep_after)
        journals = Journals(files_dir(self.config) / "journals" / route.name)
        return FileRouteSink(route, adapter, journals=journals, metrics=self.metrics, server=f.server)
