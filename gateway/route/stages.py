"""Stages: the small processors between a route's source and its sink.

A stage takes a batch of messages and returns, for each one in order, either the message to pass on
(possibly transformed: ``seal`` replaces the body with an envelope) or a ``Refusal``, which sends the
original message to quarantine with the reason. Nothing is dropped: there is no third answer.

The chain of a route is fixed by its config, always in this order: ``open`` (inbound envelope),
``policy`` (個人番号 and other content rules, on clear payload), ``seal`` (outbound envelope).
Stage kinds are looked up here by name and imported lazily, so a route that does not use a kind
never loads it.

Security: stages read hostile bytes. A stage must not raise for bad input: it returns a Refusal.
An exception out of a stage is a bug in jgw. ``run_chain`` then runs that stage again one message
at a time, so only a message the stage still raises for is set aside, as ``Refusal("stage-error")``
(disposition dead-letter: kept for ``jgw dlq replay`` once the bug is fixed); its batch neighbours
go on through the chain. The exception is logged by class, stage and message id (never its text,
which may quote a header value, and never the payload).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.message import Message
from gateway.reasons import Disposition, reason

if TYPE_CHECKING:
    from gateway.config import RouteConfig
    from gateway.options import Options

log = logging.getLogger("gateway.route.stages")

#: The reason ``run_chain`` gives a message a stage raised for (or gave no valid result for).
STAGE_ERROR = "stage-error"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Send the message to quarantine. ``reason`` is a short code from a bounded set (it becomes a
    metric label); ``detail`` is one line for the operator: offsets, ids and sizes, never content."""

    reason: str
    detail: str

    def __post_init__(self) -> None:
        # a code from the one table (gateway.reasons), or a bug; a stage cannot ask for a sink retry
        if reason(self.reason).disposition is Disposition.RETRY:
            raise ValueError(f"reason {self.reason!r} is a sink retry, not a stage refusal")

    @property
    def disposition(self) -> Disposition:
        """Where the relay puts the message: quarantine, or dead-letter (``stage-error``)."""
        return reason(self.reason).disposition


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
    """Run every stage over the batch: one result per message, in order, and never an exception
    (but ``BaseException``s such as KeyboardInterrupt).

    A refused message leaves the chain at that stage. When a stage raises for a batch (or returns the
    wrong number of results), it is run again one message at a time: a message it still raises for,
    or returns anything but a Message or a Refusal for, becomes ``Refusal("stage-error", ...)``
    (dead-letter) and the others go on. When ``timings`` is given, (stage name, seconds for this
    batch, retries included) is appended per stage.
    """
    results: list[StageResult] = list(batch)
    for stage in stages:
        live = [i for i, r in enumerate(results) if isinstance(r, Message)]
        if not live:
            break
        started = time.perf_counter()
        outs = _run_stage(stage, [results[i] for i in live])  # type: ignore[misc]
        if timings is not None:
            timings.append((stage.name, time.perf_counter() - started))
        for i, out in zip(live, outs, strict=True):
            results[i] = out
    return results


def _run_stage(stage: Stage, batch: list[Message]) -> list[StageResult]:
    """One stage over ``batch``; on an exception, the stage again for each message alone."""
    try:
        outs = stage.process(batch)
        if len(outs) != len(batch):
            raise RuntimeError(f"stage {stage.name} returned {len(outs)} results for {len(batch)} messages")
    except Exception as exc:
        if len(batch) > 1:
            log.warning("stage failed for a batch; running it again one message at a time",
                        extra={"stage": stage.name, "count": len(batch), "error": type(exc).__name__})
        return [_run_alone(stage, m, exc if len(batch) == 1 else None) for m in batch]
    return [out if isinstance(out, Message | Refusal) else _bad_result(stage, m, out)
            for m, out in zip(batch, outs, strict=True)]


def _run_alone(stage: Stage, message: Message, known: Exception | None) -> StageResult:
    exc = known
    if exc is None:
        try:
            outs = stage.process([message])
            if len(outs) != 1:
                raise RuntimeError(f"stage {stage.name} returned {len(outs)} results for 1 message")
            out = outs[0]
        except Exception as raised:
            exc = raised
        else:
            return out if isinstance(out, Message | Refusal) else _bad_result(stage, message, out)
    where = _where(exc)
    log.error("stage raised for a message; it is set aside as stage-error",
              extra={"stage": stage.name, "message_id": message.message_id, "error": type(exc).__name__,
                     "where": where})
    return Refusal(STAGE_ERROR, f"stage {stage.name} raised {type(exc).__name__} at {where}")


def _bad_result(stage: Stage, message: Message, out: object) -> Refusal:
    log.error("stage returned neither a message nor a refusal; the message is set aside as stage-error",
              extra={"stage": stage.name, "message_id": message.message_id, "result": type(out).__name__})
    return Refusal(STAGE_ERROR, f"stage {stage.name} returned a {type(out).__name__} for it")


def _where(exc: BaseException) -> str:
    """``module.py:line`` of the frame that raised: enough to find the bug, no values."""
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"


def chain_is_blocking(stages: Sequence[Stage]) -> bool:
    return any(s.blocking for s in stages)


def describe(stages: Sequence[Stage]) -> str:
    return " → ".join(s.name for s in stages) if stages else "(none)"



@dataclass(frozen=True, slots=True)
class Made:
    """One output of the chain (or of a regrouping stage): ``result`` made from the inputs at
    ``parents``; for a refusal, ``refused`` is the message as the refusing stage saw it."""

    result: StageResult
    parents: tuple[int, ...]
    refused: Message | None = None


class RegroupingStage(Protocol):
    """A stage that makes several outputs of one input or one of several (packing, unpacking).
    ``regroup`` returns its outputs in order, each naming the inputs (indices) it was made from."""

    name: str
    blocking: bool

    def regroup(self, batch: Sequence[Message]) -> list[Made]: ...


def run_stages(stages: Sequence[Stage | RegroupingStage], batch: Sequence[Message],
               timings: list[tuple[str, float]] | None = None) -> list[Made]:
    """Run the chain over a batch, keeping each output's lineage: which inputs of ``batch`` it was
    made from. 1:1 stages go through ``run_chain``; a regrouping stage may pack or unpack."""
    current: list[Made] = [Made(m, (i,)) for i, m in enumerate(batch)]
    for stage in stages:
        live = [k for k, made in enumerate(current) if isinstance(made.result, Message)]
        if not live:
            break
        inputs: list[Message] = [current[k].result for k in live]  # type: ignore[misc]
        started = time.perf_counter()
        regroup = getattr(stage, "regroup", None)
        if regroup is None:
            outs = run_chain([stage], inputs)  # type: ignore[list-item]
            for k, message, out in zip(live, inputs, outs, strict=True):
                current[k] = Made(out, current[k].parents, message if isinstance(out, Refusal) else None)
        else:
            kept = [made for made in current if not isinstance(made.result, Message)]
            for made in regroup(inputs):
                parents = tuple(sorted({p for j in made.parents for p in current[live[j]].parents}))
                refused = made.refused
                if isinstance(made.result, Refusal) and refused is None and len(made.parents) == 1:
                    refused = inputs[made.parents[0]]
                kept.append(Made(made.result, parents, refused))
            current = sorted(kept, key=lambda m: m.parents[0])
        if timings is not None:
            timings.append((stage.name, time.perf_counter() - started))
    return current
