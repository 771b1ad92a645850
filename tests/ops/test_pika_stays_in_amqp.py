"""pika is imported only inside gateway/amqp/: the CLI's blocking client lives in gateway/amqp/blocking.py,
the operator logic in gateway/commands/ (issue 9: gateway/admin.py split)."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"

def pika_importers() -> set[str]:
    found = set()
    for path in sorted(GATEWAY.rglob("*.py")):
        if path.is_relative_to(GATEWAY / "amqp"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "pika" for n in names):
                found.add(str(path.relative_to(GATEWAY.parent)))
    return found


def test_no_module_outside_gateway_amqp_imports_pika() -> None:
    assert pika_importers() == set()
    assert not (GATEWAY / "admin.py").exists()
