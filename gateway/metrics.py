"""The metric set of a jgw node (Prometheus, prefix ``jgw_``, base units).

Labels are bounded by configuration: ``route`` and ``broker`` are names from the config file,
``reason`` is a short code from a fixed set (see ``docs/operations.md``), ``outcome``, ``role``,
``result`` and ``purpose`` are enumerations. Never a message id, a peer-supplied string or anything
from a payload.

Security: reads nothing from messages but counts and timings.
"""

from __future__ import annotations

import time

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from gateway import __version__

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0, 1800.0, 3600.0)
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

#: Final outcomes of a message at this hop. accepted = sum of these + in flight.
OUTCOMES = ("delivered", "quarantined", "dead_lettered", "duplicate")
#: Outcomes of a file at this hop. A file source: taken = sent + quarantined + dead_lettered + put_back
#: + in hand; a file sink: delivered (under its final name) or duplicate (already there).
FILE_OUTCOMES = ("sent", "delivered", "duplicate", "quarantined", "dead_lettered", "put_back")
FILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class Metrics:
    """One registry per daemon, so several nodes can live in one test process."""

    def __init__(self, node_id: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build = Info("jgw_build", "Version of the running jgw.", registry=r)
        self.build.info({"version": __version__, "node": node_id})
        self.received = Counter("jgw_received_messages", "Messages taken from a route's source.",
                                ["route"], registry=r)
        self.messages = Counter("jgw_messages", "Messages that reached a final outcome at this hop.",
                                ["route", "outcome"], registry=r)
        self.quarantined = Counter("jgw_quarantined_messages", "Messages quarantined, by reason.",
                                   ["route", "reason"], registry=r)
        self.dead_lettered = Counter("jgw_dead_lettered_messages", "Messages dead-lettered, by reason.",
                                     ["route", "reason"], registry=r)
        self.retries = Counter("jgw_retries", "Messages sent to a delayed-retry tier, by reason.",
                               ["route", "reason"], registry=r)
        self.dedup_hits = Counter("jgw_dedup_hits", "Duplicates suppressed by the route's dedup store.",
                                  ["route"], registry=r)
        self.republished = Counter("jgw_republished_messages",
                                   "Publishes repeated after a sink channel or connection was lost.",
                                   ["route"], registry=r)
        self.in_flight = Gauge("jgw_in_flight_messages", "Messages taken from the source, not yet settled.",
                               ["route"], registry=r)
        self.e2e_latency = Histogram("jgw_end_to_end_latency_seconds",
                                     "From the source's publish time to the sink's confirm.",
                                     ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("jgw_stage_latency_seconds",
                                       "Time spent per batch in each stage (open, policy, seal).",
                                       ["route", "stage"], buckets=STAGE_BUCKETS, registry=r)
        self.queue_depth = Gauge("jgw_queue_messages", "Messages waiting in a route's source queue.",
                                 ["route"], registry=r)
        self.oldest_age = Gauge("jgw_queue_oldest_message_age_seconds",
                                "Age of the oldest message this route holds or is waiting on.",
                                ["route"], registry=r)
        self.route_up = Gauge("jgw_route_up", "1 while the route consumes and can publish.", ["route"],
                              registry=r)
        self.route_active = Gauge("jgw_route_active", "1 while this instance consumes the route's queue: the "
                                  "only instance, the active one (single-active), or beside others (shared).",
                                  ["route"], registry=r)
        self.queue_members_online = Gauge("jgw_queue_members_online",
                                          "Online members of the route's source quorum queue (management API).",
                                          ["route"], registry=r)
        self.queue_members_expected = Gauge("jgw_queue_members_expected",
                                            "Members the route's source queue should have (replicas, else its "
                                            "members).", ["route"], registry=r)
        self.fence_trips = Counter("jgw_fence_trips", "Pauses after which the route gave its deliveries back "
                                   "instead of publishing.", ["route"], registry=r)
        self.broker_up = Gauge("jgw_broker_up", "1 while the connection to a broker is open.",
                               ["broker", "role"], registry=r)
        self.broker_blocked = Gauge("jgw_broker_blocked", "1 while a broker has blocked our publishing.",
                                    ["broker"], registry=r)
        self.reconnects = Counter("jgw_broker_reconnects", "Connection attempts after a loss or failure.",
                                  ["broker", "role"], registry=r)
        self.tls_failures = Counter("jgw_tls_handshake_failures", "TLS handshakes that failed, per broker.",
                                    ["broker"], registry=r)
        self.progress = Gauge("jgw_last_progress_timestamp_seconds",
                              "When the relay loop last settled a message or found nothing to do.", registry=r)
        self.reloads = Counter("jgw_reloads", "Configuration and certificate reloads.", ["result"], registry=r)
        self.last_reload = Gauge("jgw_last_reload_success_timestamp_seconds",
                                 "When the last reload succeeded.", registry=r)
        self.cert_expiry = Gauge("jgw_certificate_expiry_timestamp_seconds",
                                 "notAfter of each certificate the node uses or trusts.",
                                 ["purpose", "subject"], registry=r)
        self.crl_next_update = Gauge("jgw_crl_next_update_timestamp_seconds", "nextUpdate of each loaded CRL.",
                                     ["issuer"], registry=r)
        self.files_taken = Counter("jgw_files_taken", "Files a file source started to send.", ["route"], registry=r)
        self.files = Counter("jgw_files", "Files that reached an outcome at this hop.", ["route", "outcome"],
                             registry=r)
        self.file_bytes = Counter("jgw_file_bytes", "Bytes of the files counted in jgw_files_total.",
                                  ["route", "outcome"], registry=r)
        self.file_transfer = Histogram("jgw_file_transfer_seconds",
                                       "A file source: from taking a file to every frame durable at the sink; a "
                                       "file sink: from its first chunk to the rename into place.",
                                       ["route"], buckets=FILE_BUCKETS, registry=r)
        self.files_waiting = Gauge("jgw_files_waiting", "Files in a file source's directory not yet finished "
                                   "(being written, ready, or in hand).", ["route"], registry=r)
        self.file_oldest_waiting = Gauge("jgw_file_oldest_waiting_age_seconds",
                                         "Since when (by this node's clock) the oldest file not yet finished has "
                                         "been seen at the route's source.", ["route"], registry=r)
        self.sftp_up = Gauge("jgw_sftp_session_up", "1 while the route's SFTP session to a server is up.",
                             ["route", "server"], registry=r)
        self.sftp_host_key_failures = Counter("jgw_sftp_host_key_failures",
                                              "SFTP connections refused because the server's host key is not the "
                                              "pinned one.", ["route", "server", "reason"], registry=r)
        self.start_time = Gauge("jgw_start_time_seconds", "When this jgw process started.", registry=r)
        self.start_time.set(time.time())
        self.progress.set(time.time())

    def init_route(self, route: str) -> None:
        """Create every labelled series of a route at zero, so rate() and alerts see them at once."""
        self.received.labels(route)
        for outcome in OUTCOMES:
            self.messages.labels(route, outcome)
        self.dedup_hits.labels(route)
        self.republished.labels(route)
        self.in_flight.labels(route).set(0)
        self.route_up.labels(route).set(0)
        self.route_active.labels(route).set(0)
        self.fence_trips.labels(route)
        self.queue_depth.labels(route)
        self.oldest_age.labels(route).set(0)

    def init_file_route(self, route: str, *, source: bool) -> None:
        """The file series of a route at zero (a file source's or a file sink's)."""
        if source:
            self.files_taken.labels(route)
            self.files_waiting.labels(route).set(0)
            self.file_oldest_waiting.labels(route).set(0)
        for outcome in FILE_OUTCOMES:
            self.files.labels(route, outcome)
            self.file_bytes.labels(route, outcome)
        self.file_transfer.labels(route)

    def init_sftp(self, route: str, server: str) -> None:
        self.sftp_up.labels(route, server).set(0)
        for reason in ("host-key-unknown", "host-key-changed"):
            self.sftp_host_key_failures.labels(route, server, reason)
