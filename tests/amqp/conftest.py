"""Fixtures for the codec and connection tests: the machine's RabbitMQ, unique names, async tests.

No fixture imitates a broker: the live tests talk to 127.0.0.1:5672 or to private nodes they start
(tests/lab/rabbitnode.py). Names are unique per test and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import ParamSpec, TypeVar

import pytest

from gateway.amqp.connection import Connection, ConnectParams
from tests.lab.rabbitnode import port_open

P = ParamSpec("P")
T = TypeVar("T")


def aio(timeout: float = 60.0) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, T]]:
    """Run an async test in its own event loop, failing it after ``timeout`` seconds."""
    def deco(fn: Callable[P, Awaitable[T]]) -> Callable[P, T]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            async def main() -> T:
                async with asyncio.timeout(timeout):
                    return await fn(*args, **kwargs)
            return asyncio.run(main())
        return run
    return deco


class Names:
    """Unique queue and exchange names for one test; ``cleanup`` deletes them on the broker."""

    def __init__(self) -> None:
        self.prefix = f"jgw.codec.{uuid.uuid4().hex[:10]}"
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def q(self, name: str) -> str:
        self.queues.append(f"{self.prefix}.{name}")
        return self.queues[-1]

    def x(self, name: str) -> str:
        self.exchanges.append(f"{self.prefix}.{name}")
        return self.exchanges[-1]

    async def cleanup(self, params: ConnectParams) -> None:
        conn = await Connection.open(params)
        try:
            for q in self.queues:
                ch = await conn.channel()
                try:
                    await ch.queue_delete(q)
                except Exception:  # a test may have deleted it already
                    continue
                ch.close()
            for x in self.exchanges:
                ch = await conn.channel()
                try:
                    await ch.exchange_delete(x)
                except Exception:
                    continue
                ch.close()
        finally:
            conn.close()
            await conn.wait_closed()


@pytest.fixture(scope="session")
def broker() -> ConnectParams:
    if not port_open(5672):
        pytest.fail("no RabbitMQ on 127.0.0.1:5672: run `make broker` (make test does it for you)")
    return ConnectParams("127.0.0.1", 5672, connection_name="jgw-codec-test", heartbeat=30)


@pytest.fixture
def names(broker: ConnectParams) -> Iterator[Names]:
    n = Names()
    yield n
    asyncio.run(n.cleanup(broker))


def connection_pid(local_port: int, ctl: Callable[..., subprocess.CompletedProcess[str]] | None = None) -> str:
    """The broker-side pid of our connection from ``local_port`` (for rabbitmqctl close_connection)."""
    args = ("list_connections", "pid", "name", "-q")
    if ctl is None:
        out = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=True, timeout=60).stdout
    else:
        out = ctl(*args).stdout
    for line in out.splitlines():
        pid, _, name = line.partition("\t")
        if name.startswith(f"127.0.0.1:{local_port} -> "):
            return pid
    raise LookupError(local_port)
