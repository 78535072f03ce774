"""Hollow documents: a bounded schema never empties a document's capacity, and an empty shell is no success.

The property: whenever the original schema's shortest document with content (a number, a boolean or a
non-empty string somewhere) fits the token budget, the bounded schema still admits a document with content,
and that document is one of the original's. Checked over the real-world schemas of tests/data, over
generated schemas, and at several budgets.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from irq.bounding import admits_substance, bounded_schema, char_budget, has_substance, is_hollow
from irq.ir_schema import ir_json_schema
from tests.test_bounding import (
    BENCH_FILES,
    FORMAT_SAMPLES,
    Generator,
    Unsupported,
    compact,
    llguidance_reason,
    shortest_match,
    validator,
)

DATA = Path(__file__).resolve().parent / "data"
BUDGETS = (12, 48, 512)  # max_tokens
KINDS = ("string", "integer", "number", "boolean", "null", "array", "object")


class Shortest:
    """A shortest instance of a schema, for the keywords real-world schemas use; with `content`, one that
    holds a number, a boolean or a non-empty string. Not every answer is valid (overlapping `oneOf`
    branches, merged `allOf`s): the caller keeps those the schema accepts."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.merger = Generator(root, random.Random(0), largest=False)
        # By the id of a subschema, which the entry keeps alive so that no other takes its id.
        self.memo: dict[tuple[int, bool], tuple[Any, Any]] = {}
        self.steps = 0

    def value(self, schema: Any, content: bool, depth: int = 0) -> Any:
        key = (id(schema), content)
        if key not in self.memo:
            try:
                self.memo[key] = (schema, self._value(schema, content, depth))
            except Unsupported as exc:
                self.memo[key] = (schema, exc)
        result = self.memo[key][1]
        if isinstance(result, Unsupported):
            raise result
        return result

    def _value(self, schema: Any, content: bool, depth: int) -> Any:
        self.steps += 1
        if depth > 12 or self.steps > 5000:
            raise Unsupported("too deep")
        if schema is True:
            schema = {}
        if not isinstance(schema, dict):
            raise Unsupported("false schema")
        if "$ref" in schema:
            return self.value(self.merger.resolve(schema["$ref"]), content, depth + 1)
        if "const" in schema:
            return self.fitting(schema["const"], content)
        if isinstance(schema.get("enum"), list):
            values = [v for v in schema["enum"] if has_substance(v) or not content]
            return min((self.fitting(v, content) for v in values), key=_size, default=None) or _raise()
        rest = {k: v for k, v in schema.items() if k not in ("allOf", "anyOf", "oneOf")}
        if isinstance(schema.get("allOf"), list):
            return self.value(self.merger.merge(rest, schema["allOf"]), content, depth + 1)
        for keyword in ("anyOf", "oneOf"):
            if isinstance(schema.get(keyword), list):
                merged = [self.merger.merge(rest, [branch]) for branch in schema[keyword]]
                return self.shortest(lambda b=b: self.value(b, content, depth + 1) for b in merged)
        return self.shortest(lambda k=k: getattr(self, k)(schema, content, depth) for k in _kinds(schema))

    def shortest(self, makers: Any) -> Any:
        found = []
        for make in makers:
            try:
                found.append(make())
            except Unsupported:
                continue
        if not found:
            raise Unsupported("no branch")
        return min(found, key=_size)

    @staticmethod
    def fitting(value: Any, content: bool) -> Any:
        if content and not has_substance(value):
            raise Unsupported("no content")
        return value

    def string(self, schema: dict[str, Any], content: bool, depth: int) -> Any:
        if "format" in schema and schema["format"] in FORMAT_SAMPLES:
            return FORMAT_SAMPLES[schema["format"]]
        if "pattern" in schema:
            text = shortest_match(schema["pattern"])
            return self.fitting(text, content)
        return "a" * max(int(content), schema.get("minLength", 0))

    def integer(self, schema: dict[str, Any], content: bool, depth: int) -> Any:
        low, high = self.merger.range(schema)
        value = 0 if low <= 0 <= high else math.ceil(low)
        step = schema.get("multipleOf", 1)
        return value if value % step == 0 else math.ceil(value / step) * step

    def number(self, schema: dict[str, Any], content: bool, depth: int) -> Any:
        return self.integer(schema, content, depth)

    def boolean(self, schema: dict[str, Any], content: bool, depth: int) -> bool:
        return False

    def null(self, schema: dict[str, Any], content: bool, depth: int) -> Any:
        return self.fitting(None, content)

    def array(self, schema: dict[str, Any], content: bool, depth: int) -> list[Any]:
        listed = isinstance(schema.get("items"), list)
        prefix = schema.get("prefixItems", schema["items"] if listed else [])
        rest = schema.get("additionalItems", True) if listed else schema.get("items", True)
        count = max(schema.get("minItems", 0), int(content))
        if count > schema.get("maxItems", count):
            raise Unsupported("no room")
        items = [prefix[i] if i < len(prefix) else rest for i in range(count)]
        return [self.value(item, content and i == 0, depth + 1) for i, item in enumerate(items)]

    def object(self, schema: dict[str, Any], content: bool, depth: int) -> Any:
        properties = schema.get("properties", {})
        required = [n for n in schema.get("required", []) if isinstance(n, str)]
        base = {name: self.value(properties.get(name, True), False, depth + 1) for name in required}
        if not content or has_substance(base):
            return self.filled(schema, base, depth)
        extra = dict(properties)
        patterns = schema.get("patternProperties", {})
        extra.update((shortest_match(p) or "a", sub) for p, sub in patterns.items())
        if schema.get("additionalProperties", True) is not False:
            extra.setdefault("zz", schema.get("additionalProperties", True))
        return self.shortest(
            lambda n=n, s=s: self.filled(schema, {**base, n: self.value(s, True, depth + 1)}, depth)
            for n, s in extra.items()
        )

    def filled(self, schema: dict[str, Any], document: dict[str, Any], depth: int) -> dict[str, Any]:
        if len(document) < schema.get("minProperties", 0):
            for name, sub in schema.get("properties", {}).items():
                if len(document) >= schema["minProperties"]:
                    break
                document.setdefault(name, self.value(sub, False, depth + 1))
        if len(document) > schema.get("maxProperties", len(document)):
            raise Unsupported("no room")
        return document


