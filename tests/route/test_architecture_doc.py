"""docs/architecture.md names where each hop-contract rule lives: every name it gives must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"


def _definitions() -> tuple[set[str], set[str]]:
    files, names = set(), set()
    for path in (REPO / "gateway").rglob("*.py"):
        rel = path.relative_to(REPO / "gateway").as_posix()
        files.add(rel)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                names.add(node.name)
                for sub in node.body:
                    if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                        names.add(f"{node.name}.{sub.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
    return files, names


def test_every_file_and_name_in_the_hop_contract_table_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## The hop contract"):text.index("## Modules")]
    files, names = _definitions()
    missing = []
    for cell in re.findall(r"`([^`]+)`", table):
        m = re.fullmatch(r"((?:\w+/)*\w+\.py)(?::\s*([\w.]+))?", cell)
        if m:
            if m.group(1) not in files:
                missing.append(m.group(1))
            if m.group(2) and m.group(2) not in names:
                missing.append(cell)
        elif re.fullmatch(r"[A-Z]\w+\.\w+", cell) and cell not in names:
            missing.append(cell)
    assert missing == []
