"""How request bodies are read as JSON: strictly. A JSON object with the same key twice (which one would a
reader take?) and a body that starts with a byte order mark (RFC 8259 forbids sending one) are refused
with 400, instead of being read one way here and another way by the client's own tools."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute


class StrictJSONError(ValueError):
    """The body is JSON that irq does not read: a duplicate key, or a byte order mark."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise StrictJSONError(f"a JSON object has the key {twice[0]!r} more than once")
    return dict(pairs)


def loads(data: bytes | str) -> Any:
    """`json.loads`, refusing duplicate keys and a leading byte order mark."""
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            raise StrictJSONError("the body starts with a byte order mark; send UTF-8 without one")
        data = data.decode("utf-8")
    elif data.startswith("\ufeff"):
        raise StrictJSONError("the body starts with a byte order mark; send UTF-8 without one")
    return json.loads(data, object_pairs_hook=_no_duplicates)


class _StrictRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is read by `loads` (FastAPI's own reading wraps its errors in a 400 whose
    cause `api/errors.py` names)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(_StrictRequest(request.scope, request.receive))

        return strict