def _kinds(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type")
    kinds = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
    if kinds:
        return [k for k in kinds if k in KINDS]
    if "properties" in schema or "additionalProperties" in schema or "patternProperties" in schema:
        return ["object"]
    return ["array"] if "items" in schema else [k for k in KINDS if k != "number"]


def _size(value: Any) -> int:
    return len(compact(value))


def _raise() -> Any:
    raise Unsupported("no enum value")


def shortest_with_content(schema: dict[str, Any]) -> Any | None:
    """A shortest document with content that `schema` accepts (jsonschema's judgement); None if none found."""
    try:
        document = Shortest(schema).value(schema, True)
    except (Unsupported, RecursionError, KeyError, IndexError, TypeError, ValueError):
        return None
    return document if has_substance(document) and validator(schema).is_valid(document) else None


def generated_schemas(count: int) -> list[dict[str, Any]]:
    """Random nests of open and closed objects, arrays, strings, numbers and references."""
    rng = random.Random(32)

    def node(depth: int) -> dict[str, Any]:
        choice = rng.randrange(9 if depth < 3 else 4)
        if choice == 0:
            return {"type": "string", **({"minLength": rng.randint(0, 3)} if rng.random() < 0.3 else {})}
        if choice == 1:
            return {"type": rng.choice(["integer", "number", "boolean"])}
        if choice == 2:
            return {"type": "object"}  # open, nothing declared: OpenAI's json_object
        if choice == 3:
            return {"type": ["object", "null"]}
        if choice in (4, 5):
            names = rng.sample(["a", "name", "items", "x_y", "id", "meta"], rng.randint(0, 3))
            schema: dict[str, Any] = {"type": "object", "properties": {n: node(depth + 1) for n in names}}
            if names and rng.random() < 0.5:
                schema["required"] = names[: rng.randint(1, len(names))]
            if rng.random() < 0.3:
                schema["additionalProperties"] = rng.choice([True, {}, {"type": "string"}])
            return schema
        if choice == 6:
            return {"type": "array", "items": node(depth + 1)}
        if choice == 7:
            return {"anyOf": [node(depth + 1), node(depth + 1)]}
        return {"type": "object", "properties": {"inner": {"$ref": "#/$defs/open"}}, "required": ["inner"]}

    schemas = []
    for _ in range(count):
        schema = node(0)
        schema["$defs"] = {"open": {"type": "object"}}
        schemas.append(schema)
    return schemas


def corpus() -> list[tuple[str, dict[str, Any]]]:
    named = [(path.name, json.loads(path.read_text())) for path in BENCH_FILES]
    more = sorted((DATA / "jsonschemabench").glob("*.json"))
    named += [(f"jsonschemabench/{path.name}", json.loads(path.read_text())) for path in more]
    named += [("ir", ir_json_schema()), ("json_object", {"type": "object"})]
    named += [(f"generated-{i}", schema) for i, schema in enumerate(generated_schemas(150))]
    return named


@pytest.mark.parametrize("max_tokens", BUDGETS)
def test_bounded_schema_keeps_room_for_content_whenever_the_original_fits(max_tokens: int) -> None:
    budget = char_budget(max_tokens)
    checked = []
    for name, original in corpus():
        shortest = shortest_with_content(original)
        if shortest is None or _size(shortest) > budget:
            continue
        bounded = bounded_schema(original, max_tokens)
        document = shortest_with_content(bounded)
        assert document is not None, f"{name}: bounded to {max_tokens} tokens, only empty shells: {bounded}"
        assert validator(original).is_valid(document), f"{name}: {compact(document)} is not the original's"
        assert admits_substance(bounded) and not is_hollow(document, bounded)
        checked.append(name)
    assert len(checked) >= 100, f"only {len(checked)} schemas had a shortest document within the budget"


@pytest.mark.parametrize("max_tokens", (12, 512))
def test_open_object_keeps_room_for_a_few_scalar_properties(max_tokens: int) -> None:
    bounded = bounded_schema({"type": "object"}, max_tokens)
    assert llguidance_reason(bounded) == ""
    assert validator(bounded).is_valid({"name": "Ada"})
    assert not validator(bounded).is_valid({}), "the bounded attempt must not be able to answer {}"
    too_many = {f"k{i}": 1 for i in range(bounded["maxProperties"] + 1)}
    assert not validator(bounded).is_valid(too_many)
    assert not validator(bounded).is_valid({"k" * 40: 1}), "keys are bounded too"
    assert not validator(bounded).is_valid({"a": {"nested": "x" * 1000}}), "values are scalars"


def test_root_of_optional_properties_refuses_the_empty_object() -> None:
    original = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    bounded = bounded_schema(original, 64)
    assert llguidance_reason(bounded) == ""
    assert not validator(bounded).is_valid({}) and validator(bounded).is_valid({"b": 3})


@pytest.mark.parametrize(
    ("document", "schema", "hollow"),
    [
        ({}, {"type": "object"}, True),
        ([], {"type": "array", "items": {"type": "string"}}, True),
        ({"a": {}, "b": [], "c": "", "d": None}, {"type": "object"}, True),
        ({"a": 0}, {"type": "object"}, False),
        ({"flag": False}, {"type": "object"}, False),
        ({}, {"type": "object", "additionalProperties": False}, False),  # nothing more to say
        ([], {"type": "array", "maxItems": 0}, False),
        ({}, {"type": "object", "properties": {"a": {"$ref": "#/x"}}, "additionalProperties": False}, False),
        ({"effects": []}, ir_json_schema(), True),
    ],
)
def test_hollow_is_an_empty_shell_where_the_schema_allows_content(
    document: Any, schema: dict[str, Any], hollow: bool
) -> None:
    assert is_hollow(document, schema) is hollow
