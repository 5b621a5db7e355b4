"""The exceptions of the tickcast client."""

from __future__ import annotations


class TickcastError(Exception):
    """Base of every exception this package raises on purpose."""


class HandshakeError(TickcastError):
    """The server refused the WebSocket upgrade with an HTTP status (400 for
    a bad encoding or replay parameter, 401 without a valid token, 404 for
    an unknown replay source, 503 when full, ...); ``body`` is its
    plain-text reason."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body.strip()}")
        #: The HTTP status code.
        self.status = status
        #: The server's plain-text explanation.
        self.body = body


class ConnectionClosed(TickcastError):
    """The connection ended. ``code`` and ``reason`` are the close frame's
    (``None`` when the connection dropped without one), e.g. 1001 ``server
    shutting down`` or 1008 ``slow consumer`` (docs/PROTOCOL.md, "Close
    codes")."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed: {code if code is not None else 'no close frame'} {reason}".rstrip())
        #: The close code, or ``None`` without a close frame.
        self.code = code
        #: The close reason text.
        self.reason = reason
