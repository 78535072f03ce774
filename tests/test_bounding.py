"""Bounded schemas: every document they accept is one the original accepts, and it fits the token budget."""

from __future__ import annotations

import copy
import importlib
import json
import random
import re
import string
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard

import jsonschema
import pytest
from llguidance import LLMatcher

from irq.bounding import NUMBER_CHARS, bounded_schema, char_budget, worst_case_chars
from irq.ir_schema import ir_json_schema

ROOT = Path(__file__).resolve().parents[1]
# The 100 real-world schemas of the shared JSONSchemaBench sample (tests/data/README.md).
BENCH = ROOT / "tests" / "data" / "jsonschemabench-100"
BENCH_FILES = sorted(BENCH.glob("*.json"))
MAX_TOKENS = 512
SAMPLES = 12  # per schema: the largest document the caps allow, then random ones


def validator(schema: Any) -> jsonschema.protocols.Validator:
    """As the worker checks a document: the schema's own draft, formats not asserted."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def llguidance_reason(schema: Any) -> str:
    """Why llguidance refuses `schema` ("" when it accepts it), compiled as the engines compile it."""
    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, overrides={"whitespace_flexible": False})
    except Exception as exc:
        return str(exc) or type(exc).__name__
    return LLMatcher.validate_grammar(grammar)


def compact(document: Any) -> str:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


class Unsupported(Exception):
    """The generator does not know how to build an instance of this subschema."""


FORMAT_SAMPLES = {
    "date-time": "2024-05-01T12:30:00Z",
    "date": "2024-05-01",
    "time": "12:30:00Z",
    "email": "ada@example.com",
    "uri": "https://example.com/a",
    "uri-reference": "/a/b",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
}


class Generator:
    """Instances of a schema for the keywords real-world schemas use, built to stress the caps: strings at
    their `maxLength`, arrays at their `maxItems`, every declared property (the largest), or random sizes.
    Not every output is valid (allOf merging, uniqueItems, ...): callers keep the ones the schema accepts."""

    def __init__(self, root: dict[str, Any], rng: random.Random, *, largest: bool) -> None:
        self.root = root
        self.rng = rng
        self.largest = largest

    def value(self, schema: Any, depth: int = 0) -> Any:
        if depth > 24:
            raise Unsupported("too deep")
        if schema is True:
            return "x"
        if not isinstance(schema, dict):
            raise Unsupported("false schema")
        if "$ref" in schema:
            return self.value(self.resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return copy.deepcopy(self.rng.choice(schema["enum"]))
        for keyword in ("allOf", "anyOf", "oneOf"):
            if isinstance(schema.get(keyword), list) and schema[keyword]:
                branches = schema[keyword] if keyword == "allOf" else [self.rng.choice(schema[keyword])]
                rest = {k: v for k, v in schema.items() if k != keyword}
                return self.value(self.merge(rest, branches), depth + 1)
        kind = self.kind(schema)
        return getattr(self, kind)(schema, depth)

    def resolve(self, ref: str) -> Any:
        node: Any = self.root
        for part in ref.removeprefix("#").split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def merge(self, base: dict[str, Any], branches: list[Any]) -> dict[str, Any]:
        merged = dict(base)
        for branch in branches:
            while isinstance(branch, dict) and "$ref" in branch:
                branch = self.resolve(branch["$ref"])
            if not isinstance(branch, dict):
                raise Unsupported("boolean branch")
            for key, value in branch.items():
                if key == "properties" and isinstance(merged.get(key), dict):
                    merged[key] = {**value, **merged[key]}
                elif key == "required" and isinstance(merged.get(key), list):
                    merged[key] = sorted(set(merged[key]) | set(value))
                else:
                    merged.setdefault(key, value)
        return merged

    def kind(self, schema: dict[str, Any]) -> str:
        declared = schema.get("type")
        kinds = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
        if not kinds:
            if "properties" in schema or "additionalProperties" in schema:
                return "object"
            return "array" if "items" in schema else "string"
        preferred = [k for k in ("object", "array", "string") if k in kinds]
        return preferred[0] if self.largest and preferred else self.rng.choice(kinds)

    def string(self, schema: dict[str, Any], depth: int) -> str:
        if "format" in schema:
            if schema["format"] not in FORMAT_SAMPLES:
                raise Unsupported(f"format {schema['format']}")
            return FORMAT_SAMPLES[schema["format"]]
        if "pattern" in schema:
            return shortest_match(schema["pattern"])
        low, high = schema.get("minLength", 0), schema.get("maxLength", 20)
        size = high if self.largest else self.rng.randint(low, max(low, high))
        return "".join(self.rng.choice(string.ascii_letters + " ") for _ in range(size))

    def integer(self, schema: dict[str, Any], depth: int) -> int:
        low, high = self.range(schema)
        step = schema.get("multipleOf", 1)
        value = self.rng.randint(int(low), int(high))
        return int(value // step * step) if isinstance(step, int) else value

    def number(self, schema: dict[str, Any], depth: int) -> float | int:
        if "multipleOf" in schema:
            return self.integer(schema, depth)
        low, high = self.range(schema)
        return round(self.rng.uniform(low, high), 3)

    def range(self, schema: dict[str, Any]) -> tuple[float, float]:
        lows = [float(v) for v in (schema.get("minimum"), schema.get("exclusiveMinimum")) if _num(v)]
        highs = [float(v) for v in (schema.get("maximum"), schema.get("exclusiveMaximum")) if _num(v)]
        low, high = max(lows, default=-1000.0) + 1, min(highs, default=1000.0) - 1
        return low, max(low, high)

    def boolean(self, schema: dict[str, Any], depth: int) -> bool:
        return self.rng.random() < 0.5

    def null(self, schema: dict[str, Any], depth: int) -> None:
        return None

    def array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems", schema["items"] if isinstance(schema.get("items"), list) else [])
        rest = (
            schema.get("additionalItems", True)
            if isinstance(schema.get("items"), list)
            else schema.get("items", True)
        )
        low, high = schema.get("minItems", 0), schema.get("maxItems", 3)
        size = high if self.largest else self.rng.randint(low, max(low, high))
        return [self.value(prefix[i] if i < len(prefix) else rest, depth + 1) for i in range(size)]

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        names = [n for n in properties if self.largest or n in required or self.rng.random() < 0.5]
        names += [n for n in sorted(required) if n not in properties]
        limit = schema.get("maxProperties", len(names) + 3)
        document = {}
        for name in names[:limit]:
            document[name] = self.value(properties.get(name, True), depth + 1)
        extra = schema.get("additionalProperties", True)
        if isinstance(extra, dict) and extra:
            for i in range(min(limit - len(document), 3)):
                document[f"key{i}"] = self.value(extra, depth + 1)
        return document


def _num(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shortest_match(pattern: str) -> str:
    """A shortest string that `pattern` matches, built from Python's parse of it."""
    parser = importlib.import_module("re._parser")
    constants = importlib.import_module("re._constants")

    def build(items: Any) -> str:
        out = []
        for op, arg in items:
            if op is constants.LITERAL:
                out.append(chr(arg))
            elif op in (constants.ANY, constants.NOT_LITERAL):
                out.append("a" if arg != ord("a") else "b")
            elif op is constants.IN:
                out.append(char_in(arg))
            elif op in (constants.MAX_REPEAT, constants.MIN_REPEAT):
                out.append(build(arg[2]) * arg[0])
            elif op is constants.SUBPATTERN:
                out.append(build(arg[3]))
            elif op is constants.BRANCH:
                out.append(min((build(b) for b in arg[1]), key=len))
            elif op is not constants.AT:
                raise Unsupported(f"regex {op}")
        return "".join(out)

    def char_in(items: Any) -> str:
        for candidate in "a0A_-. z9":
            if re.fullmatch(f"[{_set_source(items)}]", candidate):
                return candidate
        raise Unsupported("character class")

    def _set_source(items: Any) -> str:
        parts: list[str] = []
        for op, arg in items:
            if op is constants.NEGATE:
                parts.insert(0, "^")
            elif op is constants.LITERAL:
                parts.append(re.escape(chr(arg)))
            elif op is constants.RANGE:
                parts.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
            elif op is constants.CATEGORY:
                parts.append({"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
                              "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w",
                              "CATEGORY_NOT_WORD": r"\W"}[str(arg)])  # fmt: skip
        return "".join(parts)

    text = build(parser.parse(pattern))
    if not re.search(pattern, text):
        raise Unsupported("regex")
    return text


