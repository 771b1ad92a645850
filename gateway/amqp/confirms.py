"""Publisher-confirm bookkeeping for one channel: sequence number → what was published.

Pure (no I/O), like RabbitMQ Shovel's ``rabbit_shovel_confirms``. pika gives no per-publish
future: sequence numbers are 1, 2, 3 … per channel in publish order and restart on every new
channel; ``basic.ack``/``basic.nack`` may settle many at once (``multiple``); ``basic.return``
(mandatory, unroutable) carries no sequence number and arrives *before* the ack of the same
message, so returns are matched by message id to the oldest unsettled publish of that id.

Security: handles ids and opaque tokens only.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.route.book import Confirm

T = TypeVar("T")


@dataclass(slots=True)
class _Pending(Generic[T]):
    token: T
    message_id: str
    returned: bool = False


class ConfirmTracker(Generic[T]):
    """Outstanding publishes of one channel, in sequence order."""

    __slots__ = ("_next_seq", "_pending")

    def __init__(self) -> None:
        self._pending: OrderedDict[int, _Pending[T]] = OrderedDict()
        self._next_seq = 1

    def __len__(self) -> int:
        return len(self._pending)

    def published(self, token: T, message_id: str) -> int:
        """Record a publish; returns its sequence number."""
        seq = self._next_seq
        self._next_seq += 1
        self._pending[seq] = _Pending(token, message_id)
        return seq

    def returned(self, message_id: str) -> bool:
        """A basic.return for this id: mark the oldest unsettled publish of it. False if unknown."""
        for entry in self._pending.values():
            if entry.message_id == message_id and not entry.returned:
                entry.returned = True
                return True
        return False

    def settle(self, seq: int, multiple: bool, ack: bool) -> list[tuple[T, Confirm]]:
        """Apply a basic.ack / basic.nack; returns the settled tokens in publish order."""
        out: list[tuple[T, Confirm]] = []
        if multiple:
            while self._pending:
                first = next(iter(self._pending))
                if first > seq:
                    break
                entry = self._pending.pop(first)
                out.append((entry.token, _result(entry, ack)))
        else:
            single = self._pending.pop(seq, None)
            if single is not None:
                out.append((single.token, _result(single, ack)))
        return out

    def drain(self) -> list[T]:
        """The channel is gone: every unsettled publish, in order, for the caller to republish."""
        tokens = [e.token for e in self._pending.values()]
        self._pending.clear()
        return tokens


def _result(entry: _Pending[T], ack: bool) -> Confirm:
    if not ack:
        return Confirm.NACK
    return Confirm.RETURNED if entry.returned else Confirm.ACK
