"""Helpers for the hostile-header tests: exact comparison, nesting, the three stages on one route."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
import time
from pathlib import Path
from typing import Any

from gateway import config
from gateway.message import Message
from gateway.options import Options
from gateway.route.stages import NodeContext, load_factory

from .conftest import Pki

ROUTE = "juki-link"


def exact(a: Any, b: Any) -> bool:
    """Same value and same type all the way down: float bits, Decimal digits and exponent,
    datetime zone and fold, name types and order of every table."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    if isinstance(a, decimal.Decimal):
        return a.as_tuple() == b.as_tuple()
    if isinstance(a, dt.datetime):
        return (a == b and type(a.tzinfo) is type(b.tzinfo) and a.tzname() == b.tzname()
                and a.fold == b.fold)
    if isinstance(a, dict):
        return (len(a) == len(b) and all(exact(x, y) for x, y in zip(a, b, strict=True))
                and all(exact(a[k], b[k]) for k in a))
    if isinstance(a, list):
        return len(a) == len(b) and all(exact(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "amqp_type") and hasattr(a, "value"):  # gateway.envelope.inner.Typed
        return bool(a.amqp_type == b.amqp_type) and exact(a.value, b.value)
    return bool(a == b)


def nested(depth: int, leaf: Any) -> Any:
    """A table nested ``depth`` levels below the headers table (alternating tables and lists)."""
    value = leaf
    for i in range(depth):
        value = {b"\xfflevel": value} if i % 2 else [value]
    return value


# --- stages  ------------------------------------------------------------------------------------

def _build(tmp: Path, node: str, kind: str, table: dict[str, Any], keyring: Any, **route_extra: Any) -> Any:
    route: dict[str, Any] = {"personal_number": "allowed", "source": {"broker": "local", "queue": f"q-{kind}"},
                             "sink": {"broker": "local", "exchange": "x"}, **route_extra}
    if table is not None:
        route[kind] = table
    data = {"node": {"id": node}, "brokers": {"local": {"urls": ["amqp://127.0.0.1:5672/"]}},
            "routes": {ROUTE: route}}
    cfg = config.parse(data, str(tmp / "jgw.toml"), tmp)
    r = cfg.routes[ROUTE]
    options = Options(str(cfg.file), f"routes.{ROUTE}.{kind}", r.stage_tables.get(kind, {}), tmp)
    ctx = NodeContext(node_id=node, config_file=cfg.file, state_dir=tmp, certs_dir=tmp / "certs",
                      clock=time.time, services={"keyring": (lambda: keyring)})
    return load_factory(kind)(options, r, ctx)


def build_stages(pki: Pki, tmp: Path) -> dict[str, Any]:
    """seal (city-a → dc-b), open (dc-b from city-a) and policy (forbidden, UTF-8) on one route."""
    return {
        "seal": _build(tmp, "city-a", "seal", {"recipients": ["dc-b"]}, pki.keyrings["city-a"]),
        "open": _build(tmp, "dc-b", "open", {"senders": ["city-a"]}, pki.keyrings["dc-b"]),
        "policy": _build(tmp, "dc-b", "policy", None, None, personal_number="forbidden",
                         payload_encoding="utf-8"),
    }


def message(i: int, headers: Any) -> Message:
    return Message(message_id=f"m-{i}", route=ROUTE, body=b"body %d" % i, headers=headers,
                   content_type="text/plain", correlation_id=f"c-{i}", timestamp=1_700_000_000 + i)


def source_headers(m: Message) -> dict[Any, Any]:
    return {k: v for k, v in m.headers.items() if not (isinstance(k, str) and k.startswith("x-jgw-"))}


NEIGHBOUR = {"x-biz": "異動届", "x-count": 3, "x-jgw-sent-ms": 1_700_000_000_000}
