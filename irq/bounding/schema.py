"""Reading a JSON Schema: its keywords, its subschemas, its references and its types."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

_TYPES = frozenset({"null", "boolean", "integer", "number", "string", "array", "object"})
# Keywords that constrain an instance: a schema with none of them accepts anything.
_ASSERTING = frozenset(
    {
        "type", "enum", "const", "properties", "patternProperties", "additionalProperties", "required",
        "items", "prefixItems", "additionalItems", "contains", "minContains", "maxContains", "minItems",
        "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
        "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minProperties", "maxProperties",
        "propertyNames", "dependencies", "dependentRequired", "dependentSchemas", "allOf", "anyOf", "oneOf",
        "not", "if", "then", "else", "$ref", "$dynamicRef", "$recursiveRef", "unevaluatedProperties",
        "unevaluatedItems",
    }
)  # fmt: skip
_SINGLE = (
    "additionalProperties", "additionalItems", "items", "contains", "propertyNames", "not", "if", "then",
    "else", "unevaluatedProperties", "unevaluatedItems",
)  # fmt: skip
_COMBINATORS = frozenset({"allOf", "anyOf", "oneOf"})
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_MAPS = ("properties", "patternProperties", "dependentSchemas", "dependencies", "$defs", "definitions")


class _Document:
    """The schema being read, and its references: only `#` and `#/json/pointer` ones are followed."""

    def __init__(self, root: Any) -> None:
        self.root = root
        # A nested $id rebases the references under it: then none is followed rather than some wrongly.
        self._follow = not any(
            isinstance(node.get(key), str)
            for node in _subschemas(root)
            if node is not root
            for key in ("$id", "id")
        )

    def resolve(self, ref: Any) -> Any | None:
        if not (self._follow and isinstance(ref, str) and ref.startswith("#")):
            return None
        pointer = unquote(ref[1:])
        if pointer and not pointer.startswith("/"):
            return None  # an anchor
        node = self.root
        for part in pointer.split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def references(self, node: dict[str, Any]) -> Iterator[Any | None]:
        """What `node` refers to; None for each reference that cannot be followed."""
        if "$ref" in node:
            yield self.resolve(node["$ref"])
        if "$dynamicRef" in node or "$recursiveRef" in node:
            yield None


def _children(node: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Each subschema written inside `node`, with the keyword it sits under."""
    for keyword in _SINGLE:
        if isinstance(node.get(keyword), (dict, bool)):
            yield keyword, node[keyword]
    for keyword in _LISTS:
        if isinstance(node.get(keyword), list):
            yield from ((keyword, sub) for sub in node[keyword])
    for keyword in _MAPS:
        if isinstance(node.get(keyword), dict):
            yield from ((keyword, sub) for sub in node[keyword].values() if isinstance(sub, (dict, bool)))


def _subschemas(root: Any) -> Iterator[dict[str, Any]]:
    """Every schema object written in `root`, `root` included."""
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(sub for _, sub in _children(node))


def _types(node: dict[str, Any]) -> frozenset[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return _TYPES & {declared}
    if isinstance(declared, list):
        return _TYPES & set(declared)
    return _TYPES


def _possible_types(node: dict[str, Any]) -> frozenset[str]:
    """The types an instance of `node` can have, narrowed by the types its combinators' branches declare."""
    kinds = _types(node)
    for branch in _list(node, "allOf"):
        if isinstance(branch, dict) and "type" in branch:
            kinds &= _types(branch)
    for keyword in ("anyOf", "oneOf"):
        branches = _list(node, keyword)
        if branches and all(isinstance(branch, dict) and "type" in branch for branch in branches):
            kinds &= frozenset().union(*(_types(branch) for branch in branches))
    return kinds


def _own_kinds(node: dict[str, Any]) -> frozenset[str]:
    """The types whose caps go on `node` itself: none for a bare `anyOf`/`allOf`, whose branches carry them
    (llguidance also refuses keywords beside a combinator of recursive references)."""
    keywords = node.keys() & _ASSERTING
    if not keywords:
        return _TYPES
    if keywords == {"oneOf"}:  # its branches stay as they are: cap the types they declare, here
        branches = _list(node, "oneOf")
        if all(isinstance(branch, dict) and "type" in branch for branch in branches):
            return frozenset().union(*(_types(branch) for branch in branches))
    return frozenset() if keywords <= _COMBINATORS else _types(node)


def _positions(node: dict[str, Any]) -> tuple[list[Any], Any]:
    """An array's positional item schemas and the schema of the items after them."""
    if isinstance(node.get("prefixItems"), list):
        return node["prefixItems"], node.get("items", True)
    if isinstance(node.get("items"), list):
        return node["items"], node.get("additionalItems", True)
    return [], node.get("items", True)


def _rest_keyword(node: dict[str, Any]) -> str:
    return "additionalItems" if isinstance(node.get("items"), list) else "items"


def _is_any(schema: Any) -> bool:
    return schema is True or (isinstance(schema, dict) and not schema.keys() & _ASSERTING)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numbers(*values: Any) -> list[float]:
    return [value for value in values if _is_number(value)]


def _int(value: Any) -> int | None:
    if _is_number(value) and value == int(value):
        return int(value)
    return None


def _list(node: dict[str, Any], keyword: str) -> list[Any]:
    value = node.get(keyword)
    return value if isinstance(value, list) else []


def _map(node: dict[str, Any], keyword: str) -> dict[str, Any]:
    value = node.get(keyword)
    return value if isinstance(value, dict) else {}
