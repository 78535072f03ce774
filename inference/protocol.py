"""Request and response bodies of the inference protocol spoken by every irq inference endpoint."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inference.errors import PartialOutput, RetryableInferenceError
from irq.error_codes import ErrorCode
from irq.sampling import TEMPERATURE_MAX, TEMPERATURE_MIN, TOP_P_MAX, TOP_P_MIN
from irq.settings import get_settings


class GenerateRequest(BaseModel):
    """One generation: a prompt, the JSON Schema its document must match, and the sampling parameters.

    Left out, `max_tokens`, `temperature` and `top_p` take the configured defaults; `max_tokens` is held to
    `Settings.max_max_tokens`.
    """

    prompt: str = Field(min_length=1)
    schema_: dict[str, Any] = Field(alias="schema")
    max_tokens: int = Field(default_factory=lambda: get_settings().default_max_tokens, ge=1)
    temperature: float = Field(
        default_factory=lambda: get_settings().default_temperature, ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX
    )
    top_p: float = Field(default_factory=lambda: get_settings().default_top_p, gt=TOP_P_MIN, le=TOP_P_MAX)
    stop_loops: bool = Field(
        default=True,
        description="Stop a generation caught in a loop at once, finish reason `repetition` "
        "(inference/repetition.py). False where the schema bounds the document to the budget: it closes "
        "within it whatever the tokens, and a loop stopped there would leave no document.",
    )

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("max_tokens")
    @classmethod
    def _at_most_the_configured_maximum(cls, max_tokens: int) -> int:
        limit = get_settings().max_max_tokens
        if max_tokens > limit:
            raise ValueError(f"must be at most {limit}")
        return max_tokens


class GenerateResponse(BaseModel):
    """`text` is the parsed JSON document (older deployments called it `ir_json`)."""

    text: Any
    tokens_used: int
    generation_time_ms: float
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    # Accepted by the service → the engine's first step on it; ttft_ms and generation_time_ms start there.
    engine_wait_ms: float | None = None
    model: str = ""
    backend: str = ""


def decode_response(body: object) -> GenerateResponse:
    """A `/generate` answer's decoded JSON body as a response; `RetryableInferenceError` when unreadable."""
    if not isinstance(body, dict):
        raise RetryableInferenceError(
            ErrorCode.inference_bad_response, f"unreadable response: {type(body).__name__}"
        )
    body = dict(body)
    if "text" not in body and "ir_json" in body:
        body["text"] = body.pop("ir_json")  # the older deployments' key
    try:
        return GenerateResponse.model_validate(body)
    except ValidationError as exc:
        raise RetryableInferenceError(
            ErrorCode.inference_bad_response, f"unreadable response: {exc}"
        ) from exc


class HealthResponse(BaseModel):
    status: str  # "ok" once the model is loaded, "cold" before
    model: str
    gpu: str
    backend: str
    running: int = 0  # generations in progress
    max_model_len: int | None = None  # the model's context length in tokens, when known


class ErrorBody(BaseModel):
    """What the service answers with a 4xx/5xx: a machine-readable code and a message, and what the engine
    generated when it produced no document (`output_truncated`, `invalid_output`)."""

    code: str
    message: str
    output: PartialOutput | None = None
