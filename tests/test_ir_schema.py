"""The default IR schema's longest document fits in the default `max_tokens` with margin, counted with the
tokenizer the local engine generates with (SmolLM2-135M's, from the GGUF file it ships in)."""

from __future__ import annotations

import json
from typing import Any

from transformers import AutoTokenizer

from inference.engines.local import default_gguf_path
from irq.ir_schema import IRDocument, ir_json_schema
from irq.settings import Settings

MARGIN = 0.75  # the longest document may take at most this share of the default max_tokens

PROSE = "Return the largest value found in the given list of numbers, or raise an error when it is empty. "
CODE = "max_of([3.5, -1, 2, 8, 13, 21]) == 21 and max_of({'a': [0, 1]}) raises TypeError; "
NAME = "max_value_of_numbers_in_list_"


def longest(schema: dict[str, Any], defs: dict[str, Any], field: str = "") -> Any:
    """The schema's longest instance: every string at its maxLength (prose, or code for the fields that
    carry code or types), every array at its maxItems, every property present."""
    if "$ref" in schema:
        return longest(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, field)
    kind = schema.get("type")
    if kind == "object":
        return {name: longest(sub, defs, name) for name, sub in schema["properties"].items()}
    if kind == "array":
        return [longest(schema["items"], defs, field) for _ in range(schema["maxItems"])]
    assert kind == "string", schema
    text = NAME if "pattern" in schema else CODE if field in ("type", "input", "output") else PROSE
    return (text * (schema["maxLength"] // len(text) + 1))[: schema["maxLength"]]


def test_the_longest_ir_document_fits_in_the_default_max_tokens_with_margin() -> None:
    schema = ir_json_schema()
    document = longest(schema, schema["$defs"])
    IRDocument.model_validate(document)  # it is an instance, and the longest one
    gguf = default_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # With spaces after separators: more tokens than the compact JSON engines may write.
    tokens = len(tokenizer(json.dumps(document, separators=(", ", ": ")))["input_ids"])
    budget = Settings().default_max_tokens
    print(f"\nlongest IR document: {tokens} tokens of {budget}")
    assert tokens <= MARGIN * budget, f"{tokens} tokens; the default max_tokens is {budget}"
