"""Stages: the small processors between a route's source and its sink.

A stage takes a batch of messages and returns, for each one in order, either the message to pass on
(possibly transformed: ``seal`` replaces the body with an envelope) or a ``Refusal``, which sends the
original message to quarantine with the reason. Nothing is dropped: there is no third answer.

The chain of a route is fixed by its config, always in this order: ``open`` (inbound envelope),
``policy`` (個人番号 and other content rules, on clear payload), ``seal`` (outbound envelope).
Stage kinds are looked up here by name and imported lazily, so a route that does not use a kind
never loads it.

Security: stages read hostile bytes. A stage must not raise for bad input: it returns a Refusal.
An exception out of a stage is a bug in jgw; the relay dead-letters the batch with reason
``stage-error`` so nothing is lost, and logs the exception class (never the payload).
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.message import Message

if TYPE_CHECKING:
    from gateway.config import Options, RouteConfig

REASON_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Send the message to quarantine. ``reason`` is a short code from a bounded set (it becomes a
    metric label); ``detail`` is one line for the operator: offsets, ids and sizes, never content."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        if not REASON_RE.match(self.reason):
            raise ValueError(f"reason code must match {REASON_RE.pattern}: {self.reason!r}")


StageResult = Message | Refusal


class Stage(Protocol):
    name: str
    #: True when the stage is CPU-heavy (crypto): the relay runs the chain off the event loop.
    blocking: bool

    def process(self, batch: Sequence[Message]) -> list[StageResult]: ...


@dataclass(slots=True)
class NodeContext:
    """What a stage may know about the node it runs on. Built once when config loads."""

    node_id: str
    config_file: Path
    state_dir: Path
    certs_dir: Path
    clock: Callable[[], float] = time.time
    #: Shared services a stage may need (e.g. the keyring provider), by name.
    services: dict[str, Any] = field(default_factory=dict)


class StageFactory(Protocol):
    def __call__(self, options: Options, route: RouteConfig, node: NodeContext) -> Stage: ...


# Fixed chain order; the value is "module:function" building the stage from its config table.
STAGE_KINDS: dict[str, str] = {
    "open": "gateway.envelope.stage:open_stage",
    "policy": "gateway.policy.stage:policy_stage",
    "seal": "gateway.envelope.stage:seal_stage",
}


def load_factory(kind: str) -> StageFactory:
    module_name, _, func = STAGE_KINDS[kind].partition(":")
    module = importlib.import_module(module_name)
    factory: StageFactory = getattr(module, func)
    return factory


def run_chain(stages: Sequence[Stage], batch: Sequence[Message],
              timings: list[tuple[str, float]] | None = None) -> list[StageResult]:
    """Run every stage over the batch; a refused message leaves the chain at that stage.

    When ``timings`` is given, (stage name, seconds for this batch) is appended per stage.
    """
    results: list[StageResult] = list(batch)
    for stage in stages:
        live = [i for i, r in enumerate(results) if isinstance(r, Message)]
        if not live:
            break
        started = time.perf_counter()
        outs = stage.process([results[i] for i in live])  # type: ignore[misc]
        if timings is not None:
            timings.append((stage.name, time.perf_counter() - started))
        if len(outs) != len(live):
            raise RuntimeError(f"stage {stage.name} returned {len(outs)} results for {len(live)} messages")
        for i, out in zip(live, outs, strict=True):
            results[i] = out
    return results


def chain_is_blocking(stages: Sequence[Stage]) -> bool:
    return any(s.blocking for s in stages)


def describe(stages: Sequence[Stage]) -> str:
    return " → ".join(s.name for s in stages) if stages else "(none)"

