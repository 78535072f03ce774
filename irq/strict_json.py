"""JSON read strictly: a JSON object with the same key twice (which one would a reader take?) and text that
starts with a byte order mark (RFC 8259 forbids sending one) are refused, instead of being read one way
here and another way by the client's own tools. Request bodies and the lines of a batch are read so."""

from __future__ import annotations

import json
from typing import Any


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
