"""A private RabbitMQ node for the operator-command tests, and configs pointing at it.

These tests delete and export set-aside messages by route and "all": on the machine's shared broker
that would touch other tests' messages, so they run against a node of their own (started once for
the directory, destroyed afterwards). It has a user ``jgw`` with a password, in vhost ``juki``, as
``config/examples/cityhall.toml`` expects.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import render_config
from tests.lab.rabbitnode import PrivateNode, rabbitmq_installed


@dataclass
class Broker:
    node: PrivateNode
    password: str

    @property
    def port(self) -> int:
        return self.node.amqp_port

    @property
    def guest_url(self) -> str:
        return self.node.url

    @property
    def guest_juki_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/juki"

    @property
    def jgw_url(self) -> str:
        """The cityhall example's form: a user and no password (it comes from password_file)."""
        return f"amqp://jgw@127.0.0.1:{self.port}/juki"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if not rabbitmq_installed():
        pytest.skip("rabbitmq-server is not installed")
    node = PrivateNode(base=tmp_path_factory.mktemp("rmq"))
    node.start()
    password = "pw-" + secrets.token_hex(8)
    try:
        node.ctl("add_user", "jgw", password)
        node.add_vhost("juki", user="jgw")
        node.ctl("set_permissions", "-p", "/", "jgw", ".*", ".*", ".*")
        node.ctl("set_permissions", "-p", "juki", "guest", ".*", ".*", ".*")
        yield Broker(node, password)
    finally:
        node.destroy()


def write_config(base: Path, routes: dict[str, dict[str, Any]], brokers: dict[str, dict[str, Any]],
                 *, node_id: str = "op-node", **node: Any) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    text = render_config({"id": node_id, "state_dir": str(base / "state"), **node}, brokers, routes)
    path = base / "jgw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def password_file(base: Path, password: str, mode: int = 0o600) -> Path:
    path = base / "broker.password"
    path.write_text(password + "\n", encoding="utf-8")
    path.chmod(mode)
    return path
