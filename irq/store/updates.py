"""What a transition writes on a job (`JobUpdate`): typed values the lifecycle (`irq/jobs.py`) builds and
the store (`irq/store/jobs.py`) turns into the values of its one conditional UPDATE."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, Final

from irq.clock import utcnow
from irq.error_codes import ErrorCode
from irq.store.models import JobStatus


class Unset(Enum):
    """A field a transition leaves as it is (where None is a value: it clears the column)."""

    unset = "unset"


UNSET: Final = Unset.unset


@dataclass(frozen=True)
class JobUpdate:
    """The columns one transition sets; every field left `UNSET` keeps the job's value."""

    status: JobStatus | Unset = UNSET
    attempts: int | Unset = UNSET
    bounded: bool | Unset = UNSET
    worker: str | None | Unset = UNSET
    endpoint: str | None | Unset = UNSET
    backend: str | None | Unset = UNSET
    enqueued_at: datetime | None | Unset = UNSET
    started_at: datetime | None | Unset = UNSET
    first_started_at: datetime | None | Unset = UNSET
    lease_expires_at: datetime | None | Unset = UNSET
    finished_at: datetime | None | Unset = UNSET
    result: Any = UNSET
    validation_error: str | None | Unset = UNSET
    output_text: str | None | Unset = UNSET
    finish_reason: str | None | Unset = UNSET
    error_code: ErrorCode | str | None | Unset = UNSET  # an endpoint's own code may stand for a fault
    error_message: str | None | Unset = UNSET
    prompt_tokens: int | None | Unset = UNSET
    completion_tokens: int | None | Unset = UNSET
    queue_wait_ms: float | None | Unset = UNSET
    engine_wait_ms: float | None | Unset = UNSET
    ttft_ms: float | None | Unset = UNSET
    generation_ms: float | None | Unset = UNSET
    total_ms: float | None | Unset = UNSET
    tokens_per_s: float | None | Unset = UNSET

    @classmethod
    def ended(cls, status: JobStatus, code: ErrorCode, message: str) -> JobUpdate:
        """A queued job (or a running one, cancelled) ended now, by `code`."""
        return cls(status=status, finished_at=utcnow(), error_code=code, error_message=message)

    def columns(self) -> dict[str, Any]:
        """The values set, by column name (each field is named as its column)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {name: value for name, value in values.items() if value is not UNSET}
