"""Why a job request is refused, in the domain's terms: each refusal is a type (what kind of problem) with
an `ErrorCode` (which problem) and a message naming it. The API turns each type into an HTTP status, in one
place (`api/errors.py`)."""

from __future__ import annotations

from irq.error_codes import ErrorCode


class SubmissionError(Exception):
    """A job request the service will not queue. `param` names the field at fault, where one is."""

    def __init__(self, code: ErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def within(self, where: str) -> SubmissionError:
        """The same refusal, its message saying where in a larger request it is (`job 3: …`)."""
        located = type(self).__new__(type(self))
        located.__dict__.update(self.__dict__, message=f"{where}: {self.message}")
        located.args = (located.message,)
        return located


class MalformedRequest(SubmissionError):
    """Not a request irq can read: not JSON or not UTF-8, or an OpenAI request asking for what irq does not
    do (streaming in a batch, several choices, stop sequences …)."""


class InvalidRequest(SubmissionError):
    """A request read, whose values break a rule: a field out of range, a model not served, a schema the
    compiler refuses, a prompt longer than the model's context."""


class RequestTooLarge(SubmissionError):
    """A prompt, a schema or a batch over the service's size limit."""


class ChecksUnavailable(SubmissionError):
    """No schema-check process could take the request in time; the same request may pass after
    `retry_after_s`."""

    def __init__(self, code: ErrorCode, message: str, retry_after_s: float | None) -> None:
        super().__init__(code, message)
        self.retry_after_s = retry_after_s


class IdempotencyKeyReused(SubmissionError):
    """An idempotency key this owner already used came with a different request (as payment APIs do, the
    key names one request: a different one under it is refused, not answered with the first's result)."""

    def __init__(self) -> None:
        message = "this Idempotency-Key was already used with a different request"
        super().__init__(ErrorCode.idempotency_key_reused, message)
