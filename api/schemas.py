"""HTTP bodies of the jobs API (a job request is the domain's `JobRequest`, `irq/submission/rules.py`), and
the one conversion from a stored job to its public view."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from irq.clock import ms_between
from irq.store.models import Job


class JobError(BaseModel):
    code: str
    message: str | None


class Usage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None


class Timings(BaseModel):
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    earlier_attempts_ms: float | None = Field(
        description="Created → the last enqueue: a retried job's earlier attempts and the waits between "
        "them (for a job run once, only the store write and the enqueue). With queue_wait_ms, "
        "engine_wait_ms and generation_ms it makes up total_ms."
    )
    queue_wait_ms: float | None = Field(description="Last enqueue → a worker started the job.")
    engine_wait_ms: float | None = Field(
        description="Accepted by the inference service → the engine's first step on the job (waiting "
        "for a free slot in its batch); time to first token and generation time count from there."
    )
    ttft_ms: float | None
    generation_ms: float | None
    total_ms: float | None = Field(description="Created → finished.")
    tokens_per_s: float | None


class JobView(BaseModel):
    id: str
    status: str
    prompt: str
    schema_hash: str
    model: str
    backend: str | None
    max_tokens: int
    temperature: float
    top_p: float
    priority: int
    timeout: float
    attempts: int
    max_attempts: int
    retry_truncated: bool
    bounded: bool = Field(
        description="The latest attempt generated under the schema bounded to the token budget, after an "
        "attempt was cut at max_tokens."
    )
    batch_id: str | None
    idempotency_key: str | None
    result: Any | None
    output_text: str | None = Field(
        description="A failed job's generated text when it produced no document (cut at max_tokens, or not "
        "JSON), at most 16 000 characters."
    )
    finish_reason: str | None
    validation_error: str | None
    error: JobError | None
    usage: Usage
    timings: Timings
    worker: str | None = Field(description="The worker process that ran it (host and pid): admin keys only.")
    endpoint: str | None = Field(description="The registry name of the inference endpoint that ran it.")

    @classmethod
    def of(cls, job: Job, admin: bool = False) -> JobView:
        """The job as its owner sees it; an admin key also sees which worker process ran it."""
        return cls(
            id=job.id,
            status=job.status,
            prompt=job.prompt,
            schema_hash=job.schema_hash,
            model=job.model,
            backend=job.backend,
            max_tokens=job.max_tokens,
            temperature=job.temperature,
            top_p=job.top_p,
            priority=job.priority,
            timeout=job.timeout_s,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            retry_truncated=job.retry_truncated,
            bounded=job.bounded,
            batch_id=job.batch_id,
            idempotency_key=job.idempotency_key,
            result=job.result,
            output_text=job.output_text,
            finish_reason=job.finish_reason,
            validation_error=job.validation_error,
            error=JobError(code=job.error_code, message=job.error_message) if job.error_code else None,
            usage=Usage(prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens),
            timings=Timings(
                created_at=job.created_at,
                enqueued_at=job.enqueued_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                earlier_attempts_ms=ms_between(job.enqueued_at, job.created_at),
                queue_wait_ms=job.queue_wait_ms,
                engine_wait_ms=job.engine_wait_ms,
                ttft_ms=job.ttft_ms,
                generation_ms=job.generation_ms,
                total_ms=job.total_ms,
                tokens_per_s=job.tokens_per_s,
            ),
            worker=job.worker if admin else None,
            endpoint=job.endpoint,
        )


class JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )
