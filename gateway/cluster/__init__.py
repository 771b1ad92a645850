"""Scale-out on a RabbitMQ cluster: several jgw instances on one site's queues.

- ``stream``: a route's delivered ids in a replicated stream, appended with confirm, followed by all;
- ``replication``: a route's dedup state shared through that stream (commit before the acks,
  catch up before a takeover delivers);
- ``fence``: a paused process drops what it was about to publish;
- ``members``: each quorum queue's members and leader, from the management API.

The broker decides who consumes (single-active-consumer); jgw never elects anything itself.
"""
