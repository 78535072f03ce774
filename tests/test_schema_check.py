"""Submit-time schema checks with the real llguidance: compile time is bounded, depth and size are limited."""

from __future__ import annotations

import time

import pytest

from irq.schema_check import SchemaProblem, check_schema

# 2000 required properties, each with a pattern: about half a second of checking on this machine.
SLOW_SCHEMA = {
    "type": "object",
    "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{1,50}(x|y)+$"} for i in range(2000)},
    "required": [f"p{i}" for i in range(2000)],
}
LIMITS = {"max_bytes": 1_000_000, "max_depth": 64}


def test_a_schema_that_takes_too_long_to_check_is_refused_at_the_time_limit() -> None:
    slow = SLOW_SCHEMA | {"title": "not seen before"}  # the check caches results by schema
    started = time.monotonic()
    with pytest.raises(SchemaProblem) as problem:
        check_schema(slow, timeout_s=0.02, **LIMITS)
    refused_after = time.monotonic() - started
    assert problem.value.code == "schema_too_complex"

    slow = SLOW_SCHEMA | {"title": "not seen before either"}
    started = time.monotonic()
    check_schema(slow, timeout_s=60, **LIMITS)  # with room to compile, the same schema passes
    assert refused_after < (time.monotonic() - started) / 2


@pytest.mark.parametrize(
    ("schema", "code"),
    [
        ({"type": "string", "pattern": "^(?=a)a$"}, "schema_unsupported"),  # look-ahead
        ({"type": "integer", "minimum": -(10**30)}, "schema_unsupported"),
        ([{"type": "string"}], "invalid_schema"),
    ],
    ids=["look-ahead", "huge-integer-bound", "not-an-object"],
)
def test_schemas_llguidance_refuses_are_named(schema: object, code: str) -> None:
    with pytest.raises(SchemaProblem) as problem:
        check_schema(schema, timeout_s=5, **LIMITS)
    assert problem.value.code == code