@lru_cache
def bench_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((BENCH / name).read_text())
    return schema


@lru_cache
def checked_samples(name: str) -> int:
    """Generate instances of the bounded schema, check each against the original; how many were checked."""
    original = bench_schema(name)
    bounded = bounded_schema(original, MAX_TOKENS)
    worst = worst_case_chars(bounded)
    checked = 0
    for seed in range(SAMPLES):
        try:
            document = Generator(bounded, random.Random(seed), largest=seed == 0).value(bounded)
        except Unsupported:
            continue
        if not validator(bounded).is_valid(document):
            continue  # the generator missed a constraint: not a sample of the bounded schema
        errors = [e.message for e in validator(original).iter_errors(document)]
        assert not errors, (
            f"{name}: bounded accepts {compact(document)[:300]} but the original says {errors[:2]}"
        )
        assert worst is None or len(compact(document)) <= worst
        checked += 1
    return checked


def valid_bench_files() -> list[str]:
    names = []
    for path in BENCH_FILES:
        schema = json.loads(path.read_text())
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError:
            continue
        names.append(path.name)
    return names


@pytest.mark.parametrize("name", valid_bench_files())
def test_bounded_bench_schema_is_valid_compiles_and_narrows(name: str) -> None:
    original = bench_schema(name)
    before = compact(original)
    bounded = bounded_schema(original, MAX_TOKENS)
    assert compact(original) == before, "the original must not be mutated"
    jsonschema.validators.validator_for(original).check_schema(bounded)
    if not llguidance_reason(original):
        assert llguidance_reason(bounded) == ""
    checked_samples(name)


