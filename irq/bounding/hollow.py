"""Hollow documents: valid, but with no content where the schema had room for some.

A document is *hollow* when it holds no scalar of substance: no number, no boolean, no non-empty string
anywhere (object keys do not count), as `{}`, `[]`, `{"a": {}}`, `{"tags": [], "name": ""}` or
`{"x": null}`. A schema *admits substance* when some instance of it holds a scalar of substance. A job whose
document is hollow while its schema admits substance has not succeeded: the model answered with a shell
(`{}` is what a model cut at `max_tokens` falls back to under a grammar that closes every object).

`admits_substance` reads the schema as the bounding does (`irq.bounding.schema`) and errs towards False
where it cannot tell (a reference it cannot follow): a document is never called hollow on a guess.
"""

from __future__ import annotations

from typing import Any

from irq.bounding.schema import _Document, _int, _list, _map, _positions, _possible_types

_SUBSTANTIAL_TYPES = frozenset({"number", "integer", "boolean"})


def has_substance(value: Any) -> bool:
    """Whether `value` holds a number, a boolean or a non-empty string anywhere (keys aside)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if item:
                return True
        elif item is not None:
            return True  # a number or a boolean
    return False


def admits_substance(schema: Any) -> bool:
    """Whether some instance of `schema` holds a scalar of substance (see the module's docstring)."""
    return _Substance(_Document(schema)).admits(schema)


def is_hollow(document: Any, schema: Any) -> bool:
    """Whether `document` (valid against `schema`) is a hollow shell of what the schema allows."""
    return not has_substance(document) and admits_substance(schema)


class _Substance:
    """`admits_substance`, memoized per subschema; a subschema met again inside itself answers False."""

    def __init__(self, doc: _Document) -> None:
        self._doc = doc
        self._memo: dict[int, bool] = {}
        self._active: set[int] = set()

    def admits(self, schema: Any) -> bool:
        if schema is True:
            return True
        if not isinstance(schema, dict):
            return False
        key = id(schema)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            return False
        self._active.add(key)
        try:
            result = self._admits(schema)
        finally:
            self._active.discard(key)
        self._memo[key] = result
        return result

    def _admits(self, node: dict[str, Any]) -> bool:
        if "$ref" in node:
            target = self._doc.resolve(node["$ref"])
            return target is not None and self.admits(target)
        if "const" in node:
            return has_substance(node["const"])
        if isinstance(node.get("enum"), list):
            return any(has_substance(value) for value in node["enum"])
        if not all(self.admits(branch) for branch in _list(node, "allOf")):
            return False
        for keyword in ("anyOf", "oneOf"):
            branches = _list(node, keyword)
            if branches and not any(self.admits(branch) for branch in branches):
                return False
        return self._own(node)

    def _own(self, node: dict[str, Any]) -> bool:
        kinds = _possible_types(node)
        if kinds & _SUBSTANTIAL_TYPES:
            return True
        if "string" in kinds and _int(node.get("maxLength")) != 0:
            return True
        if "object" in kinds and _int(node.get("maxProperties")) != 0:
            values = [*_map(node, "properties").values(), *_map(node, "patternProperties").values()]
            values.append(node.get("additionalProperties", True))
            if any(self.admits(value) for value in values):
                return True
        if "array" in kinds and _int(node.get("maxItems")) != 0:
            prefix, rest = _positions(node)
            if any(self.admits(item) for item in [*prefix, rest]):
                return True
        return False
