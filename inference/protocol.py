"""Request and response bodies of the inference protocol spoken by every irq inference endpoint."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerateRequest(BaseModel):
    prompt: str = Field(min_length=1)
    schema_: dict[str, Any] = Field(alias="schema")
    max_tokens: int = Field(default=2048, ge=1)
    temperature: float = Field(default=0.3, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)

    model_config = ConfigDict(populate_by_name=True)


def request_body(
    prompt: str, schema: dict[str, Any], max_tokens: int, temperature: float, top_p: float
) -> dict[str, Any]:
    """The JSON body of a `/generate` call."""
    return GenerateRequest(
        prompt=prompt, schema=schema, max_tokens=max_tokens, temperature=temperature, top_p=top_p
    ).model_dump(by_alias=True)


class GenerateResponse(BaseModel):
    """`text` is the parsed JSON document (older deployments called it `ir_json`)."""

    text: Any
    tokens_used: int
    generation_time_ms: float
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    model: str = ""
    backend: str = ""


class HealthResponse(BaseModel):
    status: str  # "ok" once the model is loaded, "cold" before
    model: str
    gpu: str
    backend: str


class ErrorBody(BaseModel):
    """What the service answers with a 4xx/5xx: a machine-readable code and a message."""

    code: str
    message: str
