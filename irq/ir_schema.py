"""The IR document: what a function description becomes when a job names no schema of its own.

The pydantic model below is exported as JSON Schema and used as the default job schema. Lengths and
item counts are bounded so that constrained decoding always closes the document well before
`max_tokens`: the longest document is about 1200 tokens, 59% of the default 2048
(`tests/test_ir_schema.py` counts it with the local engine's tokenizer). Only JSON Schema features
llguidance supports are used.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Text = Annotated[str, Field(min_length=1, max_length=120)]
TypeName = Annotated[str, Field(min_length=1, max_length=40)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Intent(_Strict):
    summary: Text = Field(description="What the function does, in one sentence.")


class Parameter(_Strict):
    name: Name
    type: TypeName = Field(description="The parameter's type, e.g. int, list[str], dict[str, float].")
    description: Text


class Returns(_Strict):
    type: TypeName
    description: Text


class Signature(_Strict):
    name: Name = Field(description="The function's name in snake_case.")
    parameters: list[Parameter] = Field(max_length=5)
    returns: Returns


class Example(_Strict):
    input: Text = Field(description="A call of the function, e.g. max_of([3, 1, 2]).")
    output: Text = Field(description="What that call returns.")


class IRDocument(_Strict):
    """An intermediate representation of one function, generated from its natural-language description."""

    intent: Intent
    signature: Signature
    effects: list[Text] = Field(max_length=3, description="Side effects; empty for a pure function.")
    preconditions: list[Text] = Field(max_length=3, description="What must hold before a call.")
    postconditions: list[Text] = Field(max_length=3, description="What holds after a call.")
    examples: list[Example] = Field(max_length=2)


@lru_cache
def ir_json_schema() -> dict[str, Any]:
    """The default job schema (a fresh copy is not needed: callers must not mutate it)."""
    return IRDocument.model_json_schema()
