"""AMQP 0-9-1: the daemon's own client and everything that speaks to brokers.

* ``codec``, ``methods``, ``fields``, ``properties``, ``errors``  sans-I/O AMQP 0-9-1 (h11-style):
  bytes in, events out; type-exact field tables; a delivery's property block kept as it came.
* ``connection``   the lean asyncio client on the codec (one write per loop turn, confirms,
  returns, consumer cancel notifications, heartbeats, TLS with EXTERNAL).
* ``link``         links that stay up (failover, back-off, rotation), awaitable and confirm channels.
* ``confirms``, ``ledger``  pure bookkeeping of publisher confirms and of acks.
* ``topology``     queue/exchange declarations as data; ``convert`` delivery ↔ ``Message``.
* ``source``, ``sink``      the route ends (``gateway.route.behaviour``) on a queue and an exchange.
* ``urls``         broker URLs into connection parameters; ``blocking``: the CLI's client (pika).

pika is imported only by ``blocking`` (the operator commands); the daemon's data path does not
use it (docs/architecture.md says why, with figures).

Security: talks to the configured brokers only; reads hostile bytes through the codec's limits.
"""
