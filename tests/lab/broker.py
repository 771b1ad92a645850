"""Make sure a RabbitMQ answers on 127.0.0.1:5672 before tests or the demo run (``make broker``).

In order: one already answers → done. The Debian ``rabbitmq-server`` is installed → start it as a
private node on port 5672 with its data under ``var/rabbitmq`` (no root needed, nothing of the
system's node touched). Not installed and we are root → ``apt-get install rabbitmq-server``, then
the same. Otherwise print the exact command to run and exit 69.

Security: development and test only; the private node listens on 127.0.0.1 with guest/guest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.lab.rabbitnode import PrivateNode, port_open, rabbitmq_installed

PORT = 5672
BASE = Path(os.environ.get("JGW_VAR", "var")) / "rabbitmq"
SHOVEL = ("rabbitmq_shovel",)


def ensure() -> int:
    if port_open(PORT):
        print(f"broker: RabbitMQ answers on 127.0.0.1:{PORT}")
        return 0
    if not rabbitmq_installed():
        if os.geteuid() == 0:
            print("broker: installing rabbitmq-server with apt-get (as root)")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
            r = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "rabbitmq-server"], env=env)
            if r.returncode != 0:
                print("broker: apt-get install rabbitmq-server failed", file=sys.stderr)
                return 69
            if port_open(PORT):  # the package's own start may have brought it up
                return 0
        else:
            print("broker: no RabbitMQ on 127.0.0.1:5672 and rabbitmq-server is not installed.\n"
                  "        run:  sudo apt-get install rabbitmq-server   (then: make test)", file=sys.stderr)
            return 69
    node = PrivateNode(base=BASE, name="jgwlocal", amqp_port=PORT, plugins=SHOVEL)
    print(f"broker: starting a private RabbitMQ node {node.nodename} on 127.0.0.1:{PORT} (data in {node.base})")
    node.start()
    print("broker: ready")
    return 0


if __name__ == "__main__":
    sys.exit(ensure())
