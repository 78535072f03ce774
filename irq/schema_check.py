"""Submit-time checks of a job's JSON Schema: valid JSON Schema, compiled by llguidance in bounded time."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jsonschema
from jsonschema.exceptions import SchemaError
from llguidance import LLMatcher

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions


class SchemaProblem(ValueError):
    """A schema the service will not queue; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


_compiler = ThreadPoolExecutor(max_workers=4, thread_name_prefix="schema-check")

# Compact JSON: flexible whitespace lets a model spend tokens on indentation and stray newlines.
GRAMMAR_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}


def llguidance_grammar(schema: dict[str, Any]) -> str:
    """The llguidance grammar for `schema`; `ValueError` with the reason when llguidance cannot enforce it."""
    try:
        grammar = LLMatcher.grammar_from_json_schema(schema, overrides=GRAMMAR_OPTIONS)
    except Exception as exc:  # llguidance raises for some malformed inputs instead of returning a reason
        raise ValueError(str(exc) or type(exc).__name__) from exc
    reason = LLMatcher.validate_grammar(grammar)
    if reason:
        raise ValueError(reason)
    return grammar


@lru_cache(maxsize=1024)
def _problem(canonical_schema: str) -> tuple[str, str] | None:
    """(code, message) of what is wrong with a schema as JSON Schema, then for llguidance; None if nothing.

    Cached by the schema's canonical JSON: a batch of jobs sharing one schema checks it once.
    """
    schema = json.loads(canonical_schema)
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(
            schema
        )
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        return "invalid_schema", f"not a valid JSON Schema at {where}: {exc.message}"
    try:
        llguidance_grammar(schema)
    except ValueError as exc:
        return "schema_unsupported", f"llguidance cannot compile this schema: {exc}"
    return None


def nesting_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_schema(schema: Any, *, max_bytes: int, max_depth: int, timeout_s: float) -> None:
    """Raise `SchemaProblem` unless `schema` is a JSON Schema that llguidance accepts."""
    if not isinstance(schema, dict):
        raise SchemaProblem("invalid_schema", "schema must be a JSON object")
    depth = nesting_depth(schema)
    if depth > max_depth:
        raise SchemaProblem("schema_too_deep", f"schema nests {depth} levels deep; the limit is {max_depth}")
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    size = len(canonical.encode())
    if size > max_bytes:
        raise SchemaProblem("schema_too_large", f"schema is {size} bytes; the limit is {max_bytes}")
    # Both checks run on a small pool so that the request waits at most `timeout_s` for them.
    future = _compiler.submit(_problem, canonical)
    try:
        problem = future.result(timeout=timeout_s)
    except FutureTimeout:
        raise SchemaProblem(
            "schema_too_complex", f"the schema could not be checked and compiled within {timeout_s:g} s"
        ) from None
    if problem is not None:
        raise SchemaProblem(*problem)
