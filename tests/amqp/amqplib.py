"""amqplib (Node.js), the client that is not pika, for the interop tests: installed by the test set-up.

``npm ci`` runs in tests/amqp/node when node_modules is missing (package-lock.json pins amqplib);
tests using the ``node`` fixture are skipped only when ``node`` is not installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).with_name("node")
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def node_with_amqplib() -> str:
    """The ``node`` executable, with amqplib installed beside interop.js (``npm ci`` if missing)."""
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node is not installed: the amqplib interop test needs Node.js 18+ and npm")
    if not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("node is installed but npm is not: cannot install amqplib for the interop test")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{r.stdout}\n{r.stderr}")
    return exe


def js(node: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = subprocess.run([node, str(NODE_DIR / "interop.js"), *args], capture_output=True, text=True, timeout=60)
    if r.returncode == 2 or not r.stdout.strip():
        pytest.fail(f"interop.js {args[0]} failed ({r.returncode}):\n{r.stderr}")
    return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])


