"""The faults of an inference call, typed for the worker's retry policy, whichever client made the call."""

from __future__ import annotations


class InferenceError(Exception):
    """An inference call that did not produce a document; `code` is stored on the job."""

    retryable = False

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RetryableInferenceError(InferenceError):
    """Worth another attempt: connection errors, timeouts, 5xx, 429, cold starts."""

    retryable = True


class PermanentInferenceError(InferenceError):
    """Another attempt would fail the same way: the endpoint refused this request (4xx)."""


def fault_for_status(status: int, code: str | None, message: str) -> InferenceError:
    """The fault for an endpoint's error status: 429 and 5xx are worth a retry, any other 4xx is not."""
    code = code or f"inference_http_{status}"
    message = f"HTTP {status}: {message}"
    if status == 429 or status >= 500:
        return RetryableInferenceError(code, message)
    return PermanentInferenceError(code, message)
