"""The route wing: where a message is taken, passed, published and acknowledged.

A route is source → stages → sink. Three layers, one job each:

* ``book``       the hop contract as a pure state machine: items (source deliveries) and legs
                 (what must become durable: a sink put or a set-aside), their states, per-key FIFO,
                 dedup, retry and dead-letter decisions, N:M settlement, when to commit and ack.
                 Events in, actions out; no I/O, no asyncio, no clock (``tests/route`` replays it).
* ``behaviour``  what a source and a sink are (Shovel's behaviour): ``run`` (stay connected),
                 ``ack``/``set_aside``/``restart`` for a source, ``put`` for a sink, and the feeds
                 through which they report back. ``gateway.amqp`` implements both ends.
* ``runner``     the asyncio shell: feeds the book, runs the ``stages`` over batches (off the loop
                 when CPU-heavy), performs the actions, turns outcomes into metrics, evidence, logs.

``stages``/``chain`` hold the stage protocol and build a route's chain (open → policy → seal);
``commit`` makes evidence and dedup ids durable (group commit) before acks; ``dedup`` holds the ids
already delivered. The one rule: **a source item is acknowledged only when every leg made from it
is durable, after the evidence for it is committed** (``RouteBook.flush``/``committed``).

Security: the book and the runner read ids, sizes and ordering keys, never bodies; stages read
hostile bytes and return refusals, never exceptions.
"""
