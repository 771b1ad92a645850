"""Each quorum queue's members, online members and leader, and its single active consumer, as the
RabbitMQ management API reports them (``GET /api/queues/VHOST/NAME``).

AMQP 0-9-1 tells a client neither where a queue's replicas are nor which consumer is active, so
``jgw status`` and the metrics ask the management listener of any live node (the broker's
``management_urls``, tried in turn), with the broker's user and password.

Security: sends the broker's credentials to its own management listener (HTTP Basic); reads queue
metadata only. The management API's figures are as old as its statistics interval
(``collect_statistics_interval``, 5 s by default).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from gateway.config import BrokerConfig

TIMEOUT = 3.0


@dataclass
class QueueMembers:
    queue: str
    members: list[str] = field(default_factory=list)
    online: list[str] = field(default_factory=list)
    leader: str = ""
    #: consumer tag of the single active consumer ("" when none or not single-active)
    active_consumer: str = ""
    error: str = ""


def _credentials(broker: BrokerConfig) -> tuple[str, str, str]:
    parts = urlsplit(broker.urls[0])
    user = unquote(parts.username) if parts.username is not None else "guest"
    password = unquote(parts.password) if parts.password is not None else (broker.password or "guest")
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return user, password, vhost


def queue_members(broker: BrokerConfig, queue: str) -> QueueMembers:
    """Ask each management URL in turn (blocking: run it in an executor)."""
    user, password, vhost = _credentials(broker)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    errors = []
    for base in broker.management_urls:
        url = f"{base.rstrip('/')}/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}"
        req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
                data: dict[str, Any] = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{urlsplit(base).netloc}: {getattr(exc, 'reason', exc)}")
            continue
        return QueueMembers(queue=queue, members=sorted(data.get("members") or []),
                            online=sorted(data.get("online") or []), leader=str(data.get("leader") or ""),
                            active_consumer=str(data.get("single_active_consumer_ctag") or
                                                data.get("single_active_consumer_tag") or ""))
    return QueueMembers(queue=queue, error="; ".join(errors) or "no management_urls")
