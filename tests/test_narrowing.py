"""A `oneOf` the lenient grammar read as `anyOf`: the schema narrowed to the one branch that excludes the
others accepts only documents the original accepts, and refuses the one that matched several branches."""

from __future__ import annotations

import copy
from typing import Any

from irq.bounding.narrowing import mentions_one_of, one_of_narrowed
from irq.schema_check import GuidanceOptions, engine_schema, llguidance_grammar
from tests.test_worker_faults import CARD_OR_BANK
from worker.validation import validation_error

BOTH = {"number": "4111", "iban": "DE89"}


def test_the_narrowed_schema_keeps_one_exclusive_branch_closed() -> None:
    original = copy.deepcopy(CARD_OR_BANK)
    narrowed = one_of_narrowed(CARD_OR_BANK, BOTH)
    assert narrowed is not None and CARD_OR_BANK == original, "the original is not touched"
    assert "oneOf" not in narrowed and narrowed["allOf"][0]["additionalProperties"] is False
    assert llguidance_grammar(engine_schema(narrowed, GuidanceOptions()))
    assert "valid under each of" in (validation_error(BOTH, CARD_OR_BANK) or "")
    assert validation_error(BOTH, narrowed) is not None
    for document in ({"number": "1"}, {"number": "1", "extra": 2}):
        if validation_error(document, narrowed) is None:
            assert validation_error(document, CARD_OR_BANK) is None


def test_nested_one_of_is_narrowed_where_the_document_broke_it() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"payment": {"oneOf": CARD_OR_BANK["oneOf"]}, "note": {"type": "string"}},
        "$defs": CARD_OR_BANK["$defs"],
    }
    narrowed = one_of_narrowed(schema, {"payment": BOTH, "note": "n"})
    assert narrowed is not None and "oneOf" not in narrowed["properties"]["payment"]
    assert validation_error({"payment": {"number": "1"}, "note": "n"}, narrowed) is None


def test_nothing_to_narrow_is_none() -> None:
    assert one_of_narrowed(CARD_OR_BANK, {"number": "1"}) is None  # valid: no oneOf broken
    overlapping = {
        "oneOf": [{"type": "object", "properties": {"a": {}}}, {"type": "object", "properties": {"b": {}}}]
    }
    assert one_of_narrowed(overlapping, {"a": 1}) is None  # no branch excludes the other
    assert mentions_one_of(CARD_OR_BANK) and not mentions_one_of({"anyOf": [{"type": "string"}]})
