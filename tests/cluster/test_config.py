"""The scale-out keys are validated like every other: ``FILE: routes.NAME.KEY: reason``, exit 78;
an ordered route defaults to one instance ("one": no single-active argument), and the topology
carries the arguments RabbitMQ needs for that (no broker needed here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway.amqp.topology import delivered_stream, source_topology
from gateway.cli import main

BASE = """\
[node]
id = "gw-a"
state_dir = "state"

[brokers.site]
urls = ["amqp://guest:guest@127.0.0.1:5701/%2F", "amqp://guest:guest@127.0.0.1:5702/%2F"]
management_urls = ["http://127.0.0.1:15701", "http://127.0.0.1:15702"]
heartbeat = 10

[routes.ido]
personal_number = "allowed"
source = { broker = "site", queue = "ido.in" }
sink = { broker = "site", exchange = "", routing_key = "ido.out" }
"""

ORDERED = BASE + 'ordering = { header = "x-person" }\n'


def load(tmp_path: Path, text: str) -> config_mod.Config:
    p = tmp_path / "jgw.toml"
    p.write_text(text, encoding="utf-8")
    return config_mod.load(p)


def test_an_ordered_route_defaults_to_one_instance_and_its_queue_keeps_its_arguments(tmp_path: Path) -> None:
    """The default never changes an existing queue's arguments (RabbitMQ would refuse it: an upgrade
    must not stop a route whose queue holds messages); standby instances are opted into."""
    r = load(tmp_path, ORDERED).routes["ido"]
    assert (r.consumers, r.replicate, r.replicas) == ("one", False, None)
    queues = {q.name: q.arguments for q in source_topology(r).queues}
    assert "x-single-active-consumer" not in queues["ido.in"]
    assert delivered_stream(r) not in queues
    assert load(tmp_path, ORDERED.replace("heartbeat = 10", "heartbeat = 0")).routes["ido"].consumers == "one"


def test_single_active_replicates_by_default(tmp_path: Path) -> None:
    cfg = load(tmp_path, ORDERED + 'consumers = "single-active"\nreplicas = 3\n')
    r = cfg.routes["ido"]
    assert (r.consumers, r.replicate, r.replicas, r.fence_after) == ("single-active", True, 3, 1.0)
    assert cfg.brokers["site"].management_urls == ("http://127.0.0.1:15701", "http://127.0.0.1:15702")
    queues = {q.name: q.arguments for q in source_topology(r).queues}
    assert queues["ido.in"]["x-single-active-consumer"] is True
    assert queues["ido.in"]["x-quorum-initial-group-size"] == 3
    assert queues[delivered_stream(r)] == {"x-queue-type": "stream", "x-max-age": "604800s",
                                           "x-initial-cluster-size": 3}


def test_an_unordered_route_is_shared_without_replication(tmp_path: Path) -> None:
    r = load(tmp_path, BASE).routes["ido"]
    assert (r.consumers, r.replicate, r.replicas) == ("shared", False, None)
    queues = {q.name: q.arguments for q in source_topology(r).queues}
    assert "x-single-active-consumer" not in queues["ido.in"]
    assert "x-quorum-initial-group-size" not in queues["ido.in"]
    assert delivered_stream(r) not in queues


BAD = [
    ("an ordered route shared", ORDERED + 'consumers = "shared"\n', "routes.ido.consumers", "out of order"),
    ("an unknown consumers mode", BASE + 'consumers = "all"\n', "routes.ido.consumers", "single-active"),
    ("replicas out of range", BASE + "replicas = 0\n", "routes.ido.replicas", "at least 1"),
    ("replication of a shared route", BASE + "replicate = true\n", "routes.ido.replicate", "single-active"),
    ("replication without dedup", ORDERED + 'consumers = "single-active"\ndedup = false\nreplicate = true\n',
     "routes.ido.replicate",
     "dedup = true"),
    ("replication of a route with one instance", ORDERED + "replicate = true\n", "routes.ido.replicate",
     "single-active"),
    ("a fence as long as the heartbeat", ORDERED + 'consumers = "single-active"\nfence_after = "10s"\n',
     "routes.ido.fence_after", "shorter than broker 'site'"),
    ("single-active without heartbeats", ORDERED.replace("heartbeat = 10", "heartbeat = 0")
     + 'consumers = "single-active"\n', "routes.ido.consumers", "heartbeat > 0"),
    ("a management URL with a password", BASE.replace("http://127.0.0.1:15701", "http://u:p@127.0.0.1:15701"),
     "brokers.site.management_urls[0]", "without a password"),
    ("a management URL that is not http", BASE.replace("http://127.0.0.1:15702", "amqp://127.0.0.1:15702"),
     "brokers.site.management_urls[1]", "http(s)://"),
]


@pytest.mark.parametrize(("case", "text", "key", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_scale_out_keys_name_file_key_and_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      case: str, text: str, key: str, reason: str) -> None:
    p = tmp_path / "jgw.toml"
    p.write_text(text, encoding="utf-8")
    assert main(["check-config", str(p)]) == 78
    err = capsys.readouterr().err
    assert f"{p}: {key}: " in err and reason in err, err
