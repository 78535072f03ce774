"""ASGI middleware for request bodies: a size limit, a time limit, and JSON whatever the Content-Type
says."""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BodyTimedOut, BodyTooLarge, error_answer
from irq.error_codes import ErrorCode

_JSON = b"application/json"
_FORM = b"application/x-www-form-urlencoded"
# An over-limit body up to this size is read (and dropped) before the 413, so that every client reads the
# answer; a larger one is answered at once.
DRAIN_MAX_BYTES = 64 * 1024 * 1024


class BodyPolicy:
    """Refuses bodies over `max_bytes` with 413, and reads form-typed or untyped bodies as JSON.

    `curl -d '{...}'` labels its body as a form; the API speaks only JSON, and every request carries a
    bearer key that a cross-site form cannot send, so treating such bodies as JSON opens nothing.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_bytes_under: dict[str, int] | None = None,
        idle_timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_bytes_under = max_bytes_under or {}  # path prefix → its own limit (batch uploads)
        # A body that stops arriving (a Content-Length larger than what is sent, a stalled client) is cut
        # after this long without a byte, and answered 408.
        self.idle_timeout_s = idle_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = next(
            (n for prefix, n in self.max_bytes_under.items() if scope["path"].startswith(prefix)),
            self.max_bytes,
        )
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            if int(length) <= DRAIN_MAX_BYTES:
                await _drain(receive)
            await _too_large(send, scope["path"], limit)
            return
        if headers.get(b"content-type", _FORM).split(b";")[0].strip() == _FORM:
            headers[b"content-type"] = _JSON
            scope = dict(scope, headers=list(headers.items()))
        await self.app(scope, self._limited(receive, limit), send)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        """Counts streamed (chunked) bodies too, which carry no Content-Length, and times out a body that
        stops arriving."""
        seen = 0
        complete = False

        async def wrapped() -> Message:
            nonlocal seen, complete
            if complete:  # after the body, a receive waits for the disconnect: no time limit
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_timeout_s)
            except TimeoutError:
                raise BodyTimedOut(self.idle_timeout_s) from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        return wrapped


async def _drain(receive: Receive) -> None:
    """Read and drop a body the API refuses. A client that sends its whole body before reading the answer
    (Python's urllib, and every script built on it) gets a connection reset instead of the 413 when the
    server answers first and closes."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _too_large(send: Send, path: str, max_bytes: int) -> None:
    message = f"request body is over {max_bytes} bytes"
    status, answer = error_answer(path, 413, ErrorCode.body_too_large, message)
    body = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
