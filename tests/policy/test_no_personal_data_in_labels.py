"""Quarantines for a 個人番号 leave nothing personal in metric labels or in the refusal text."""

from __future__ import annotations

import random
import re
from pathlib import Path

from prometheus_client import generate_latest

from gateway import config
from gateway.message import Message
from gateway.metrics import Metrics
from gateway.options import Options
from gateway.policy.detector import find_personal_numbers
from gateway.policy.redact import contains_personal_number
from gateway.policy.stage import policy_stage
from gateway.route.stages import NodeContext, Refusal
from tests.lab import synth

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def test_refusals_feed_metrics_without_personal_data(tmp_path: Path) -> None:
    """Every forbidden example route refuses a payload full of numbers; the reason becomes a metric
    label and the detail an operator line: neither, nor the exposition, holds a 個人番号."""
    rng = random.Random(1)
    cfg = config.load(EXAMPLES / "cityhall.toml")
    metrics = Metrics(cfg.node.id)
    node = NodeContext(node_id=cfg.node.id, config_file=cfg.file, state_dir=tmp_path, certs_dir=tmp_path)
    refused = 0
    for route in cfg.routes.values():
        if route.personal_number != "forbidden":
            continue
        stage = policy_stage(Options(str(cfg.file), "p", {}, tmp_path), route, node)
        numbers = [synth.format_number(synth.valid_personal_number(rng), s) for s in synth.FORMATS]
        body = synth.payload(rng, route.payload_encoding or "utf-8", numbers).data
        message = Message(message_id=numbers[1], route=route.name, body=body, headers={"x-ref": numbers[0]})
        for out in stage.process([message]):
            assert isinstance(out, Refusal)
            assert not contains_personal_number(out.detail) and not contains_personal_number(repr(out))
            metrics.quarantined.labels(route=route.name, reason=out.reason).inc()
            refused += 1
    assert refused >= 10
    text = generate_latest(metrics.registry).decode()
    assert "personal-number" in text
    labels = re.findall(r"\{([^}]*)\}", text)  # sample values are numbers, not personal data
    assert labels and not any(contains_personal_number(lbl) for lbl in labels)
    assert find_personal_numbers(text.encode(), "utf-8") == []
