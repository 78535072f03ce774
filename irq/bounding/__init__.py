"""Tighten a job's JSON Schema so that a document generated under it closes well before `max_tokens`.

`bounded_schema` only ever adds constraints to a copy of the schema, so every instance of the result is an
instance of the original: where the original allows any extra property, the names it mentions are
declared and `additionalProperties` becomes false, but for an object that would then hold nothing (no
property declared, no scalar allowed: `{"type": "object"}`, OpenAI's `json_object`), which keeps room for
a few properties instead (identifier keys of at most 16 characters, scalar values, capped as a map); the
root object gets `minProperties: 1` where llguidance can enforce it, so that the bounded attempt cannot
answer `{}` (`hollow.py`: a document without content is no success); every string gets a `maxLength`,
every array a `maxItems`, every map (`patternProperties`, a schema-valued `additionalProperties`) a
`maxProperties` where llguidance can enforce it (a map's keys stay unbounded in length: llguidance has no
`propertyNames`). Numbers are left alone. Subschemas whose narrowing could *accept* a document the
original refuses — under `oneOf`, `not`, `if`, `unevaluated*` or a `contains` with `maxContains`, and
whatever they `$ref` — are left as they are, and so are keywords llguidance does not support.

Budget rule. A token is taken as 1 character of compact JSON, and a quarter of `max_tokens` is held back
as margin: the document gets `max_tokens * 3 // 4` characters. SmolLM2's tokenizer gives 2.9-3.0
characters per token on the longest IR document (`tests/test_ir_schema.py`'s, compact and spaced), but
a bounded schema serves a retry after a document did not fit, and those are not ordinary: on the H200
(docs/gpu-results/NOTEBOOK.md) the documents SmolLM2-135M had been cut in held 0.6-1.1 characters per
token (runs of digits, escapes, one-character tokens).
The budget is split top-down. An object pays for its braces, keys, colons and commas and shares
the rest among its values: a value of known small size (a boolean, an enum, an already short string; a
number counts as 12) takes what it needs, the others share equally. An array allows at most 5 items
(fewer when each would get under 16 characters) that share its budget; a map allows 5 entries beyond its
declared properties; a value the schema leaves free may only be a scalar, a short string, `{}` or `[]`.
`anyOf`/`allOf` branches each get their node's whole budget. A string gets its budget minus the
quotes, but never under 16 characters (40 with a `format`, a `pattern`'s shortest match), never under its
`minLength` and never over its own `maxLength`; an array never gets under its `minItems`. While the
result's worst case (`worst_case_chars`, a number counted as 12) is over the budget, the allowance of 5
items and entries is lowered to 4, 3, 2, 1. Wide or deep schemas can still exceed the budget. A result
that could only hold an empty shell where the original can hold content (its arrays cut to no item) is
planned again with one item at least in every array: room for content comes before the budget.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from irq.bounding.hollow import admits_substance, has_substance, is_hollow
from irq.bounding.rewrite import _bounded
from irq.bounding.rules import (
    ARRAY_ITEMS,
    CHARS_PER_TOKEN,
    FLOAT_CHARS,
    FORMAT_MIN_CHARS,
    MAP_KEY_CHARS,
    MIN_ITEM_CHARS,
    MIN_STRING_CHARS,
    NUMBER_CHARS,
)
from irq.bounding.schema import _Document
from irq.bounding.sizing import _Sizer

__all__ = [
    "ARRAY_ITEMS",
    "CHARS_PER_TOKEN",
    "FLOAT_CHARS",
    "FORMAT_MIN_CHARS",
    "MAP_KEY_CHARS",
    "MIN_ITEM_CHARS",
    "MIN_STRING_CHARS",
    "NUMBER_CHARS",
    "admits_substance",
    "bounded_schema",
    "cached_bounded_schema",
    "char_budget",
    "has_substance",
    "is_hollow",
    "needs_bounds",
    "worst_case_chars",
]


def char_budget(max_tokens: int) -> int:
    """The characters a document may take: CHARS_PER_TOKEN a token, a quarter of max_tokens kept back."""
    return max(max_tokens, 0) * CHARS_PER_TOKEN * 3 // 4


def worst_case_chars(schema: Any, *, number_chars: int | None = None) -> int | None:
    """An upper bound on the length of the compact JSON of any instance of `schema`; None when unbounded.

    A string character counts as one (an escape such as `\\n` is counted as the character it stands for).
    A number without both a minimum and a maximum is unbounded, unless `number_chars` says what it counts.
    """
    return _Sizer(_Document(schema), number_chars).size(schema)


def bounded_schema(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A copy of `schema`, narrowed so that a document generated under it fits in `max_tokens` tokens,
    and never to empty shells only where the original admits content (`hollow.py`).

    Arrays and maps first get up to 5 items; while the worst case is over the budget, 4, then 3, 2, 1.
    """
    bounded = _fitted(schema, char_budget(max_tokens), min_items=0)
    if not admits_substance(bounded) and admits_substance(schema):
        bounded = _fitted(schema, char_budget(max_tokens), min_items=1)
    return bounded


def _fitted(schema: dict[str, Any], budget: int, min_items: int) -> dict[str, Any]:
    """The loosest bounding whose worst case fits `budget`, else the tightest one."""
    tightest: tuple[int, dict[str, Any]] | None = None
    for items in range(ARRAY_ITEMS, 0, -1):
        bounded = _bounded(schema, budget, items, min_items)
        size = worst_case_chars(bounded, number_chars=NUMBER_CHARS)
        if size is None:
            return bounded  # unbounded whatever the item count (a map's keys, a recursion)
        if size <= budget:
            return bounded
        if tightest is None or size < tightest[0]:
            tightest = (size, bounded)
    assert tightest is not None
    return tightest[1]


def needs_bounds(schema: dict[str, Any], max_tokens: int) -> bool:
    """Whether `schema` admits documents that `max_tokens` would cut: its bounded schema differs."""
    return cached_bounded_schema(schema, max_tokens) != schema


def cached_bounded_schema(schema: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """`bounded_schema`, remembered for the schemas last asked for (a burst repeats few of them; every submit
    and every attempt asks). The result is shared: read it, never change it."""
    return _bounded_of_json(json.dumps(schema, sort_keys=True), max_tokens)


@lru_cache(maxsize=512)
def _bounded_of_json(schema_json: str, max_tokens: int) -> dict[str, Any]:
    return bounded_schema(json.loads(schema_json), max_tokens)
