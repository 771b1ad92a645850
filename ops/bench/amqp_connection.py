"""Bench: client CPU per message of the lean connection, end to end against a real broker.

One process, two connections (publish, consume), as the daemon runs them: publishes with confirms
(mandatory, a bounded window) on one, a manual-ack consumer (prefetch 1000, ``ack(multiple)`` every
100, message_id and headers read) on the other. Prints wall-clock msg/s and the process's CPU time
per message (user + system), which is what pika's dispatch stack made expensive.

    .venv/bin/python ops/bench/amqp_connection.py [--n 30000] [--host 127.0.0.1] [--port 5672]

Security: benchmark only; declares and deletes one non-durable queue on the broker given.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.amqp.connection import Connection, ConnectParams, Delivery
from gateway.amqp.properties import Properties

WINDOW = 1024


async def run(n: int, host: str, port: int) -> None:
    pub = await Connection.open(ConnectParams(host, port, connection_name="jgw-bench-publish"))
    con = await Connection.open(ConnectParams(host, port, connection_name="jgw-bench-consume"))
    pch = await pub.channel()
    await pch.confirm_select()
    cch = await con.channel()
    await cch.qos(1000)
    q = f"jgw.bench.{uuid.uuid4().hex[:8]}"
    await pch.queue_declare(q, durable=False)
    confirmed = 0

    def on_confirm(seq: int, multiple: bool, ack: bool) -> None:
        nonlocal confirmed
        confirmed = max(confirmed, seq)

    pch.on_confirm = on_confirm
    got = 0
    done = asyncio.get_running_loop().create_future()

    def on_delivery(d: Delivery) -> None:
        nonlocal got
        got += 1
        _ = d.properties.message_id, d.properties.headers
        if got % 100 == 0 or got == n:
            cch.ack(d.delivery_tag, multiple=True)
        if got == n:
            done.set_result(None)

    await cch.consume(q, on_delivery)
    props = Properties(message_id=str(uuid.uuid4()), delivery_mode=2,
                       headers={"x-jgw-origin": "city-a", "x-jgw-hop": 1})
    body = b"x" * 1024
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for i in range(n):
        while pch.next_publish_seq - confirmed > WINDOW:
            await asyncio.sleep(0.001)
        pch.publish("", q, body, props, mandatory=True)
        if i % 64 == 0:
            await asyncio.sleep(0)
    await done
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    user = r1.ru_utime - r0.ru_utime
    cpu = user + r1.ru_stime - r0.ru_stime
    print(f"{n} messages of {len(body)} bytes: {n / wall:.0f} msg/s; client CPU {cpu / n * 1e6:.1f} µs/msg "
          f"(user {user / n * 1e6:.1f}) for publish+confirm+deliver+ack")
    await pch.queue_delete(q)
    pub.close()
    con.close()
    await pub.wait_closed()
    await con.wait_closed()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30000)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5672)
    args = ap.parse_args()
    asyncio.run(run(args.n, args.host, args.port))


if __name__ == "__main__":
    main()
