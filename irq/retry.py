"""The retry policy: given a job and the fault that ended its attempt, one decision (run it again after a
delay, or fail it with a code). The lifecycle applies the decision; nothing else decides."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from irq.bounding import needs_bounds
from irq.error_codes import ErrorCode
from irq.settings import Settings
from irq.store.models import Job


class Generated(Protocol):
    """What a generation that produced no document left behind."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


class Fault(Protocol):
    """Why an attempt did not produce a result: a machine-readable code, whether another attempt may
    succeed, and what the engine generated if anything (`str()` of it is the message). Inference errors
    and the sweeper's `WorkerLost` are faults."""

    retryable: bool

    @property
    def code(self) -> str: ...

    @property
    def output(self) -> Generated | None: ...


class WorkerLost(Exception):
    """The worker running the job stopped renewing its lease (it died or lost the store)."""

    code = ErrorCode.worker_lost
    retryable = True
    output = None


class InternalFault(Exception):
    """An unexpected exception on the worker's path; another attempt may not meet it."""

    code = ErrorCode.internal_error
    retryable = True
    output = None


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay_s: float  # before the next attempt (0 when failing)
    code: str  # the error code the job records
    message: str
    bounded: bool = False  # the next attempt generates under the schema bounded to the token budget


@dataclass(frozen=True)
class RetryPolicy:
    """Retryable faults retry with exponential backoff and full jitter until the job's attempts or its
    deadline run out; permanent ones fail at once, but for a document cut at `max_tokens` or a hollow one:
    that job runs once more, at once, under its schema bounded to the token budget (which keeps room for
    content and, at the root, refuses `{}`), when the job allows it and the bounds change anything."""

    backoff_s: float
    backoff_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(backoff_s=settings.retry_backoff_s, backoff_max_s=settings.retry_backoff_max_s)

    def delay_s(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))

    def decide(self, job: Job, fault: Fault, now: datetime) -> RetryDecision:
        message = str(fault)[:4000]
        bound = fault.code in (ErrorCode.output_truncated, ErrorCode.hollow_output) and _bounds_help(job)
        if not (fault.retryable or bound):
            return RetryDecision(False, 0.0, fault.code, message)
        past_deadline = job.deadline_at is not None and now >= job.deadline_at
        if past_deadline or job.attempts >= job.max_attempts:
            given_up = f"gave up after {job.attempts} attempt(s): {message}"[:4000]
            return RetryDecision(False, 0.0, ErrorCode.timeout if past_deadline else fault.code, given_up)
        if bound:
            return RetryDecision(True, 0.0, fault.code, message, bounded=True)
        return RetryDecision(True, self.delay_s(job.attempts), fault.code, message)


def _bounds_help(job: Job) -> bool:
    """Whether a truncated job may run again bounded: it allows it, has not yet, and the bounds differ."""
    return job.retry_truncated and not job.bounded and needs_bounds(job.document_schema, job.max_tokens)
