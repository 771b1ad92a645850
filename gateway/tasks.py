"""Small asyncio helpers every layer uses: background tasks that are never lost, futures set once.

Security: none; no I/O.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("jgw.amqp")


def resolve(fut: asyncio.Future[T], value: T) -> None:
    """Set a future's result unless it is already done (pika may call back after a timeout)."""
    if not fut.done():
        fut.set_result(value)


RESTART_SECONDS = 1.0


def spawn(make: Callable[[], Coroutine[Any, Any, Any]], name: str, tasks: set[asyncio.Task[Any]], *,
          restart: bool = True) -> asyncio.Task[Any]:
    """Start a background task that is kept referenced and whose failure is logged, never lost: a
    task that dies of an exception is started again (a bug must not leave a link or a route silently
    gone while the daemon reports READY). ``make`` builds the coroutine, once per start."""
    task = asyncio.get_running_loop().create_task(make(), name=name)
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if t.cancelled() or t.exception() is None:
            return
        exc = t.exception()
        log.error("internal task failed", extra={"task": name, "error": f"{type(exc).__name__}: {exc}",
                                                 "restart": restart}, exc_info=exc)
        if restart:
            loop = asyncio.get_running_loop()
            holder: set[asyncio.Task[Any]] = tasks
            loop.call_later(RESTART_SECONDS, lambda: spawn(make, name, holder, restart=restart))

    task.add_done_callback(done)
    return task
