"""A route's stage chain, built from its config: open → policy → seal, always in that order.

The chain is derived, not listed by the operator: a route with an ``[routes.X.open]`` table opens
envelopes, one with ``[routes.X.seal]`` seals them, and every route marked
``personal_number = "forbidden"`` gets the policy stage on its clear payload (after open, before
seal) whether or not it has a ``[routes.X.policy]`` table. That way a forbidden route can never be
configured without its scan, nor scan ciphertext.

Security: builds objects from validated config; reads no messages.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.config import Config, RouteConfig
from gateway.errors import ConfigError
from gateway.options import Options
from gateway.pki.material import NodeMaterial, load_node_material
from gateway.route.stages import STAGE_KINDS, NodeContext, Stage, load_factory

if TYPE_CHECKING:
    from gateway.keyring import Keyring


def stage_kinds(route: RouteConfig) -> list[str]:
    kinds = []
    for kind in STAGE_KINDS:  # dict order is the chain order
        if kind in route.stage_tables or (kind == "policy" and route.personal_number == "forbidden"):
            kinds.append(kind)
    return kinds


def build_stages(config: Config, route: RouteConfig, node: NodeContext) -> list[Stage]:
    """Build (and so validate) the stages of one route. Raises ConfigError naming the key path."""
    stages: list[Stage] = []
    for kind in stage_kinds(route):
        options = Options(str(config.file), f"routes.{route.name}.{kind}", route.stage_tables.get(kind, {}),
                          config.file.resolve().parent)
        try:
            factory = load_factory(kind)
        except ImportError as exc:
            raise ConfigError(str(config.file), f"routes.{route.name}.{kind}",
                              f"stage {kind!r} is not available in this build ({exc})") from exc
        stages.append(factory(options, route, node))
    return stages


def needs_material(config: Config) -> bool:
    """Does this node use its certificates (envelopes, or mTLS to a broker)?"""
    return (any("seal" in r.stage_tables or "open" in r.stage_tables for r in config.routes.values())
            or any(b.tls is not None for b in config.brokers.values()))


def load_material(config: Config, now: dt.datetime | None = None) -> NodeMaterial | None:
    """The node's keys and certificates from ``node.certs_dir``, fully validated (CRLs, purposes,
    key files 0600), or None when no route or broker needs them. Raises CertificateError (78) or
    KeyFileModeError (77) naming the file and the reason."""
    if not needs_material(config):
        return None
    return load_node_material(config.node.certs_dir, config.node.id, now or dt.datetime.now(dt.UTC))


def node_context(config: Config, keyring: Callable[[], Keyring] | None = None) -> NodeContext:
    """What stages may know about the node; ``keyring`` returns the current keys (swapped on reload)."""
    node = NodeContext(node_id=config.node.id, config_file=config.file, state_dir=config.node.state_dir,
                       certs_dir=config.node.certs_dir)
    if keyring is not None:
        node.services["keyring"] = keyring
    return node
