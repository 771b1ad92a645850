"""Small helpers for the file tests: streams, digests, a tmpfs, waiting on conditions."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

SJIS = "異動対象者情報ファイル_ソ表_0001.csv".encode("shift_jis")  # synthetic; ソ and 表 hold 0x5C bytes


async def stream(data: bytes, block: int = 65536) -> AsyncIterator[bytes]:
    for i in range(0, len(data), block):
        yield data[i:i + block]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def listdir(path: Path) -> set[bytes]:
    return set(os.listdir(os.fsencode(path)))


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def read_bytes(directory: Path, name: bytes) -> bytes:
    with open(os.path.join(os.fsencode(directory), name), "rb") as f:
        return f.read()
