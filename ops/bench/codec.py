"""Micro benchmark: the AMQP codec's per-message cost, ours (gateway.amqp.codec) against pika's.

For one message as jgw relays it (1 KiB body, persistent, a message id and a few jgw headers):
- decode: a basic.deliver, its content header and its body frame, from bytes to a delivery;
  ours twice: lazily (what a stage-less route pays) and with message_id and headers read;
- encode: the basic.publish with header and body frames for the same message, to bytes
  (ours forwarding the received property block as it is, and re-encoding from values).
pika's side is what its connection does per frame: ``pika.frame.decode_frame`` for each of the three
frames (it decodes the properties eagerly), and ``Method/Header/Body(...).marshal()`` to write.

Rounds alternate between the two implementations so that a noisy neighbour hits both alike; the
figure reported is the median of the rounds, in µs per message, with the ratio pika / ours.

    .venv/bin/python ops/bench/codec.py [--rounds 15] [--n 20000]

Security: benchmark only; no network, no files.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pika.frame as pframe
import pika.spec as pspec

from gateway.amqp import codec
from gateway.amqp.methods import BasicDeliver
from gateway.amqp.properties import Properties

BODY = bytes(range(256)) * 4
HEADERS = {"x-jgw-origin": "city-a", "x-jgw-hop": 1, "x-jgw-sent-at": 1767225600123, "x-jgw-route": "juki-ido"}
MESSAGE_ID = "3f2b8c1e-6d4a-4b7e-9a51-0c2d7e8f9a10"


def wire() -> bytes:
    """deliver + header + body as RabbitMQ would send them (encoded by pika, the reference)."""
    props = pspec.BasicProperties(message_id=MESSAGE_ID, delivery_mode=2, headers=HEADERS,
                                  content_type="application/octet-stream")
    return (pframe.Method(1, pspec.Basic.Deliver(consumer_tag="amq.ctag-abcdefghijklmnop", delivery_tag=123456,
                                                 redelivered=False, exchange="", routing_key="jgw.in")).marshal()
            + pframe.Header(1, len(BODY), props).marshal() + pframe.Body(1, BODY).marshal())


def pika_decode(data: bytes) -> object:
    off = 0
    out = []
    while off < len(data):
        used, fr = pframe.decode_frame(data[off:])
        off += used
        out.append(fr)
    return out


def pika_encode(props: pspec.BasicProperties) -> bytes:
    publish = pspec.Basic.Publish(exchange="", routing_key="jgw.out", mandatory=True)
    return b"".join((pframe.Method(1, publish).marshal(),
                     pframe.Header(1, len(BODY), props).marshal(), pframe.Body(1, BODY).marshal()))


def run(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    data = wire()
    parser = codec.Parser()
    [delivery] = parser.feed(data)
    assert isinstance(delivery, BasicDeliver)
    received = delivery.properties
    pika_props = pspec.BasicProperties(message_id=MESSAGE_ID, delivery_mode=2, headers=HEADERS,
                                       content_type="application/octet-stream")
    writer = codec.FrameWriter()

    def ours_decode_lazy() -> object:
        return parser.feed(data)

    def ours_decode_read() -> object:
        [d] = parser.feed(data)
        p = d.properties  # type: ignore[union-attr]
        return p.message_id, p.headers

    def ours_encode_forward() -> object:
        writer.append_publish(1, "", "jgw.out", received.encode(), BODY, mandatory=True)
        out = bytes(writer.buffer)
        writer.buffer.clear()
        return out

    def ours_encode_values() -> object:
        props = Properties(message_id=MESSAGE_ID, delivery_mode=2, headers=HEADERS,
                           content_type="application/octet-stream")
        writer.append_publish(1, "", "jgw.out", props.encode(), BODY, mandatory=True)
        out = bytes(writer.buffer)
        writer.buffer.clear()
        return out

    assert ours_encode_forward() == pika_encode(pika_props)
    assert ours_encode_values() == pika_encode(pika_props)
    cases: dict[str, Callable[[], object]] = {
        "pika decode": lambda: pika_decode(data),
        "ours decode (lazy)": ours_decode_lazy,
        "ours decode (+id, headers)": ours_decode_read,
        "pika encode": lambda: pika_encode(pika_props),
        "ours encode (forward block)": ours_encode_forward,
        "ours encode (from values)": ours_encode_values,
    }
    results: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        run(fn, args.n // 10)  # warm up
    for _ in range(args.rounds):
        for name, fn in cases.items():
            results[name].append(run(fn, args.n))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"python {sys.version.split()[0]}, {args.rounds} alternating rounds of {args.n} messages, "
          f"body {len(BODY)} bytes; median µs per message")
    for name, value in med.items():
        print(f"  {name:30s} {value:7.2f}")
    print(f"decode: pika / ours = {med['pika decode'] / med['ours decode (lazy)']:.1f}x lazy, "
          f"{med['pika decode'] / med['ours decode (+id, headers)']:.1f}x with id and headers read")
    print(f"encode: pika / ours = {med['pika encode'] / med['ours encode (forward block)']:.1f}x forwarding, "
          f"{med['pika encode'] / med['ours encode (from values)']:.1f}x from values")
    total_p = med["pika decode"] + med["pika encode"]
    total_o = med["ours decode (+id, headers)"] + med["ours encode (forward block)"]
    print(f"relay hop (decode with id+headers, encode forwarding): pika {total_p:.2f} µs, ours {total_o:.2f} µs, "
          f"{total_p / total_o:.1f}x")


if __name__ == "__main__":
    main()