def test_most_bench_schemas_get_checked_samples_and_a_bound() -> None:
    names = valid_bench_files()
    assert len(names) >= 90, f"{len(names)} valid schemas in {BENCH}"
    sampled = [name for name in names if checked_samples(name) > 0]
    bounded = [
        n for n in names if worst_case_chars(bounded_schema(bench_schema(n), MAX_TOKENS), number_chars=12)
    ]
    assert len(sampled) >= 0.8 * len(names), f"instances checked for only {len(sampled)} of {len(names)}"
    assert len(bounded) >= 0.8 * len(names), f"bounded worst case for only {len(bounded)} of {len(names)}"


def test_function_call_schemas_fit_the_budget() -> None:
    for path in BENCH_FILES:
        if path.name.startswith("Glaiveai2K"):
            worst = worst_case_chars(
                bounded_schema(bench_schema(path.name), MAX_TOKENS), number_chars=NUMBER_CHARS
            )
            assert worst is not None and worst <= char_budget(MAX_TOKENS), path.name


def accepts(schema: dict[str, Any], document: Any) -> bool:
    return bool(validator(schema).is_valid(document))


def test_free_object_is_closed_and_its_strings_capped() -> None:
    original = {"type": "object", "properties": {"name": {"type": "string"}}}
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["additionalProperties"] is False
    assert bounded["properties"]["name"]["maxLength"] <= char_budget(MAX_TOKENS)
    assert accepts(bounded, {"name": "Ada"}) and accepts(original, {"name": "Ada"})
    invented = {"name": "Ada", "age": 36, "city": "London"}
    assert accepts(original, invented) and not accepts(bounded, invented)
    long = {"name": "a" * 5000}
    assert accepts(original, long) and not accepts(bounded, long)


