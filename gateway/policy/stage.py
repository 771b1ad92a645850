"""The ``policy`` stage: quarantine a 個人番号 on a route that must not carry one.

NAME
    policy_stage - refuse messages carrying a 個人番号 on ``personal_number = "forbidden"`` routes

DESCRIPTION
    The relay puts this stage on every forbidden route, after ``open`` (clear payload) and before
    ``seal``. Each payload is scanned in the route's declared ``payload_encoding`` (and in any
    ``extra_encodings``); the source system's headers and the message properties are scanned too,
    since they travel in clear. Results, one per message, in order:

        Message                                    nothing found: pass it on unchanged
        Refusal("personal-number", "offset N")    first 個人番号 at byte offset N of the payload
        Refusal("personal-number", "in a message header or property")
        Refusal("encoding-undeclared", ...)       the route declares no payload encoding
        Refusal("encoding-unknown", ...)          the declared encoding is not one we can scan

    An undeclared or unknown encoding refuses every message (fail closed): a route that cannot be
    checked must not deliver. ``jgw check-config`` warns about it (``config_warnings``).

    On an ``allowed`` route the stage passes everything through (the relay normally does not
    insert it there).

OPTIONS ([routes.NAME.policy], all optional)
    extra_encodings = ["cp932"]   also scan in these encodings; a hit in any refuses
    scan_headers = true           scan header values and message properties

Security: reads hostile payload bytes and headers. Details carry an offset, never digits, header
names or values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.message import Message
from gateway.policy.detector import EncodingError, Scanner, scanner
from gateway.stage import Refusal, StageResult

if TYPE_CHECKING:
    from gateway.config import Options, RouteConfig
    from gateway.stage import NodeContext

REASON = "personal-number"
#: Above this size a batch may take milliseconds to scan: run it off the event loop.
_BLOCKING_ABOVE = 64 * 1024
_MAX_DEPTH = 8


class PolicyStage:
    name = "policy"

    def __init__(self, route: str, scanners: Sequence[Scanner], encoding_error: EncodingError | None,
                 *, enforce: bool, scan_headers: bool, blocking: bool) -> None:
        self.route = route
        self.scanners = tuple(scanners)
        self.encoding_error = encoding_error
        self.enforce = enforce
        self.scan_headers = scan_headers
        self.blocking = blocking
        self._text = scanner("utf-8")

    def __repr__(self) -> str:
        names = ",".join(s.encoding for s in self.scanners) or "-"
        state = "enforcing" if self.enforce else "pass-through"
        return f"PolicyStage(route={self.route!r}, {state}, encodings={names})"

    def process(self, batch: Sequence[Message]) -> list[StageResult]:
        if not self.enforce:
            return list(batch)
        if self.encoding_error is not None:
            refusal = Refusal(self.encoding_error.code, self.encoding_error.message)
            return [refusal for _ in batch]
        return [self._check(m) for m in batch]

    def _check(self, message: Message) -> StageResult:
        first: int | None = None
        for sc in self.scanners:
            hit = sc.first(message.body)
            if hit is not None and (first is None or hit < first):
                first = hit
        if first is not None:
            return Refusal(REASON, f"offset {first}")
        if self.scan_headers and self._headers_carry_number(message):
            return Refusal(REASON, "in a message header or property")
        return message

    def _headers_carry_number(self, message: Message) -> bool:
        props = (message.message_id, message.correlation_id, message.type, message.app_id,
                 message.content_type, message.content_encoding)
        return any(self._value_carries(v, 0) for v in props) or self._value_carries(message.headers, 0)

    def _value_carries(self, value: Any, depth: int) -> bool:
        if value is None or isinstance(value, bool) or depth > _MAX_DEPTH:
            return False
        if isinstance(value, str):
            return self._text.first(value.encode("utf-8", "surrogatepass")) is not None
        if isinstance(value, bytes | bytearray):
            raw = bytes(value)
            return any(sc.first(raw) is not None for sc in (*self.scanners, self._text))
        if isinstance(value, int | float):
            return self._text.first(str(value).encode()) is not None
        if isinstance(value, Mapping):
            return any(self._value_carries(k, depth + 1) or self._value_carries(v, depth + 1)
                       for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(self._value_carries(v, depth + 1) for v in value)
        return self._value_carries(str(value), depth + 1)


def policy_stage(options: Options, route: RouteConfig, node: NodeContext) -> PolicyStage:
    """Build the stage for a route from its optional ``[routes.NAME.policy]`` table."""
    scan_headers = options.bool("scan_headers", True)
    extra = options.list("extra_encodings", [])
    extra_scanners: list[Scanner] = []
    for i, name in enumerate(extra):
        if not isinstance(name, str):
            raise options.error(f"extra_encodings[{i}]", "expected an encoding name")
        try:
            extra_scanners.append(scanner(name))
        except EncodingError as exc:
            raise options.error(f"extra_encodings[{i}]", exc.message) from exc
    options.done()
    error: EncodingError | None = None
    scanners: list[Scanner] = []
    try:
        scanners.append(scanner(route.payload_encoding))
    except EncodingError as exc:
        error = exc
    scanners.extend(s for s in extra_scanners if s.encoding not in {x.encoding for x in scanners})
    return PolicyStage(route.name, scanners, error, enforce=route.personal_number == "forbidden",
                       scan_headers=scan_headers, blocking=route.max_size > _BLOCKING_ABOVE)


def config_warnings(route: RouteConfig) -> list[str]:
    """What ``jgw check-config`` should say about a route's policy (empty when all is well)."""
    if route.personal_number != "forbidden":
        return []
    try:
        scanner(route.payload_encoding)
    except EncodingError as exc:
        return [f"route {route.name}: personal_number is 'forbidden' but {exc.message}: every message "
                f"will be quarantined with reason {exc.code} (set payload_encoding)"]
    return []
