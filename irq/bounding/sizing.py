"""Worst-case sizing: an upper bound on the compact-JSON length of any instance of a schema."""

from __future__ import annotations

import json
import math
from typing import Any

from irq.bounding.rules import FLOAT_CHARS, MAP_KEY_CHARS, OPEN_KEY_PATTERN
from irq.bounding.schema import _Document, _int, _list, _map, _numbers, _positions, _possible_types


class _Sizer:
    """Worst-case compact-JSON lengths, memoized per subschema (a recursive schema is unbounded)."""

    def __init__(self, doc: _Document, number_chars: int | None) -> None:
        self._doc = doc
        self._number_chars = number_chars
        self._memo: dict[int, int | None] = {}
        self._active: set[int] = set()

    def size(self, schema: Any) -> int | None:
        if schema is False:
            return 0
        if not isinstance(schema, dict):
            return None
        key = id(schema)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            return None
        self._active.add(key)
        try:
            result = self._size(schema)
        finally:
            self._active.discard(key)
        self._memo[key] = result
        return result

    def _size(self, node: dict[str, Any]) -> int | None:
        if (
            "$ref" in node
        ):  # before draft 2019-09 the keywords beside $ref are ignored: only its target counts
            target = self._doc.resolve(node["$ref"])
            return None if target is None else self.size(target)
        bounds = [self._own(node)]
        bounds.extend(self.size(branch) for branch in _list(node, "allOf"))
        for keyword in ("anyOf", "oneOf"):
            if branches := _list(node, keyword):
                sizes = [self.size(branch) for branch in branches]
                bounds.append(None if None in sizes else max(s for s in sizes if s is not None))
        return min((b for b in bounds if b is not None), default=None)

    def _own(self, node: dict[str, Any]) -> int | None:
        if "const" in node:
            return _compact_len(node["const"])
        if isinstance(node.get("enum"), list):
            return max((_compact_len(value) for value in node["enum"]), default=0)
        worst = 0
        for kind in _possible_types(node):
            size = self._of_type(kind, node)
            if size is None:
                return None
            worst = max(worst, size)
        return worst

    def _of_type(self, kind: str, node: dict[str, Any]) -> int | None:
        if kind == "null":
            return 4
        if kind == "boolean":
            return 5
        if kind in ("integer", "number"):
            return self._number(node, integer=kind == "integer")
        if kind == "string":
            limit = _int(node.get("maxLength"))
            return None if limit is None else limit + 2
        return self._array(node) if kind == "array" else self._object(node)

    def _number(self, node: dict[str, Any], *, integer: bool) -> int | None:
        lows = _numbers(node.get("minimum"), node.get("exclusiveMinimum"))
        highs = _numbers(node.get("maximum"), node.get("exclusiveMaximum"))
        if not lows or not highs:
            return self._number_chars
        low, high = math.ceil(max(lows)), math.floor(min(highs))
        if low > high:
            return 0
        digits = max(len(str(low)), len(str(high))) + 2  # an integral float is written "3.0"
        return digits if integer else max(digits, FLOAT_CHARS)

    def _array(self, node: dict[str, Any]) -> int | None:
        prefix, rest = _positions(node)
        count = _int(node.get("maxItems"))
        if rest is False:
            count = len(prefix) if count is None else min(count, len(prefix))
        if count is None:
            return None
        total = 2 + max(count - 1, 0)
        for sub in prefix[:count]:
            size = self.size(sub)
            if size is None:
                return None
            total += size
        if count > len(prefix):
            size = self.size(rest)
            if size is None:
                return None
            total += (count - len(prefix)) * size
        return total

    def _object(self, node: dict[str, Any]) -> int | None:
        limit = _int(node.get("maxProperties"))
        if limit == 0:
            return 2
        patterns = _map(node, "patternProperties")
        if node.get("additionalProperties", True) is not False or set(patterns) - {OPEN_KEY_PATTERN}:
            return None  # the keys, if not their number, are unbounded
        entries = []
        for name, sub in _map(node, "properties").items():
            if sub is not False:
                size = self.size(sub)
                if size is None:
                    return None
                entries.append(len(name) + 3 + size)
        for sub in patterns.values():  # the bounding's room of an open object: keys of MAP_KEY_CHARS at most
            size = self.size(sub)
            if size is None or limit is None:
                return None
            entries.extend([MAP_KEY_CHARS + 3 + size] * limit)
        if limit is not None:
            entries = sorted(entries, reverse=True)[:limit]
        return 2 + sum(entries) + max(len(entries) - 1, 0)


def _compact_len(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