def test_nested_arrays_of_strings_fit_the_budget() -> None:
    original = {"type": "array", "items": {"type": "array", "items": {"type": "string"}}}
    bounded = bounded_schema(original, MAX_TOKENS)
    inner = bounded["items"]
    assert bounded["maxItems"] >= 1 and inner["maxItems"] >= 1 and inner["items"]["maxLength"] >= 1
    largest = [["x" * inner["items"]["maxLength"]] * inner["maxItems"]] * bounded["maxItems"]
    assert accepts(bounded, largest) and accepts(original, largest)
    worst = worst_case_chars(bounded)
    assert worst is not None and len(compact(largest)) <= worst <= char_budget(MAX_TOKENS)
    assert not accepts(bounded, [["x"]] * (bounded["maxItems"] + 1))


def test_required_but_undeclared_property_stays_allowed() -> None:
    original = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "b"]}
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["additionalProperties"] is False and "b" in bounded["properties"]
    assert accepts(bounded, {"a": "x", "b": "y"}) and accepts(original, {"a": "x", "b": "y"})
    assert accepts(original, {"a": "x", "b": "y", "c": 1}) and not accepts(
        bounded, {"a": "x", "b": "y", "c": 1}
    )


def test_pattern_properties_become_a_bounded_map() -> None:
    original = {"type": "object", "patternProperties": {"^x_": {"type": "string"}}}
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["additionalProperties"] is False and bounded["maxProperties"] >= 1
    assert "maxLength" in bounded["patternProperties"]["^x_"]
    assert accepts(bounded, {"x_1": "a"}) and accepts(original, {"x_1": "a"})
    assert accepts(original, {"y": 1}) and not accepts(bounded, {"y": 1})
    many = {f"x_{i}": "a" for i in range(50)}
    assert accepts(original, many) and not accepts(bounded, many)
    assert llguidance_reason(bounded) == ""


def test_any_of_objects_closes_each_branch() -> None:
    original = {
        "anyOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ]
    }
    bounded = bounded_schema(original, MAX_TOKENS)
    assert all(branch["additionalProperties"] is False for branch in bounded["anyOf"])
    for document in ({"a": "x"}, {"b": 3}):
        assert accepts(bounded, document) and accepts(original, document)
    assert accepts(original, {"a": "x", "z": 1}) and not accepts(bounded, {"a": "x", "z": 1})
    assert llguidance_reason(bounded) == ""


def test_refs_bound_their_target_and_leave_the_ref() -> None:
    original = {
        "$defs": {"name": {"type": "string"}},
        "type": "object",
        "properties": {"first": {"$ref": "#/$defs/name"}, "last": {"$ref": "#/$defs/name"}},
        "required": ["first"],
    }
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["properties"]["first"] == {"$ref": "#/$defs/name"}
    assert 0 < bounded["$defs"]["name"]["maxLength"] <= char_budget(MAX_TOKENS)
    assert accepts(bounded, {"first": "Ada", "last": "Lovelace"})
    assert accepts(original, {"first": "a" * 5000}) and not accepts(bounded, {"first": "a" * 5000})
    assert worst_case_chars(bounded) is not None


def test_all_of_declares_what_its_branches_name_before_closing() -> None:
    original = {
        "definitions": {"base": {"properties": {"id": {"type": "string"}}, "required": ["id"]}},
        "allOf": [{"$ref": "#/definitions/base"}, {"properties": {"note": {"type": "string"}}}],
        "type": "object",
    }
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["additionalProperties"] is False and set(bounded["properties"]) == {"id", "note"}
    assert "additionalProperties" not in bounded["definitions"]["base"]  # a branch stays open
    assert accepts(bounded, {"id": "1", "note": "n"}) and accepts(original, {"id": "1", "note": "n"})
    assert accepts(original, {"id": "1", "x": 0}) and not accepts(bounded, {"id": "1", "x": 0})


