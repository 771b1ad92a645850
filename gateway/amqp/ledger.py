"""Which source deliveries may be acknowledged, and how: the ack side of the hop contract.

Pure (no I/O). A delivery is *settled* when its message is durably somewhere else (sink confirmed,
or retry tier / dead-letter / quarantine confirmed, or found to be a duplicate). Settled deliveries
are acknowledged in batches: ``basic_ack(multiple=True)`` up to the end of the settled prefix, then
single acks for settled deliveries behind a gap (a message held for ordering must not block the
prefetch window of everything after it).

Security: delivery tags only.
"""

from __future__ import annotations

from collections import OrderedDict


class SourceLedger:
    """Deliveries of one consume channel generation, in delivery-tag order."""

    __slots__ = ("_open", "_settled_waiting")

    def __init__(self) -> None:
        self._open: OrderedDict[int, bool] = OrderedDict()  # tag -> settled
        self._settled_waiting = 0

    def __len__(self) -> int:
        return len(self._open)

    @property
    def ackable(self) -> int:
        """Settled deliveries not yet acknowledged."""
        return self._settled_waiting

    def delivered(self, tag: int) -> None:
        self._open[tag] = False

    def settle(self, tag: int) -> None:
        if self._open.get(tag) is False:
            self._open[tag] = True
            self._settled_waiting += 1

    def take_acks(self) -> tuple[int | None, list[int]]:
        """What to acknowledge now: (ack everything up to this tag with multiple=True, single tags).

        Removes them from the ledger; the caller must send them on the same channel generation.
        """
        if not self._settled_waiting:
            return None, []
        upto: int | None = None
        while self._open:
            tag, settled = next(iter(self._open.items()))
            if not settled:
                break
            self._open.popitem(last=False)
            upto = tag
            self._settled_waiting -= 1
        singles: list[int] = []
        if self._settled_waiting:
            singles = [tag for tag, settled in self._open.items() if settled]
            for tag in singles:
                del self._open[tag]
            self._settled_waiting = 0
        return upto, singles
