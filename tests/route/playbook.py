"""A transcript driver for the route book (mitmproxy's Playbook, in spirit).

Events go in as method calls; what the book asks for comes back as short strings, so a test reads
like the hop contract it checks::

    p = Play(ordered=True)
    assert p.deliver(1, key="a") == []
    assert p.stage(1, 2) == ["publish(1)"]
    assert p.nack(1) == ["retried(1)", "later(5s, 1)"]

Messages are named by their delivery tag (``m1`` is tag 1); ``publish(1)`` names a sink leg by
its message id's tag. The book is pure: these run in microseconds, no broker, no event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.message import Message
from gateway.route.book import (
    Ack,
    Action,
    Commit,
    Confirm,
    FlushLater,
    Item,
    Later,
    Leg,
    Outcome,
    Output,
    Publish,
    Refuse,
    Restart,
    RouteBook,
    RouteRules,
    SetAside,
)
from gateway.route.stages import Refusal


def mid(tag: int) -> str:
    return f"m{tag}"


class Play:
    def __init__(self, **rules: Any) -> None:
        rules.setdefault("retry", (5.0, 30.0))
        rules.setdefault("ack_batch", 1000)
        rules.setdefault("commit_first", False)
        if rules.get("ordered"):
            rules.setdefault("ordering_header", "x-person")
        self.book = RouteBook(RouteRules(route="r", **rules))
        self.book.source_opened()
        self.book.sink_ready(True)
        self.book.side_ready(True)
        self.legs: dict[str, Leg] = {}  # "1" / "aside 1" -> leg, as last announced
        self.timers: list[Leg] = []
        self.items: dict[int, Item] = {}
        self.tokens: list[int] = []
        self.now = 1000.0

    # ------------------------------------------------------------------ rendering

    def _name(self, leg: Leg) -> str:
        return leg.message_id.removeprefix("m")

    def render(self, actions: Sequence[Action]) -> list[str]:
        out = []
        for a in actions:
            if isinstance(a, Publish):
                self.legs[self._name(a.leg)] = a.leg
                out.append(f"publish({self._name(a.leg)})")
            elif isinstance(a, SetAside):
                self.legs["aside " + self._name(a.leg)] = a.leg
                out.append(f"aside({a.leg.dest.value}:{a.leg.reason}, {self._name(a.leg)})")
            elif isinstance(a, Later):
                self.timers.append(a.leg)
                out.append(f"later({a.delay:g}s, {self._name(a.leg)})")
            elif isinstance(a, FlushLater):
                out.append("flush-later")
            elif isinstance(a, Commit):
                self.tokens.append(a.token)
                out.append("commit")
            elif isinstance(a, Ack):
                out.append(f"ack({', '.join(str(t) for t in a.tags)})")
            elif isinstance(a, Restart):
                out.append(f"restart({a.why})")
            elif isinstance(a, Outcome):
                who = self._name(a.leg) if a.leg is not None else (
                    str(a.item.tag) if a.item is not None else str(a.count))
                out.append(f"{a.event.value}({who})")
        return out

    # ------------------------------------------------------------------ events

    def deliver(self, tag: int, *, key: str | None = None, id: str | None = None, size: int = 10,
                attempt: int = 0, gen: int | None = None) -> list[str]:
        msg = Message(message_id=id or mid(tag), route="r", body=b"x" * size, order_key=key, attempt=attempt)
        actions = self.book.delivered(self.book.gen if gen is None else gen, tag, msg, {"tag": tag}, self.now)
        for item in self.book.items():
            self.items[item.tag] = item
        return self.render(actions)

    def stage(self, *tags: int, refuse: dict[int, str] | None = None, seen: Sequence[int] = (),
              outputs: Sequence[Output] | None = None) -> list[str]:
        """Take up to len(tags) items and pass each through unchanged (or refused)."""
        items = self.book.take(len(tags) or 1000)
        assert [i.tag for i in items] == list(tags), [i.tag for i in items]
        if outputs is None:
            outs = []
            for n, item in enumerate(items):
                why = (refuse or {}).get(item.tag)
                if why is not None:
                    outs.append(Output((n,), refusal=Refusal(why, "test"), refused=item.message))
                else:
                    outs.append(Output((n,), message=item.message))
            outputs = outs
        return self.render(self.book.staged(items, outputs, {mid(t) for t in seen}))

    def take(self, limit: int = 1000) -> list[Item]:
        return self.book.take(limit)

    def staged(self, items: Sequence[Item], outputs: Sequence[Output], seen: Sequence[str] = ()) -> list[str]:
        return self.render(self.book.staged(items, outputs, seen))

    def ack(self, name: str | int) -> list[str]:
        return self.render(self.book.confirmed(self.legs[str(name)], Confirm.ACK))

    def nack(self, name: str | int) -> list[str]:
        return self.render(self.book.confirmed(self.legs[str(name)], Confirm.NACK))

    def returned(self, name: str | int) -> list[str]:
        return self.render(self.book.confirmed(self.legs[str(name)], Confirm.RETURNED))

    def refuse(self, name: str | int, reason: str, detail: str = "") -> list[str]:
        """The sink refuses the put with a reason code (``Refuse``)."""
        return self.render(self.book.confirmed(self.legs[str(name)], Refuse(reason, detail)))

    def aside_ok(self, name: str | int) -> list[str]:
        return self.render(self.book.confirmed(self.legs[f"aside {name}"], Confirm.ACK))

    def aside_nack(self, name: str | int) -> list[str]:
        return self.render(self.book.confirmed(self.legs[f"aside {name}"], Confirm.NACK))

    def fire(self) -> list[str]:
        """The oldest pending timer fires."""
        return self.render(self.book.due(self.timers.pop(0)))

    def flush(self) -> list[str]:
        return self.render(self.book.flush())

    def committed(self, ok: bool = True) -> list[str]:
        return self.render(self.book.committed(self.tokens.pop(0), ok))

    def sink_lost(self, *names: str | int) -> list[str]:
        return self.render(self.book.sink_lost([self.legs[str(n)] for n in names]))

    def source_lost(self) -> list[str]:
        return self.render(self.book.source_lost(self.book.gen))

    def reopen(self) -> int:
        return self.book.source_opened()

    def blocked(self, why: str, on: bool = True) -> list[str]:
        return self.render(self.book.blocked(why, on))
