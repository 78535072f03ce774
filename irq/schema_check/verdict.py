"""What is wrong with a schema, if anything: as JSON Schema, for the worker's validator, and for llguidance,
which must not only compile it but take the first steps of a generation from it.

A generation needs a tokenizer, and the engine's is not in the API process. llguidance's built-in byte
tokenizer (256 byte tokens and a few special ones) stands in for it: the grammar, the parser and its limits
do not depend on the tokenizer, it takes a few milliseconds to build, once, and it is the same whichever
model a deployment serves.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from llguidance import LLMatcher, LLParserLimits, LLTokenizer
from referencing import Registry
from referencing.exceptions import Unresolvable

from irq.error_codes import ErrorCode
from irq.schema_check.options import GRAMMAR_OPTIONS, X_GUIDANCE

Problem = tuple[str, str]  # (code, message)

MAX_MESSAGE_CHARS = 300
# Steps of the trial generation: a step consumes the bytes the grammar forces (`{"name":"`) or else one
# byte, so this reaches past the opening of the document, where a wide object overflows the parser.
WALK_STEPS = 8
# Instances the worker's validator is tried on: enough to enter any `$ref` loop at the schema's root.
TRIAL_INSTANCES: tuple[Any, ...] = (None, 0, "", [], {})

# Keywords whose compile cost grows faster than the schema's size, and numbers above which a bound
# (`minItems`, `maxLength`, …) unrolls into a large grammar: a schema with neither, under the size limit,
# compiles in about a millisecond and is checked in the caller's process.
COSTLY_KEYWORDS = frozenset(
    {
        "$ref", "$dynamicRef", "$recursiveRef", "allOf", "anyOf", "oneOf", "not", "if", "then", "else",
        "pattern", "patternProperties", "propertyNames", "format", "dependentSchemas", "dependencies",
        "contains", "unevaluatedProperties", "unevaluatedItems", X_GUIDANCE,
    }
)  # fmt: skip
QUICK_MAX_BYTES = 2048
QUICK_MAX_NUMBER = 100

_NO_RETRIEVAL: Registry[Any] = Registry()  # as the worker's validator: a remote `$ref` is never fetched
# Short errors: llguidance's verbose ones dump the parser state and parts of the grammar.
_LIMITS = LLParserLimits(verbose_errors=False)

# What llguidance's refusals mean for a user, by a phrase in them; REASON: the refusal's first clause.
HINTS = (
    ("NoExtension", "no JSON document can match it (e.g. a $ref that only refers to itself)"),
    (
        "Current row has",
        "REASON: at one point the document may continue in more ways than llguidance's parser allows "
        "(e.g. thousands of optional properties); make most of them required or group them in sub-objects",
    ),
    ("oneOf", 'REASON; add "x-guidance": {"coerce_one_of": true} to the schema to generate oneOf as anyOf'),
    (
        "Unknown format",
        'REASON; add "x-guidance": {"lenient": true} to the schema to generate unknown formats as strings',
    ),
    (
        "Unimplemented keys",
        'REASON; add "x-guidance": {"lenient": true} to the schema to leave these to the output check',
    ),
)


def capped(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, at most `limit` characters."""
    flat = " ".join(text.replace("<non-verbose/>", "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def is_quick(schema: Any, size: int) -> bool:
    """Whether `schema` is small and plain enough to check without a time limit (see COSTLY_KEYWORDS)."""
    if size > QUICK_MAX_BYTES:
        return False
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if COSTLY_KEYWORDS.intersection(node):
                return False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, int | float) and not isinstance(node, bool) and abs(node) > QUICK_MAX_NUMBER:
            return False
    return True


def problem(canonical: str, *, overlap: bool = False) -> Problem | None:
    """(code, message) of what is wrong with the schema whose JSON is `canonical`; None if nothing.

    With `overlap`, llguidance works in a second thread meanwhile (it releases the GIL), which about halves
    the time a large schema takes: jsonschema's meta-check is as slow as llguidance's compile.
    """
    schema = json.loads(canonical)
    if not overlap:
        return json_schema_problem(schema) or validator_problem(schema) or generation_problem(canonical)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llguidance") as side:
        generation = side.submit(generation_problem, canonical)
        return json_schema_problem(schema) or validator_problem(schema) or generation.result()


def json_schema_problem(schema: dict[str, Any]) -> Problem | None:
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(
            schema
        )
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "(root)"
        return ErrorCode.invalid_schema, capped(f"not a valid JSON Schema at {where}: {exc.message}")
    return None


def validator_problem(schema: dict[str, Any]) -> Problem | None:
    """Whether the worker's validator (jsonschema, as `worker/validation.py` builds it) can check a document
    against `schema` at all: a `$ref` loop that llguidance compiles around still sends it into recursion."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    validator = cls(schema, registry=_NO_RETRIEVAL)
    try:
        for instance in TRIAL_INSTANCES:
            jsonschema.exceptions.best_match(validator.iter_errors(instance))
    except RecursionError:
        message = "the schema's $ref references loop without end: no output can be checked"
        return ErrorCode.schema_unsupported, message
    except Unresolvable as exc:
        return ErrorCode.schema_unsupported, capped(f"the schema has a $ref that is not inside it: {exc}")
    return None


@cache
def byte_tokenizer() -> LLTokenizer:
    return LLTokenizer("byte")


def generation_problem(canonical: str) -> Problem | None:
    """Compile the schema as the engines do, then take the first steps of a generation with it."""
    try:
        grammar = LLMatcher.grammar_from_json_schema(canonical, defaults=GRAMMAR_OPTIONS)
    except ValueError as exc:
        return _unsupported(str(exc))
    matcher = LLMatcher(byte_tokenizer(), grammar, log_level=0, limits=_LIMITS)
    reason = first_steps(matcher)
    return _unsupported(reason) if reason else None


def first_steps(matcher: LLMatcher) -> str | None:
    """Walk the start of a document as an engine would (mask, then a token the mask allows); the error
    that stops the walk, if any. The matcher never raises for the grammar: it records an error instead."""
    tokenizer = byte_tokenizer()
    for _ in range(WALK_STEPS):
        mask = matcher.compute_bitmask()
        if matcher.is_error():
            return matcher.get_error() or "llguidance stopped with an error"
        if matcher.is_stopped():
            return None
        forced = matcher.compute_ff_tokens()
        allowed = forced or _first_allowed(mask, tokenizer.eos_token)
        if not allowed:  # only the end of the document is left
            return None
        if not matcher.consume_tokens(allowed):
            return matcher.get_error() or "llguidance refused a token it allowed"
    return None


def _first_allowed(mask: bytes, eos: int) -> list[int]:
    for index, byte in enumerate(mask):
        for bit in range(8):
            token = index * 8 + bit
            if byte >> bit & 1 and token != eos:
                return [token]
    return []


def _unsupported(reason: str) -> Problem:
    reason = capped(reason)
    hint = next((h for phrase, h in HINTS if phrase in reason), None)
    if hint is not None:
        reason = hint.replace("REASON", re.split(r"[.;] ", reason, maxsplit=1)[0])
    return ErrorCode.schema_unsupported, capped(f"llguidance cannot generate from this schema: {reason}")