def test_one_of_branches_are_left_as_they_are() -> None:
    # Closed, these branches would let {"a": 1} match just one: accepted, where the original refuses it.
    branches = [{"type": "object", "properties": {"a": {}}}, {"type": "object", "properties": {"b": {}}}]
    original = {"oneOf": copy.deepcopy(branches), "$defs": {"x": {"type": "string"}}}
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["oneOf"] == branches
    assert not accepts(original, {"a": 1}) and not accepts(bounded, {"a": 1})


def test_what_one_of_refers_to_is_left_as_it_is() -> None:
    original = {
        "$defs": {"open": {"type": "object"}},
        "type": "object",
        "properties": {"direct": {"$ref": "#/$defs/open"}, "either": {"oneOf": [{"$ref": "#/$defs/open"}]}},
    }
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["$defs"]["open"] == {"type": "object"}


def test_minimums_win_over_the_budget_and_existing_caps_are_never_raised() -> None:
    original = {
        "type": "object",
        "properties": {
            "essay": {"type": "string", "minLength": 5000},
            "tags": {"type": "array", "minItems": 8, "items": {"type": "string"}},
            "code": {"type": "string", "maxLength": 4},
            "id": {"type": "string", "pattern": "^[a-f0-9]{64}$"},
        },
    }
    bounded = bounded_schema(original, 64)
    properties = bounded["properties"]
    assert properties["essay"]["maxLength"] == 5000
    assert properties["tags"]["maxItems"] == 8
    assert properties["code"]["maxLength"] == 4
    assert properties["id"]["maxLength"] >= 64  # the pattern's shortest match
    assert accepts(bounded, {"essay": "e" * 5000, "tags": ["t"] * 8, "code": "abcd", "id": "a" * 64})


def test_numbers_are_left_alone() -> None:
    original = {
        "type": "object",
        "properties": {"n": {"type": "number"}, "i": {"type": "integer", "minimum": 0}},
    }
    bounded = bounded_schema(original, MAX_TOKENS)
    assert bounded["properties"] == original["properties"]
    assert worst_case_chars(bounded) is None
    assert worst_case_chars(bounded, number_chars=12) == len('{"n":,"i":}') + 24


def test_worst_case_chars_counts_compact_json() -> None:
    assert worst_case_chars({"type": "string", "maxLength": 5}) == 7
    assert worst_case_chars({"enum": ["ab", None, 12345]}) == 5
    assert worst_case_chars({"type": "integer", "minimum": -50, "maximum": 100}) == 5
    assert worst_case_chars({"type": "string"}) is None
    assert worst_case_chars({"type": "object", "properties": {"a": {"type": "boolean"}}}) is None
    closed = {"type": "object", "properties": {"a": {"type": "boolean"}}, "additionalProperties": False}
    assert worst_case_chars(closed) == len(compact({"a": False}))
    array = {"type": "array", "items": {"type": "boolean"}, "maxItems": 3}
    assert worst_case_chars(array) == len(compact([False, False, False]))
    assert worst_case_chars({"type": "array", "maxItems": 2, "items": {"$ref": "#"}}) is None  # recursive


def test_default_ir_schema_is_fully_bounded() -> None:
    schema = ir_json_schema()
    worst = worst_case_chars(schema)
    assert worst is not None
    print(f"IR schema worst case: {worst} characters")
    bounded = bounded_schema(schema, MAX_TOKENS)
    bounded_worst = worst_case_chars(bounded)
    assert bounded_worst is not None and bounded_worst <= min(worst, char_budget(MAX_TOKENS))
    assert llguidance_reason(bounded) == ""
