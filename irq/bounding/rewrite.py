"""The bounding rewrite: a first pass plans each subschema's budget, a second writes the caps it allows."""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any

from irq.bounding.rules import (
    _MAX_VISITS,
    FORMAT_MIN_CHARS,
    MAP_KEY_CHARS,
    MIN_ITEM_CHARS,
    MIN_STRING_CHARS,
    NUMBER_CHARS,
    OPEN_KEY_PATTERN,
    OPEN_VALUE_TYPES,
)
from irq.bounding.schema import (
    _ASSERTING,
    _children,
    _Document,
    _int,
    _is_any,
    _list,
    _map,
    _own_kinds,
    _positions,
    _rest_keyword,
    _subschemas,
    _types,
)
from irq.bounding.sizing import _Sizer

# Keywords beside which an anyOf branch stays open: closing it could forbid the keys they allow or name.
_KEEP_BRANCHES_OPEN = frozenset(
    {"properties", "patternProperties", "additionalProperties", "required", "dependencies",
     "dependentRequired", "dependentSchemas", "allOf", "oneOf", "not", "if", "then", "else", "$ref",
     "$dynamicRef", "$recursiveRef"}
)  # fmt: skip
# The types whose values are content: an object whose every value can only be another container is empty.
_SCALARS = frozenset({"string", "number", "integer", "boolean"})
# Where a subschema can mention property names of the object it applies to.
_MENTIONING = frozenset(
    {"allOf", "anyOf", "oneOf", "not", "if", "then", "else", "dependentSchemas", "dependencies"}
)


def _bounded(schema: dict[str, Any], budget: int, items: int, min_items: int = 0) -> dict[str, Any]:
    bounded = copy.deepcopy(schema)
    doc = _Document(bounded)
    frozen = _frozen(doc)
    if frozen is None:  # a reference we cannot follow under oneOf/not/if: anything might be behind it
        return bounded
    planner = _Planner(doc, frozen, items, min_items)
    planner.visit(bounded, budget, closable=True)
    for node, visit in planner.visits.values():
        _apply(node, visit)
    return bounded


def _frozen(doc: _Document) -> set[int] | None:
    """The ids of the subschemas that must stay as they are; None when they cannot all be found.

    Narrowing a subschema under `oneOf` (another branch may stop matching), `not`, `if`, `unevaluated*` or a
    `maxContains` could make the original refuse what the narrowed schema accepts; so could narrowing what
    such a subschema refers to.
    """
    seeds: list[Any] = []
    for node in _subschemas(doc.root):
        if "unevaluatedProperties" in node or "unevaluatedItems" in node:
            seeds.append(node)
        seeds.extend(sub for keyword, sub in _children(node) if keyword in ("oneOf", "not", "if"))
        if "maxContains" in node:
            seeds.append(node.get("contains"))
    frozen: set[int] = set()
    while seeds:
        node = seeds.pop()
        if not isinstance(node, dict) or id(node) in frozen:
            continue
        frozen.add(id(node))
        seeds.extend(sub for _, sub in _children(node))
        for target in doc.references(node):
            if target is None:
                return None
            seeds.append(target)
    return frozen


@dataclass
class _Visit:
    """What the plan decided for one subschema: its budget (the least it was given) and its caps."""

    budget: int
    closable: bool
    max_items: int | None = None
    max_properties: int | None = None
    min_properties: int | None = None


