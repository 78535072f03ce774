"""How llguidance compiles a job's schema: on the local engine, on vLLM's guidance backend and at submit.

llguidance reads its JSON-compile options from the schema's top-level `"x-guidance"` object, between the
caller's `defaults` and `overrides` (`LLMatcher.grammar_from_json_schema`). vLLM's guidance backend passes
only `defaults` (its whitespace setting), so options written into the schema reach every llguidance-based
engine unchanged: `engine_schema` is the one place that writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llguidance import LLMatcher

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

    from irq.settings import Settings

X_GUIDANCE = "x-guidance"

# Compact JSON: flexible whitespace lets a model spend tokens on indentation and stray newlines. Defaults,
# not overrides, so that a schema's own `x-guidance` wins here as it does in vLLM.
GRAMMAR_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False}


@dataclass(frozen=True)
class GuidanceOptions:
    """The llguidance options a deployment sets for every schema; a schema's own `x-guidance` keys win.

    `lenient`: unknown `format` values are generated as plain strings, keywords llguidance cannot enforce
    (`not`, `uniqueItems`, `minProperties` over optional properties, …) are left to the worker's
    re-validation, and `oneOf` is generated as `anyOf` (llguidance's `coerce_one_of`).
    """

    lenient: bool = True

    @classmethod
    def of(cls, settings: Settings) -> GuidanceOptions:
        """The deployment's options (`IRQ_SCHEMA_LENIENT`), the same for the API's check and the worker."""
        return cls(lenient=settings.schema_lenient)

    def x_guidance(self) -> dict[str, Any]:
        return {**GRAMMAR_OPTIONS, "lenient": self.lenient}


def engine_schema(schema: dict[str, Any], options: GuidanceOptions) -> dict[str, Any]:
    """`schema` as engines compile it: the user's schema, with the deployment's options in `x-guidance`.

    Keys the user put in `x-guidance` are kept as given: it is their schema. An `x-guidance` that is not
    an object means nothing to llguidance (it ignores it), so the deployment's options replace it.
    """
    given = schema.get(X_GUIDANCE)
    own = given if isinstance(given, dict) else {}
    return {**schema, X_GUIDANCE: {**options.x_guidance(), **own}}


def llguidance_grammar(schema: dict[str, Any] | str) -> str:
    """The llguidance grammar for `schema` (a dict or its JSON); `ValueError` with the reason when llguidance
    cannot enforce it."""
    # As JSON text: llguidance refuses a dict holding an integer beyond 64 bits before reading the schema.
    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        grammar = LLMatcher.grammar_from_json_schema(text, defaults=GRAMMAR_OPTIONS)
    except Exception as exc:  # llguidance raises for some malformed inputs instead of returning a reason
        raise ValueError(str(exc) or type(exc).__name__) from exc
    reason = LLMatcher.validate_grammar(grammar)
    if reason:
        raise ValueError(reason)
    return grammar
