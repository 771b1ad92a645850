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
        Refusal("header-invalid", ...)            a header the scan cannot read to the end: nested
                                                  deeper than 8 levels below the table, more than
                                                  100 000 names and values, or a value of a type
                                                  it does not know (fail closed)
        Refusal("encoding-undeclared", ...)       the route declares no payload encoding
        Refusal("encoding-unknown", ...)          the declared encoding is not one we can scan

    Header names are scanned like values, whatever their type (text, or bytes when a name is not
    UTF-8: bytes are scanned in the route's encodings and as UTF-8). The walk is iterative and
    bounded, so no header can make the stage raise.

    An undeclared or unknown encoding refuses every message (fail closed): a route that cannot be
    checked must not deliver. ``jgw check-config`` warns about it (``config_warnings``).

    A file route's messages are frames of files (header ``x-jgw-file``, ``gateway.files.chunks``):
    the stage scans the file's bytes and its **name** (bytes, in the declared encodings), not the
    frame's own header. A chunk is judged on its own, across its boundary with the previous chunk:
    it carries the previous chunk's last bytes (``overlap``) and ``chunks.scan_window`` says which
    match offsets are this chunk's to judge, so a 個人番号 split between two chunks is found at
    whichever hop, after whatever restart. Once a frame of a file is refused, every later frame of
    that file is refused too (``personal-number``, "an earlier frame of this file carries one"),
    so neither its manifest nor its later chunks leave: the file never appears at the far end. A
    frame that does not decode is ``chunk-malformed``.

    On an ``allowed`` route the stage passes everything through (the relay normally does not
    insert it there).

OPTIONS ([routes.NAME.policy], all optional)
    extra_encodings = ["cp932"]   also scan in these encodings; a hit in any refuses
    scan_headers = true           scan header values and message properties

Security: reads hostile payload bytes and headers. Details carry an offset, never digits, header
names or values.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.files.chunks import Abort, Chunk, Manifest, Whole, decode, scan_window
from gateway.files.errors import ChunkError
from gateway.files.settings import H_FILE
from gateway.message import Message
from gateway.policy.detector import EncodingError, Scanner, scanner
from gateway.route.stages import Refusal, StageResult

if TYPE_CHECKING:
    from gateway.config import RouteConfig
    from gateway.options import Options
    from gateway.route.stages import NodeContext

REASON = "personal-number"
#: Above this size a batch may take milliseconds to scan: run it off the event loop.
_BLOCKING_ABOVE = 64 * 1024
#: Containers nested below the headers table that the scan reads (the envelope's inner limit).
_MAX_DEPTH = 8
#: Names and values scanned per message at most: past it the message is refused, not half-read.
_MAX_ITEMS = 100_000
#: Files remembered as refused (their later frames are refused too); the oldest are forgotten first.
_REFUSED_FILES = 4096


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
        self._refused_files: OrderedDict[str, None] = OrderedDict()

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
        if H_FILE in message.headers:
            return self._check_frame(message)
        first: int | None = None
        for sc in self.scanners:
            hit = sc.first(message.body)
            if hit is not None and (first is None or hit < first):
                first = hit
        if first is not None:
            return Refusal(REASON, f"offset {first}")
        if self.scan_headers:
            props = (message.message_id, message.correlation_id, message.type, message.app_id,
                     message.content_type, message.content_encoding)
            found, invalid = self._scan([*props, message.headers])
            if found:
                return Refusal(REASON, "in a message header or property")
            if invalid is not None:
                return Refusal("header-invalid", invalid)
        return message

    def _check_frame(self, message: Message) -> StageResult:
        try:
            frame = decode(message.body)
        except ChunkError as exc:
            return Refusal(exc.reason, exc.detail)
        fid = frame.file_id
        if isinstance(frame, Abort):
            return message  # carries nothing of the file
        if fid in self._refused_files:
            return Refusal(REASON, "an earlier frame of this file carries one")
        where: str | None = None
        if isinstance(frame, Chunk):
            window, lo, hi = scan_window(frame)
            for sc in self.scanners:
                hits = [h for h in sc.find(window) if lo <= h < hi]
                if hits:
                    where = f"chunk {frame.index}, file offset {frame.offset - len(frame.overlap) + min(hits)}"
                    break
        else:
            assert isinstance(frame, Manifest | Whole)
            if any(sc.first(frame.name) is not None for sc in (*self.scanners, self._text)):
                where = "in the file name"
            elif isinstance(frame, Whole):
                first = min((h for sc in self.scanners if (h := sc.first(frame.data)) is not None), default=None)
                if first is not None:
                    where = f"file offset {first}"
        if where is None and self.scan_headers:
            # for a file frame, not jgw's own ids and file id (it made them)
            headers = {k: v for k, v in message.headers.items() if k != H_FILE}
            found, invalid = self._scan([message.correlation_id, message.type, message.app_id, headers])
            if found:
                where = "in a message header or property"
            elif invalid is not None:
                return Refusal("header-invalid", invalid)
        if where is None:
            return message
        self._refused_files[fid] = None
        while len(self._refused_files) > _REFUSED_FILES:
            self._refused_files.popitem(last=False)
        return Refusal(REASON, where)

    def _scan(self, roots: list[Any]) -> tuple[bool, str | None]:
        """(a 個人番号 found, why the scan could not read everything) over names and values.

        Depth counts containers: the headers table is 0, a table or list inside it 1, and so on up
        to ``_MAX_DEPTH``. A number found anywhere wins over a part that could not be read."""
        invalid: str | None = None
        stack: list[tuple[Any, int]] = [(r, 0) for r in roots]
        seen = 0
        while stack:
            value, depth = stack.pop()
            seen += 1
            if seen > _MAX_ITEMS:
                return False, f"more than {_MAX_ITEMS} header names and values"
            if value is None or isinstance(value, bool):
                continue
            if isinstance(value, Mapping | list | tuple):
                if depth > _MAX_DEPTH:
                    invalid = invalid or f"a header nested deeper than {_MAX_DEPTH} levels"
                    continue
                if isinstance(value, Mapping):
                    for k, v in value.items():
                        stack.append((k, depth))
                        stack.append((v, depth + 1))
                else:
                    stack.extend((v, depth + 1) for v in value)
                continue
            kind = self._leaf(value)
            if kind is True:
                return True, None
            if kind is None:
                if hasattr(value, "amqp_type") and hasattr(value, "value"):
                    stack.append((value.value, depth))  # a typed value (gateway.envelope.inner.Typed)
                else:
                    invalid = invalid or f"a header value of type {type(value).__name__} the scan cannot read"
        return False, invalid

    def _leaf(self, value: Any) -> bool | None:
        """True: holds a 個人番号; False: does not; None: not a leaf type the scan reads."""
        if isinstance(value, str):
            return self._text.first(value.encode("utf-8", "surrogatepass")) is not None
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            return any(sc.first(raw) is not None for sc in (*self.scanners, self._text))
        if isinstance(value, int | float | decimal.Decimal):
            return self._text.first(str(value).encode()) is not None
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return self._text.first(value.isoformat().encode()) is not None
        return None


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
