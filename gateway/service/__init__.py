"""The process around the routes: the daemon (``relay``), its control socket, metrics endpoint,
systemd notification and watchdog, and its log format.

Security: ``relay`` talks to the configured brokers; ``metrics_http`` listens on the metrics address
(loopback unless TLS with client certificates); ``control`` on a 0600 socket in the state directory.
"""