class _Planner:
    """The first pass: walks the schema from its root through references, giving each subschema a budget.

    It also declares, as `{}`, the property names an object that will be closed mentions but does not
    declare (neutral while `additionalProperties` allows anything), and writes `{}` where `items` is
    missing or `true`, so that the second pass has a node to cap.
    """

    def __init__(self, doc: _Document, frozen: set[int], items: int, min_items: int) -> None:
        self.visits: dict[int, tuple[dict[str, Any], _Visit]] = {}
        self._doc = doc
        self._frozen = frozen
        self._items = items  # the most items an array, or entries a map, is planned for
        self._min_items = min_items  # the fewest an array is planned for, whatever its budget
        self._sizer = _Sizer(doc, NUMBER_CHARS)
        self._active: set[int] = set()
        self._steps = 0

    def visit(self, node: Any, budget: int, *, closable: bool) -> None:
        if not isinstance(node, dict) or id(node) in self._frozen or self._steps > _MAX_VISITS:
            return
        key = id(node)
        known = self.visits.get(key)
        if known is not None:
            known[1].closable = known[1].closable and closable
            if budget >= known[1].budget or key in self._active:
                return
            known[1].budget = budget
        else:
            self.visits[key] = (node, _Visit(budget, closable))
        self._steps += 1
        self._active.add(key)
        try:
            self._plan(node, budget, closable)
        finally:
            self._active.discard(key)

    def _plan(self, node: dict[str, Any], budget: int, closable: bool) -> None:
        if "$ref" in node:  # the keywords beside a $ref are left as they are (ignored before 2019-09)
            only_ref = not node.keys() & _ASSERTING - {"$ref"}
            self.visit(self._doc.resolve(node["$ref"]), budget, closable=closable and only_ref)
            return
        if "const" in node or "enum" in node:
            return
        branch_closable = closable and not node.keys() & _KEEP_BRANCHES_OPEN
        for branch in _list(node, "anyOf"):
            self.visit(branch, budget, closable=branch_closable)
        for keyword, sub in _children(node):
            if keyword in ("allOf", "then", "else", "dependentSchemas", "dependencies", "contains"):
                self.visit(sub, budget, closable=False)
        visit, kinds = self.visits[id(node)][1], _own_kinds(node)
        if "object" in kinds:
            self._plan_object(node, budget, visit)
        if "array" in kinds:
            self._plan_array(node, budget, visit)

    def _plan_object(self, node: dict[str, Any], budget: int, visit: _Visit) -> None:
        additional = node.get("additionalProperties", True)
        if visit.closable and _is_any(additional) and isinstance(node.get("properties", {}), dict):
            names = self._mentioned(node)
            if names is None:
                visit.closable = False
            elif undeclared := names - _map(node, "properties").keys():
                properties = node.setdefault("properties", {})
                properties.update((name, {}) for name in sorted(undeclared))
            if visit.closable and _would_be_empty(node):
                # Closed, it would hold only `{}`: it keeps room for a few scalar properties instead.
                node.setdefault("patternProperties", {})[OPEN_KEY_PATTERN] = {"type": list(OPEN_VALUE_TYPES)}
        else:
            visit.closable = False
        properties = _map(node, "properties")
        for name, sub in properties.items():
            if sub is True:
                properties[name] = {}
        map_values = list(_map(node, "patternProperties").values())
        if not _is_any(additional) and additional is not False:
            map_values.append(additional)
        extra = self._items if map_values else 0
        shares = _shares(
            budget,
            [len(name) + 3 for name in properties] + [MAP_KEY_CHARS + 3] * extra,
            [self._sizer.size(sub) for sub in properties.values()] + [None] * extra,
        )
        for sub, share in zip(properties.values(), shares, strict=False):
            self.visit(sub, share, closable=True)
        for sub in map_values:
            self.visit(sub, min(shares[len(properties) :]), closable=True)
        required = set(_list(node, "required"))
        if map_values and properties.keys() <= required:  # llguidance's condition for maxProperties
            visit.max_properties = _clamp(
                len(properties) + extra, _int(node.get("minProperties")), _int(node.get("maxProperties"))
            )
        if node is self._doc.root:
            visit.min_properties = _root_min_properties(node, visit, bool(map_values), required)

    def _plan_array(self, node: dict[str, Any], budget: int, visit: _Visit) -> None:
        prefix, rest = _positions(node)
        if prefix:
            count = len(prefix)
        elif rest is False:
            return
        elif _is_any(node):  # a value left free gets no nesting: a scalar, a short string, {} or []
            count = 0
        else:
            item = self._sizer.size(rest)
            fitting = max(budget - 1, 0) // ((item if item is not None else MIN_ITEM_CHARS) + 1)
            count = min(self._items, max(fitting, self._min_items))
        count = visit.max_items = _clamp(count, _int(node.get("minItems")), _int(node.get("maxItems")))
        if count > len(prefix) and rest is True:
            rest = node[_rest_keyword(node)] = {}  # the same as no keyword, but a node to cap
        positions = (prefix + [rest] * count)[:count]
        shares = _shares(budget, [0] * count, [self._sizer.size(sub) for sub in positions])
        for sub, share in zip(prefix, shares, strict=False):
            self.visit(sub, share, closable=True)
        if count > len(prefix):
            self.visit(rest, min(shares[len(prefix) :]), closable=True)

    def _mentioned(self, node: dict[str, Any]) -> set[str] | None:
        """The property names `node` and its applicators mention; None when a reference cannot be followed."""
        names: set[str] = set()
        seen: set[int] = set()
        stack: list[Any] = [node]
        while stack:
            current = stack.pop()
            if not isinstance(current, dict) or id(current) in seen:
                continue
            seen.add(id(current))
            names.update(_map(current, "properties"))
            names.update(name for name in _list(current, "required") if isinstance(name, str))
            for keyword in ("dependencies", "dependentRequired"):
                for name, needs in _map(current, keyword).items():
                    names.add(name)
                    if isinstance(needs, list):
                        names.update(n for n in needs if isinstance(n, str))
            for target in self._doc.references(current):
                if target is None:
                    return None
                stack.append(target)
            stack.extend(sub for keyword, sub in _children(current) if keyword in _MENTIONING)
        return names


