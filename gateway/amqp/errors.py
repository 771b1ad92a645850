"""Errors of the AMQP 0-9-1 codec and of the lean asyncio connection: one tree, drawn here.

Security: pure definitions, no I/O. Texts carry reply codes, reply texts from the broker and
field names, never payload bytes or header values.

    ProtocolError                  the byte stream cannot be (or must not be) what it claims to be
     ├── RemoteProtocolError       the peer sent garbage: bad frame end, frame over frame_max, unknown
     │                             class/method, truncated fields, content out of order, tables nested
     │                             deeper than the limit. ``reply_code`` is the AMQP code to close with
     └── LocalProtocolError        we misused the codec: a shortstr over 255 bytes, an int out of range
                                   for its wire type, a value of no field type
    ConnectError                   Connection.open failed; ``cause`` is the underlying exception
    ChannelClosedError             an RPC or a publish on a channel that is (or became) closed
     └── ConnectionClosedError     ... because the whole connection closed

The codec raises only ``ProtocolError`` subclasses (h11's ``LocalProtocolError`` /
``RemoteProtocolError`` split): a peer's garbage is never confused with our bug.
"""

from __future__ import annotations

# AMQP 0-9-1 reply codes the codec and connection use (spec section 1.10 "Constants").
REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
CONNECTION_FORCED = 320
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541


class ProtocolError(Exception):
    """Base of codec errors; ``reply_code`` is the connection.close code that fits (h11's status hint)."""

    reply_code: int = SYNTAX_ERROR

    def __init__(self, message: str, reply_code: int | None = None) -> None:
        super().__init__(message)
        if reply_code is not None:
            self.reply_code = reply_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid AMQP 0-9-1 (or exceed our limits)."""


class LocalProtocolError(ProtocolError):
    """We asked the codec to write something AMQP 0-9-1 cannot carry."""


class ChannelClosedError(Exception):
    """A channel closed before (or while) an operation on it could complete."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text


class ConnectionClosedError(ChannelClosedError):
    """The connection closed; every channel on it is closed too."""


class ConnectError(Exception):
    """Opening a connection failed. ``cause`` keeps what went wrong underneath (ssl.SSLError,
    ConnectionRefusedError, TimeoutError, or a ConnectionClosedError with the broker's 403)."""

    def __init__(self, message: str, cause: BaseException | None) -> None:
        super().__init__(message)
        self.cause = cause
