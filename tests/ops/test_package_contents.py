"""What the appliance installs: the package and its data, never the test lab.

The fault proxy (an unauthenticated HTTP API), the private-node harness and the throw-away CAs
live in ``tests/lab``; a wheel built from this tree must not carry them, and no module of the
product may import them.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(out), str(REPO)], check=True, capture_output=True, timeout=300)
    (built,) = out.glob("jgw-*.whl")
    return built


def test_the_built_wheel_holds_no_test_lab(wheel: Path) -> None:
    """A wheel built from the tree has gateway/ only: no tests/, no lab, no test CA."""
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("gateway/route/") for n in names)
    assert not [n for n in names if n.startswith("tests/") or "/testing" in n or "faultproxy" in n
                or "testca" in n or "throwaway" in n]


def test_no_product_module_imports_the_lab() -> None:
    """Nothing under gateway/ imports tests.* (the lab is for tests, benchmarks and the demo)."""
    offenders = []
    for path in (REPO / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n.split(".")[0] == "tests" for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_an_installed_wheel_finds_its_catalog_without_environment(wheel: Path, tmp_path: Path) -> None:
    """Installed from the wheel (not editable, away from the source tree, no JGW_CATALOG), jgw reads the
    seed catalog shipped inside the package: `jgw routes --catalog` lists every flow, exit 0."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    boot = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import gateway; "
            "assert gateway.__file__.startswith(sys.path[0]), gateway.__file__; "
            "from gateway.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if k not in ("JGW_CATALOG", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", boot, str(target), "routes", "--catalog", "--json"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    flows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(flows) >= 100 and any("jimu:1-⑥" in json.dumps(f, ensure_ascii=False) for f in flows)
    assert (target / "gateway" / "catalog_data" / "nodes.toml").exists()