def _apply(node: dict[str, Any], visit: _Visit) -> None:
    """The second pass, for one subschema: write the caps its least budget allows."""
    if "$ref" in node or "const" in node or "enum" in node:
        return
    kinds = _own_kinds(node)
    if "string" in kinds and (cap := _string_cap(node, visit.budget)) is not None:
        node["maxLength"] = cap
    if "array" in kinds and visit.max_items is not None:
        node["maxItems"] = visit.max_items
    if "object" in kinds:
        if visit.closable:
            node["additionalProperties"] = False
        if visit.max_properties is not None:
            node["maxProperties"] = visit.max_properties
        if visit.min_properties is not None and visit.closable:
            node["minProperties"] = visit.min_properties


def _would_be_empty(node: dict[str, Any]) -> bool:
    """Whether closing `node` would leave it no content: it declares no property, has no map, and may not
    be a scalar either (`{"type": "object"}`, OpenAI's `json_object`)."""
    return (
        not _map(node, "properties")
        and not _map(node, "patternProperties")
        and not _types(node) & _SCALARS
        and _int(node.get("maxProperties")) != 0
    )


def _root_min_properties(
    node: dict[str, Any], visit: _Visit, has_map: bool, required: set[str]
) -> int | None:
    """`minProperties: 1` for the document's root object where it has none of its own and llguidance can
    hold it to it, so that the bounded attempt cannot answer `{}`: a map without declared properties, or
    a closed object whose properties are all optional."""
    if not visit.closable or "minProperties" in node or "maxProperties" in node and not has_map:
        return None
    properties = _map(node, "properties")
    if has_map:
        return 1 if not properties and (visit.max_properties or 0) >= 1 else None
    return 1 if properties and not required & properties.keys() else None


def _string_cap(node: dict[str, Any], budget: int) -> int | None:
    """The maxLength to write; None when the string's own is as tight, or its pattern is unreadable."""
    floor = max(MIN_STRING_CHARS, _int(node.get("minLength")) or 0)
    if "format" in node:
        floor = max(floor, FORMAT_MIN_CHARS)
    if "pattern" in node:
        shortest = _shortest_match(node["pattern"])
        if shortest is None:
            return None
        floor = max(floor, shortest)
    cap = max(budget - 2, floor)
    limit = _int(node.get("maxLength"))
    return None if limit is not None and limit <= cap else cap


def _shortest_match(pattern: Any) -> int | None:
    """The length of the shortest string `pattern` can match (Python's regex parser reads the pattern)."""
    try:
        width: tuple[int, int] = importlib.import_module("re._parser").parse(pattern).getwidth()
    except Exception:
        return None
    return width[0]


def _shares(budget: int, overheads: list[int], sizes: list[int | None]) -> list[int]:
    """Split what `budget` leaves after brackets, commas and `overheads` among entries of `sizes`.

    An entry whose size is known and fits the equal share takes just that; the others share what is left.
    """
    left = budget - 2 - max(len(sizes) - 1, 0) - sum(overheads)
    shares = [0] * len(sizes)
    open_ = list(range(len(sizes)))
    while open_:
        share = max(left, 0) // len(open_)
        fixed = {i for i in open_ if (size := sizes[i]) is not None and size <= share}
        if not fixed:
            break
        for i in fixed:
            shares[i] = sizes[i] or 0
            left -= shares[i]
        open_ = [i for i in open_ if i not in fixed]
    for i in open_:
        shares[i] = max(left, 0) // len(open_)
    return shares


def _clamp(value: int, low: int | None, high: int | None) -> int:
    """`value`, raised to `low` (a minimum is kept even past the budget), then lowered to `high`."""
    value = max(value, low or 0)
    return value if high is None else min(value, high)
