"""Run the real ``jgw`` entry point with the pki and certs verbs registered.

Until the lead adds ``gateway.commands.pki`` and ``gateway.commands.certs`` to
``gateway.cli.COMMAND_MODULES``, this appends them; afterwards it changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway import cli

OURS = ("gateway.commands.pki", "gateway.commands.certs")


def ensure_registered() -> None:
    missing = tuple(m for m in OURS if m not in cli.COMMAND_MODULES)
    if missing:
        cli.COMMAND_MODULES = cli.COMMAND_MODULES + missing


def main(argv: list[str] | None = None) -> int:
    ensure_registered()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``jgw ARGS`` in a child process, as staff run it: exit code, stdout and stderr."""
    return subprocess.run([sys.executable, str(Path(__file__)), *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=timeout)
