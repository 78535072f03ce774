"""Helpers of the unit tests: a job request, an inference outcome and the faults the worker meets, each
with the defaults a test changes one field of; and what the unit layer's guard raises."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from inference.errors import PartialOutput, PermanentInferenceError, RetryableInferenceError
from irq.clock import utcnow
from irq.jobs import Outcome
from irq.store.models import Job, JobStatus
from irq.submission import NewJob
from irq.testing import BACKEND, MODEL


class ProcessStarted(BaseException):
    """A unit test reached for a process or the network (`tests/unit/conftest.py`). A BaseException, so
    that code which catches and logs `Exception` (the worker's upkeep, the notifier) cannot hide it."""


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "params": {"type": "array", "items": {"type": "string"}}},
    "required": ["name", "params"],
}


def new_job(**over: Any) -> NewJob:
    fields: dict[str, Any] = dict(
        prompt="a function that returns the largest item of a list",
        schema=SCHEMA,
        model=MODEL,
        backend=BACKEND,
        max_tokens=256,
        temperature=0.3,
        top_p=0.95,
        priority=5,
        timeout_s=600.0,
        max_attempts=3,
    )
    return NewJob(**{**fields, **over})


def outcome(**over: Any) -> Outcome:
    fields: dict[str, Any] = dict(
        result={"name": "largest", "params": ["items"]},
        finish_reason="stop",
        prompt_tokens=40,
        completion_tokens=20,
        ttft_ms=15.0,
        generation_ms=400.0,
        backend="guidance",
        endpoint="default",
    )
    return Outcome(**{**fields, **over})


def busy() -> RetryableInferenceError:
    return RetryableInferenceError("inference_http_503", "HTTP 503: the engine is busy")


def refused() -> PermanentInferenceError:
    return PermanentInferenceError("inference_http_400", "HTTP 400: the schema is not supported")


def truncated(text: str = '{"name": "largest", "params": ["it') -> PermanentInferenceError:
    output = PartialOutput(text=text, finish_reason="length", prompt_tokens=40, completion_tokens=256)
    return PermanentInferenceError("output_truncated", "max_tokens cut the document short", output)


def running_job(**over: Any) -> Job:
    """A job in its `attempts`-th attempt, as the retry policy is given it (never stored)."""
    now = utcnow()
    fields: dict[str, Any] = dict(
        id="0190a000-0000-7000-8000-000000000001",
        status=JobStatus.running,
        schema_=SCHEMA,
        max_tokens=256,
        timeout_s=600.0,
        attempts=1,
        max_attempts=3,
        retry_truncated=True,
        bounded=False,
        first_started_at=now - timedelta(seconds=5),
        started_at=now - timedelta(seconds=5),
    )
    return Job(**{**fields, **over})
