"""Submission, the domain's side of a submit: what it hands the lifecycle (`irq/jobs.py`), a validated job
request (`NewJob`), the row it becomes, and the fingerprint that tells a repeat of a request from a
different one under the same idempotency key. Its modules: `rules` turns a job request into a `NewJob`,
`chat` reads an OpenAI chat-completions body as a job request, `lines` reads a batch (irq's lines and
OpenAI Batch API lines alike), and `errors` names every refusal."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from irq.clock import new_id
from irq.store.models import JobStatus
from irq.submission.errors import IdempotencyKeyReused

T = TypeVar("T")


def request_hash(news: Sequence[NewJob]) -> str:
    """A fingerprint of what a submit asked for (one job, or a batch's jobs in order)."""
    fields = [{k: v for k, v in dataclasses.asdict(new).items() if k != "idempotency_key"} for new in news]
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def same_request(existing: T, stored_hash: str | None, asked: str) -> T:
    """`existing` when it was made by the same request (or before fingerprints were kept)."""
    if stored_hash is not None and stored_hash != asked:
        raise IdempotencyKeyReused()
    return existing


def schema_hash(schema: dict[str, Any]) -> str:
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class NewJob:
    """A validated job request, as the API hands it to the lifecycle."""

    prompt: str
    schema: dict[str, Any]
    model: str
    backend: str
    max_tokens: int
    temperature: float
    top_p: float
    priority: int
    timeout_s: float
    max_attempts: int
    idempotency_key: str | None = None
    custom_id: str | None = None
    retry_truncated: bool = True


def job_row(
    owner_id: int, new: NewJob, now: datetime, batch_id: str | None = None, index: int | None = None
) -> dict[str, Any]:
    """A queued job's values, by `Job` attribute."""
    return dict(
        id=new_id(),
        owner_id=owner_id,
        batch_id=batch_id,
        batch_index=index,
        custom_id=new.custom_id,
        idempotency_key=new.idempotency_key,
        prompt=new.prompt,
        schema_=new.schema,
        schema_hash=schema_hash(new.schema),
        model=new.model,
        backend=new.backend,
        max_tokens=new.max_tokens,
        temperature=new.temperature,
        top_p=new.top_p,
        priority=new.priority,
        timeout_s=new.timeout_s,
        status=JobStatus.queued,
        attempts=0,
        max_attempts=new.max_attempts,
        retry_truncated=new.retry_truncated,
        bounded=False,
        created_at=now,
        enqueued_at=now,
    )
