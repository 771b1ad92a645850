"""jgw: a hardened store-and-forward message gateway for Japanese municipal closed networks.

The architecture in one paragraph (details in docs/architecture.md): a node runs routes. A route
takes messages from a source queue, passes them through stages (open, policy, seal) and publishes
them to a sink exchange; the source delivery is acknowledged only after the sink confirmed
(``gateway.route.runner``). Every message ends delivered, quarantined or dead-lettered.
"""

__version__ = "0.1.0"
