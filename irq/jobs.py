"""The job state machine: the one place that moves a job between statuses in the store.

queued → running → succeeded | failed | cancelled; a retryable fault sends a running job back to
queued until its attempts or its deadline run out. Every transition is a single conditional UPDATE,
so a repeated or late call (a duplicate delivery, a result after cancel) changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Row, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only

from irq.store.db import Database
from irq.store.models import ACTIVE, ApiKey, Batch, Job, JobStatus

# The hot path (creating jobs, one or a batch, reading, claiming, finishing and requeuing them) runs Core
# statements on the jobs table: the ORM's unit of work and its session synchronisation cost more than
# the statement itself (measured in docs/benchmarks.md). `_COLUMN` maps each `Job` attribute to its
# column ("schema_" is stored as "schema").
_JOBS = cast(Table, Job.__table__)
_COLUMN = {attr.key: attr.columns[0].key for attr in Job.__mapper__.column_attrs}


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """`Job` attribute values keyed by their columns, for a Core INSERT."""
    return {_COLUMN[attr]: value for attr, value in values.items()}


def _as_job(row: Row[Any]) -> Job:
    """A detached `Job` from a row of the jobs table."""
    return Job(**{attr: row._mapping[column] for attr, column in _COLUMN.items()})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    """A time-ordered UUID (version 7 layout): 48 bits of Unix milliseconds, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0x0FFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def schema_hash(schema: dict[str, Any]) -> str:
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class NewJob:
    """A validated job request, as the API hands it to the store."""

    prompt: str
    schema: dict[str, Any]
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    priority: int
    timeout_s: float
    max_attempts: int
    idempotency_key: str | None = None
    custom_id: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What one inference call produced, ready to be stored on the job."""

    result: Any
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    generation_ms: float
    backend: str
    endpoint: str
    validation_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _cancelled(message: str) -> dict[str, Any]:
    """The values of a queued or running job being cancelled."""
    return dict(
        status=JobStatus.cancelled, finished_at=utcnow(), error_code="cancelled", error_message=message
    )


def _ms(later: datetime, earlier: datetime | None) -> float | None:
    return None if earlier is None else (later - earlier).total_seconds() * 1000.0


class JobManager:
    """Creates, claims, finishes, retries and cancels jobs; API and workers call this, never raw SQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- API side -------------------------------------------------------------------------

    def create(self, owner_id: int, new: NewJob) -> tuple[Job, bool]:
        """Insert a queued job; with an idempotency key already used by this owner, return that job."""
        if new.idempotency_key is not None:
            existing = self._by_idempotency_key(owner_id, new.idempotency_key)
            if existing is not None:
                return existing, False
        row = self._new_row(owner_id, new, utcnow())
        try:
            with self.db.engine.begin() as conn:
                conn.execute(insert(_JOBS), [_columns(row)])
        except IntegrityError:
            # Two requests raced with the same idempotency key: the other one won.
            assert new.idempotency_key is not None
            existing = self._by_idempotency_key(owner_id, new.idempotency_key)
            if existing is None:
                raise
            return existing, False
        return Job(**row), True

    def create_batch(
        self, owner_id: int, news: list[NewJob], idempotency_key: str | None
    ) -> tuple[Batch, list[Job], bool]:
        """Insert a batch and all its jobs in one transaction; with an idempotency key already used by
        this owner, return that batch and no jobs (they were enqueued when it was created)."""
        if idempotency_key is not None:
            existing = self._batch_by_idempotency_key(owner_id, idempotency_key)
            if existing is not None:
                return existing, [], False
        now = utcnow()
        batch = Batch(
            id=new_job_id(),
            owner_id=owner_id,
            idempotency_key=idempotency_key,
            total=len(news),
            created_at=now,
        )
        rows = [self._new_row(owner_id, new, now, batch.id, index) for index, new in enumerate(news)]
        try:
            with self.db.session() as s:
                s.add(batch)
                s.flush()
                s.execute(insert(_JOBS), [_columns(row) for row in rows])
        except IntegrityError:
            assert idempotency_key is not None
            existing = self._batch_by_idempotency_key(owner_id, idempotency_key)
            if existing is None:
                raise
            return existing, [], False
        return batch, [Job(**row) for row in rows], True

    def get_batch(self, batch_id: str, owner_id: int) -> Batch | None:
        with self.db.session() as s:
            batch = s.get(Batch, batch_id)
        return batch if batch is not None and batch.owner_id == owner_id else None

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        with self.db.session() as s:
            rows = s.execute(
                select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status)
            )
            return {status: int(n) for status, n in rows}

    def batch_jobs(self, batch_id: str, chunk: int = 500) -> Iterator[Job]:
        """The batch's jobs in their submitted order, read a chunk at a time."""
        after = -1
        while True:
            with self.db.session() as s:
                jobs = list(
                    s.scalars(
                        select(Job)
                        .where(Job.batch_id == batch_id, Job.batch_index > after)
                        .order_by(Job.batch_index)
                        .limit(chunk)
                    )
                )
            yield from jobs
            if len(jobs) < chunk:
                return
            after = jobs[-1].batch_index or 0

    def cancel_batch(self, batch: Batch) -> None:
        """Cancel every queued or running job of the batch; finished ones keep their outcome."""
        values = _cancelled("the batch was cancelled")
        with self.db.session() as s:
            s.execute(update(Batch).where(Batch.id == batch.id).values(cancelled_at=values["finished_at"]))
            s.execute(update(Job).where(Job.batch_id == batch.id, Job.status.in_(ACTIVE)).values(values))

    def _new_row(
        self, owner_id: int, new: NewJob, now: datetime, batch_id: str | None = None, index: int | None = None
    ) -> dict[str, Any]:
        """A queued job's values, by `Job` attribute."""
        return dict(
            id=new_job_id(),
            owner_id=owner_id,
            batch_id=batch_id,
            batch_index=index,
            custom_id=new.custom_id,
            idempotency_key=new.idempotency_key,
            prompt=new.prompt,
            schema_=new.schema,
            schema_hash=schema_hash(new.schema),
            model=new.model,
            max_tokens=new.max_tokens,
            temperature=new.temperature,
            top_p=new.top_p,
            priority=new.priority,
            timeout_s=new.timeout_s,
            status=JobStatus.queued,
            attempts=0,
            max_attempts=new.max_attempts,
            created_at=now,
            enqueued_at=now,
        )

    def delete_unstarted(self, job_id: str) -> None:
        """Undo `create` when the job could not be enqueued and the client was told so."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status == JobStatus.queued and job.attempts == 0:
                s.delete(job)

    def get(self, job_id: str, owner_id: int | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another owner."""
        with self.db.engine.connect() as conn:
            row = conn.execute(select(_JOBS).where(_JOBS.c.id == job_id)).one_or_none()
        if row is None or (owner_id is not None and row.owner_id != owner_id):
            return None
        return _as_job(row)

    def page(
        self,
        owner_id: int,
        *,
        status: str | None = None,
        batch_id: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Newest first; `before` is the id of the last job of the previous page."""
        q = select(Job).where(Job.owner_id == owner_id)
        if status is not None:
            q = q.where(Job.status == status)
        if batch_id is not None:
            q = q.where(Job.batch_id == batch_id)
        if before is not None:
            q = q.where(Job.id < before)
        q = q.order_by(Job.id.desc()).limit(limit)
        with self.db.session() as s:
            return list(s.scalars(q))

    def counts(self, since: datetime, owner_id: int | None = None) -> list[tuple[str, str, int]]:
        """(owner name, status, jobs) for jobs created since `since`; all owners' when `owner_id` is None."""
        q = (
            select(ApiKey.name, Job.status, func.count())
            .join(ApiKey, ApiKey.id == Job.owner_id)
            .where(Job.created_at >= since)
            .group_by(ApiKey.name, Job.status)
        )
        if owner_id is not None:
            q = q.where(Job.owner_id == owner_id)
        with self.db.session() as s:
            return [(name, status, int(n)) for name, status, n in s.execute(q)]

    def finished_since(self, since: datetime, owner_id: int | None = None) -> list[Job]:
        """Jobs finished since `since` (every owner's when `owner_id` is None), for statistics: their
        outcome and timing columns only, not prompts, schemas or documents."""
        q = (
            select(Job)
            .options(
                load_only(
                    Job.model,
                    Job.backend,
                    Job.status,
                    Job.error_code,
                    Job.total_ms,
                    Job.ttft_ms,
                    Job.tokens_per_s,
                    Job.generation_ms,
                )  # fmt: skip
            )
            .where(Job.finished_at >= since)
        )
        if owner_id is not None:
            q = q.where(Job.owner_id == owner_id)
        with self.db.session() as s:
            return list(s.scalars(q))

    def finished_outline(
        self, since: datetime, limit: int
    ) -> list[tuple[datetime, str, str, str | None, float | None]]:
        """(finished_at, status, model, backend, total_ms) of every owner's jobs finished since `since`,
        newest first and at most `limit`: the columns a dashboard plots, without prompts or documents."""
        q = (
            select(Job.finished_at, Job.status, Job.model, Job.backend, Job.total_ms)
            .where(Job.finished_at >= since)
            .order_by(Job.finished_at.desc())
            .limit(limit)
        )
        with self.db.session() as s:
            return [tuple(row) for row in s.execute(q)]  # type: ignore[misc]

    def cancel(self, job_id: str, owner_id: int) -> Job | None:
        """Cancel a queued or running job; a finished job stays as it is. None if not the owner's."""
        with self.db.session() as s:
            s.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.owner_id == owner_id,
                    Job.status.in_(ACTIVE),
                )
                .values(_cancelled("cancelled by the client"))
            )
        return self.get(job_id, owner_id)

    # --- worker side ----------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, lease_s: float) -> Job | None:
        """Atomically move a queued job to running and count the attempt; None if it is not queued."""
        now = utcnow()
        with self.db.engine.begin() as conn:
            row = conn.execute(
                update(_JOBS)
                .where(_JOBS.c.id == job_id, _JOBS.c.status == JobStatus.queued)
                .values(
                    status=JobStatus.running,
                    attempts=_JOBS.c.attempts + 1,
                    started_at=now,
                    first_started_at=func.coalesce(_JOBS.c.first_started_at, now),
                    worker=worker,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                )
                .returning(_JOBS)
            ).one_or_none()
        return None if row is None else _as_job(row)

    def renew_leases(self, worker: str, lease_s: float) -> int:
        """Extend the lease of every job `worker` is running; returns how many it holds."""
        with self.db.session() as s:
            res = s.execute(
                update(Job)
                .where(Job.worker == worker, Job.status == JobStatus.running)
                .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
            )
        return int(res.rowcount)  # type: ignore[attr-defined]

    def expire_leases(self, limit: int = 1000) -> list[Job]:
        """Re-queue running jobs whose worker stopped renewing their lease (it died); fail those out of
        attempts or past their deadline. Returns the re-queued jobs, which the caller must enqueue."""
        with self.db.session() as s:
            expired = list(
                s.scalars(
                    select(Job)
                    .where(Job.status == JobStatus.running, Job.lease_expires_at < utcnow())
                    .order_by(Job.lease_expires_at)
                    .limit(limit)
                )
            )
        return [
            job
            for job in expired
            if self.requeue(job, "worker_lost", f"worker {job.worker} stopped renewing the job's lease")
        ]

    def queued_since_before(self, cutoff: datetime, limit: int = 10_000) -> list[Job]:
        """Jobs queued since before `cutoff`, oldest first: candidates for a lost broker message."""
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Job)
                    .where(Job.status == JobStatus.queued, Job.enqueued_at < cutoff)
                    .order_by(Job.enqueued_at)
                    .limit(limit)
                )
            )

    def count_active(self, owner_id: int) -> int:
        """Queued and running jobs of one owner (the in-flight quota)."""
        with self.db.session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.owner_id == owner_id, Job.status.in_(ACTIVE))
                )
                or 0
            )

    def succeed(self, job: Job, outcome: Outcome) -> bool:
        """Store the result of a running job; False if the job was cancelled or finished meanwhile."""
        now = utcnow()
        generation_s = outcome.generation_ms / 1000.0
        values: dict[str, Any] = dict(
            status=JobStatus.succeeded,
            result=outcome.result,
            validation_error=outcome.validation_error,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            backend=outcome.backend,
            endpoint=outcome.endpoint,
            ttft_ms=outcome.ttft_ms,
            generation_ms=outcome.generation_ms,
            tokens_per_s=(outcome.completion_tokens / generation_s) if generation_s > 0 else None,
            error_code=None,
            error_message=None,
        )
        return self._finish(job, now, values)

    def fail(
        self,
        job: Job,
        code: str,
        message: str,
        *,
        endpoint: str | None = None,
        result: Any = None,
        validation_error: str | None = None,
    ) -> bool:
        """Fail a running job for good with a machine-readable code; False if it was no longer running."""
        values: dict[str, Any] = dict(status=JobStatus.failed, error_code=code, error_message=message[:4000])
        if endpoint is not None:
            values["endpoint"] = endpoint
        if result is not None:
            values["result"] = result
            values["validation_error"] = validation_error
        return self._finish(job, utcnow(), values)

    def requeue(self, job: Job, code: str, message: str) -> bool:
        """Send a running job back to the queue after a retryable fault; False if it must fail instead."""
        now = utcnow()
        past_deadline = job.deadline_at is not None and now >= job.deadline_at
        if job.attempts >= job.max_attempts or past_deadline:
            reason = "timeout" if past_deadline else code
            self.fail(job, reason, f"gave up after {job.attempts} attempt(s): {message}")
            return False
        return self._transition(
            job,
            dict(
                status=JobStatus.queued,
                enqueued_at=now,
                lease_expires_at=None,
                error_code=code,
                error_message=message[:4000],
            ),
        )

    def _finish(self, job: Job, now: datetime, values: dict[str, Any]) -> bool:
        values.update(
            finished_at=now,
            lease_expires_at=None,
            queue_wait_ms=_ms(job.started_at, job.enqueued_at) if job.started_at else None,
            total_ms=_ms(now, job.created_at),
        )
        return self._transition(job, values)

    def _transition(self, job: Job, values: dict[str, Any]) -> bool:
        """Update the job as this attempt of it runs; False if it is no longer this running attempt."""
        with self.db.engine.begin() as conn:
            res = conn.execute(
                update(_JOBS)
                .where(
                    _JOBS.c.id == job.id,
                    _JOBS.c.status == JobStatus.running,
                    _JOBS.c.attempts == job.attempts,
                )
                .values(values)
            )
        return bool(res.rowcount)

    def _batch_by_idempotency_key(self, owner_id: int, key: str) -> Batch | None:
        with self.db.session() as s:
            return s.scalars(
                select(Batch).where(Batch.owner_id == owner_id, Batch.idempotency_key == key)
            ).one_or_none()

    def _by_idempotency_key(self, owner_id: int, key: str) -> Job | None:
        with self.db.session() as s:
            return s.scalars(
                select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key)
            ).one_or_none()
