"""The faults of an inference call, typed for the worker's retry policy, whichever client made the call."""

from __future__ import annotations

import re

from pydantic import BaseModel

from irq.error_codes import ErrorCode

MAX_OUTPUT_CHARS = 16_000  # of a failed generation's text, kept for inspection

# Failures an engine reports in words, whatever status carries them: each happens again on another attempt.
_MESSAGE_CODES = (
    # llguidance refusing a token its own mask allowed (vLLM: "LLMatcher error: Parser Error: token …
    # doesn't satisfy the grammar; forced bytes: …", "grammar rejected tokens").
    (
        re.compile(r"LLMatcher error|doesn't satisfy the grammar|grammar rejected tokens"),
        ErrorCode.grammar_error,
    ),
    # vLLM's words for a prompt past max_model_len ("maximum context length is 4096 tokens … your prompt
    # contains 4433 input tokens", "The decoder prompt (length 4433) is longer than the maximum model
    # length").
    (
        re.compile(r"maximum context length|longer than the maximum model length", re.IGNORECASE),
        ErrorCode.prompt_too_long,
    ),
)


class PartialOutput(BaseModel):
    """What a generation that produced no document left behind: its text (the first `MAX_OUTPUT_CHARS`),
    why it stopped, and its tokens."""

    text: str
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class InferenceError(Exception):
    """An inference call that did not produce a document; `code` is stored on the job, and so is `output`
    when the engine generated something."""

    retryable = False

    def __init__(self, code: str, message: str, output: PartialOutput | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.output = output


class RetryableInferenceError(InferenceError):
    """Worth another attempt: connection errors, timeouts, 5xx, 429, cold starts."""

    retryable = True


class EndpointDown(RetryableInferenceError):
    """The request never reached the endpoint: nothing listens at its address, or no connection could be
    made in time."""


class PermanentInferenceError(InferenceError):
    """Another attempt would fail the same way: the endpoint refused this request (4xx)."""


def code_for_message(message: str) -> str | None:
    """The code of a permanent engine failure its message names (`grammar_error`, `prompt_too_long`)."""
    for pattern, code in _MESSAGE_CODES:
        if pattern.search(message):
            return code
    return None


def fault_for_status(
    status: int, code: str | None, message: str, output: PartialOutput | None = None
) -> InferenceError:
    """The fault for an endpoint's error status: 429 and 5xx are worth a retry, any other 4xx is not, and
    neither is a failure whose message says it would happen again (`code_for_message`)."""
    named = code_for_message(message)
    code = named or code or f"inference_http_{status}"
    message = f"HTTP {status}: {message}"
    if named is not None:
        return PermanentInferenceError(code, message, output)
    if status == 429 or status >= 500:
        return RetryableInferenceError(code, message, output)
    return PermanentInferenceError(code, message, output)


def fault_from_body(status: int, body: object) -> InferenceError:
    """The fault for an error answer's decoded body: the service's `{code, message, output?}`, FastAPI's
    `{"detail": …}`, or anything else (its text)."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if not isinstance(detail, dict):
        return fault_for_status(status, None, str(detail)[:500])
    code = detail.get("code")
    try:
        output = PartialOutput.model_validate(detail["output"]) if detail.get("output") else None
    except ValueError:
        output = None
    return fault_for_status(
        status, str(code) if code else None, str(detail.get("message", detail))[:2000], output
    )
