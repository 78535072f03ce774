"""The statements on the jobs and batches tables, as Core statements (no ORM unit of work: it cost more than
the statements themselves, docs/bench-results/NOTEBOOK.md). Only the lifecycle (`irq/jobs.py`) moves a job
between statuses; readers (the API) call the `get`, `page` and batch reads directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Executable, Row, Table, bindparam, delete, func, insert, or_, select, update

from irq.clock import is_id, utcnow
from irq.store.db import Database
from irq.store.models import ACTIVE, Batch, Job, JobStatus, OpenAIBatch
from irq.store.schemas import SchemaStore
from irq.store.updates import JobUpdate

JOBS = cast(Table, Job.__table__)
BATCHES = cast(Table, Batch.__table__)
OPENAI_BATCHES = cast(Table, OpenAIBatch.__table__)
# `Job` attribute → column ("schema_" is stored as "schema").
_COLUMN = {attr.key: attr.columns[0].key for attr in Job.__mapper__.column_attrs}
_BATCH_COLUMNS = [attr.key for attr in Batch.__mapper__.column_attrs]


# What a batch's insert also writes, in its transaction, made from the batch's id (an OpenAI batch's row).
Also = Callable[[str], Sequence[Executable]]


def _columns(values: dict[str, Any]) -> dict[str, Any]:
    """`Job` attribute values keyed by their columns, for a Core INSERT."""
    return {_COLUMN[attr]: value for attr, value in values.items()}


def as_job(row: Row[Any]) -> Job:
    """A detached `Job` from a row of the jobs table."""
    return Job(**{attr: row._mapping[column] for attr, column in _COLUMN.items()})


def _as_batch(row: Row[Any]) -> Batch:
    return Batch(**{name: row._mapping[name] for name in _BATCH_COLUMNS})


class JobStore:
    """Reads and conditional writes of jobs and batches; every write that moves a job names the status (and
    attempt) it expects, so a repeated or late call changes nothing."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.schemas = SchemaStore(db)

    # --- creating ---------------------------------------------------------------------------

    def insert(
        self,
        rows: Sequence[dict[str, Any]],
        batch: dict[str, Any] | None = None,
        chunk: int = 1000,
        also: Sequence[Executable] = (),
    ) -> None:
        """Insert jobs (`Job` attribute values), and their batch first, in one transaction (a chunk of rows
        at a time, so that a large batch is not copied whole into one statement's parameters); `also`: the
        statements of what must exist exactly when they do (an OpenAI batch's own row), in the same
        transaction."""
        schemas = {row["schema_hash"]: row["schema_"] for row in rows if row.get("schema_") is not None}
        with self.db.engine.begin() as conn:
            self.schemas.put(conn, schemas)
            if batch is not None:
                conn.execute(insert(BATCHES), [batch])
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                conn.execute(insert(JOBS), [_columns({**row, "schema_": None}) for row in part])
            for statement in also:
                conn.execute(statement)

    def delete_unsent(self, job_ids: Sequence[str], batch_id: str | None = None) -> None:
        """Undo an insert whose messages could not be sent: the jobs (still queued, never claimed), their
        batch and its OpenAI-compatible record (of the same id) if it has one."""
        with self.db.engine.begin() as conn:
            conn.execute(
                delete(JOBS).where(
                    JOBS.c.id.in_(job_ids), JOBS.c.status == JobStatus.queued, JOBS.c.attempts == 0
                )
            )
            if batch_id is not None:
                conn.execute(delete(OPENAI_BATCHES).where(OPENAI_BATCHES.c.id == batch_id))
                conn.execute(delete(BATCHES).where(BATCHES.c.id == batch_id))

    def by_idempotency_key(self, owner_id: int, key: str) -> Job | None:
        return self._one_job(select(JOBS).where(JOBS.c.owner_id == owner_id, JOBS.c.idempotency_key == key))

    def batch_by_idempotency_key(self, owner_id: int, key: str) -> Batch | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(
                select(BATCHES).where(BATCHES.c.owner_id == owner_id, BATCHES.c.idempotency_key == key)
            ).one_or_none()
        return None if row is None else _as_batch(row)

    # --- reading ----------------------------------------------------------------------------

    def get(self, job_id: str, owner_id: int | None = None) -> Job | None:
        """The job, or None when it does not exist or belongs to another owner."""
        if not is_id(job_id):
            return None
        job = self._one_job(select(JOBS).where(JOBS.c.id == job_id))
        return None if job is None or (owner_id is not None and job.owner_id != owner_id) else job

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
        q = select(JOBS).where(JOBS.c.owner_id == owner_id)
        if status is not None:
            q = q.where(JOBS.c.status == status)
        if batch_id is not None:
            q = q.where(JOBS.c.batch_id == batch_id)
        if before is not None:
            q = q.where(JOBS.c.id < before)
        return self._jobs(q.order_by(JOBS.c.id.desc()).limit(limit))

    def count_active(self, owner_id: int) -> int:
        """Queued and running jobs of one owner (the in-flight quota)."""
        q = (
            select(func.count())
            .select_from(JOBS)
            .where(JOBS.c.owner_id == owner_id, JOBS.c.status.in_(ACTIVE))
        )
        with self.db.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def get_batch(self, batch_id: str, owner_id: int) -> Batch | None:
        if not is_id(batch_id):
            return None
        with self.db.engine.connect() as conn:
            row = conn.execute(select(BATCHES).where(BATCHES.c.id == batch_id)).one_or_none()
        return None if row is None or row.owner_id != owner_id else _as_batch(row)

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        q = select(JOBS.c.status, func.count()).where(JOBS.c.batch_id == batch_id).group_by(JOBS.c.status)
        with self.db.engine.connect() as conn:
            return {status: int(n) for status, n in conn.execute(q)}

    def batch_last_finished(self, batch_id: str) -> datetime | None:
        """When the batch's last job to finish finished."""
        q = select(func.max(JOBS.c.finished_at)).where(JOBS.c.batch_id == batch_id)
        with self.db.engine.connect() as conn:
            value: datetime | None = conn.execute(q).scalar()  # max() keeps the column's UTC type
        return value

    def batch_jobs(self, batch_id: str, chunk: int = 500) -> Iterator[Job]:
        """The batch's jobs in their submitted order, read a chunk at a time."""
        after = -1
        while True:
            q = (
                select(JOBS)
                .where(JOBS.c.batch_id == batch_id, JOBS.c.batch_index > after)
                .order_by(JOBS.c.batch_index)
                .limit(chunk)
            )
            with self.db.engine.connect() as conn:
                jobs = self._with_schemas([as_job(row) for row in conn.execute(q)])
            yield from jobs
            if len(jobs) < chunk:
                return
            after = jobs[-1].batch_index or 0

    def running_expired(self, now: datetime, limit: int) -> list[Job]:
        """Running jobs whose lease ran out (their worker stopped renewing it), oldest lease first."""
        q = (
            select(JOBS)
            .where(JOBS.c.status == JobStatus.running, JOBS.c.lease_expires_at < now)
            .order_by(JOBS.c.lease_expires_at)
            .limit(limit)
        )
        return self._jobs(q)

    def queued_since_before(self, cutoff: datetime, limit: int = 10_000) -> list[Job]:
        """Jobs queued since before `cutoff`, oldest first: candidates for a lost broker message."""
        q = (
            select(JOBS)
            .where(JOBS.c.status == JobStatus.queued, JOBS.c.enqueued_at < cutoff)
            .order_by(JOBS.c.enqueued_at)
            .limit(limit)
        )
        return self._jobs(q)

    def unsent_since_before(self, cutoff: datetime, limit: int = 10_000) -> list[Job]:
        """Queued jobs never sent (no `enqueued_at`) of the batches created before `cutoff` whose sender
        stamped no chunk since: it died while sending them."""
        batches = (
            select(JOBS.c.batch_id)
            .where(
                JOBS.c.status == JobStatus.queued, JOBS.c.enqueued_at.is_(None), JOBS.c.created_at < cutoff
            )
            .distinct()
        )
        last_stamp = select(func.max(JOBS.c.enqueued_at)).where(JOBS.c.batch_id == bindparam("batch_id"))
        with self.db.engine.connect() as conn:
            candidates = [batch_id for (batch_id,) in conn.execute(batches) if batch_id is not None]
            stalled = [
                batch_id
                for batch_id in candidates
                if (conn.execute(last_stamp, {"batch_id": batch_id}).scalar() or cutoff) <= cutoff
            ]
        if not stalled:
            return []
        q = (
            select(JOBS)
            .where(
                JOBS.c.batch_id.in_(stalled), JOBS.c.status == JobStatus.queued, JOBS.c.enqueued_at.is_(None)
            )
            .limit(limit)
        )
        return self._jobs(q)

    def count_sent_queued(self) -> int:
        """Queued jobs whose message was sent (the broker should hold one for each)."""
        q = select(func.count()).where(JOBS.c.status == JobStatus.queued, JOBS.c.enqueued_at.is_not(None))
        with self.db.engine.connect() as conn:
            return int(conn.execute(q).scalar() or 0)

    def stamp_enqueued(self, job_ids: Sequence[str], now: datetime, chunk: int = 1000) -> None:
        """Stamp jobs not stamped yet as sent `now`."""
        with self.db.engine.begin() as conn:
            for start in range(0, len(job_ids), chunk):
                part = list(job_ids[start : start + chunk])
                conn.execute(
                    update(JOBS)
                    .where(JOBS.c.id.in_(part), JOBS.c.enqueued_at.is_(None))
                    .values(enqueued_at=now)
                )

    def queued_for(self, model: str, backend: str, default: bool, limit: int = 1000) -> list[Job]:
        """Queued jobs of one model and backend (and, for the model's `default` backend, those that
        name none), oldest first."""
        backends = JOBS.c.backend == backend
        if default:
            backends = or_(backends, JOBS.c.backend.is_(None))
        q = (
            select(JOBS)
            .where(JOBS.c.status == JobStatus.queued, JOBS.c.model == model, backends)
            .order_by(JOBS.c.enqueued_at)
            .limit(limit)
        )
        return self._jobs(q)

    # --- moving -----------------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, endpoint: str, lease_s: float) -> Job | None:
        """Atomically move a queued job to running on `endpoint` and count the attempt; None if it is not
        queued."""
        now = utcnow()
        q = (
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.queued)
            .values(
                status=JobStatus.running,
                attempts=JOBS.c.attempts + 1,
                started_at=now,
                first_started_at=func.coalesce(JOBS.c.first_started_at, now),
                worker=worker,
                endpoint=endpoint,
                lease_expires_at=now + timedelta(seconds=lease_s),
            )
            .returning(JOBS)
        )
        with self.db.engine.begin() as conn:
            row = conn.execute(q).one_or_none()
        return None if row is None else self._with_schemas([as_job(row)])[0]

    def update_running(self, job: Job, change: JobUpdate) -> bool:
        """Update the job as this attempt of it runs; False if it is no longer this running attempt."""
        q = (
            update(JOBS)
            .where(JOBS.c.id == job.id, JOBS.c.status == JobStatus.running, JOBS.c.attempts == job.attempts)
            .values(change.columns())
        )
        with self.db.engine.begin() as conn:
            return bool(conn.execute(q).rowcount)

    def end_queued(self, job_id: str, change: JobUpdate) -> bool:
        """End a job that is still queued; False if it no longer is."""
        q = (
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.status == JobStatus.queued)
            .values(change.columns())
        )
        with self.db.engine.begin() as conn:
            return bool(conn.execute(q).rowcount)

    def cancel(self, job_id: str, owner_id: int, change: JobUpdate) -> bool:
        """Cancel one queued or running job of `owner_id`; False if it was not active (or not theirs)."""
        if not is_id(job_id):
            return False
        q = (
            update(JOBS)
            .where(JOBS.c.id == job_id, JOBS.c.owner_id == owner_id, JOBS.c.status.in_(ACTIVE))
            .values(change.columns())
        )
        with self.db.engine.begin() as conn:
            return bool(conn.execute(q).rowcount)

    def cancel_batch(self, batch_id: str, change: JobUpdate, mark_batch: bool = True) -> list[str]:
        """Cancel the batch's queued and running jobs (and, with `mark_batch`, mark the batch cancelled when
        they finish); returns their ids."""
        values = change.columns()
        with self.db.engine.begin() as conn:
            if mark_batch:
                conn.execute(
                    update(BATCHES).where(BATCHES.c.id == batch_id).values(cancelled_at=values["finished_at"])
                )
            rows = conn.execute(
                update(JOBS)
                .where(JOBS.c.batch_id == batch_id, JOBS.c.status.in_(ACTIVE))
                .values(values)
                .returning(JOBS.c.id)
            )
            return [row.id for row in rows]

    def renew_leases(self, worker: str, job_ids: Sequence[str], lease_s: float, chunk: int = 500) -> int:
        """Extend the lease of the jobs `worker` is running among `job_ids` (those a thread of it is on);
        returns how many it holds."""
        renewed = 0
        ids = list(job_ids)
        with self.db.engine.begin() as conn:
            for start in range(0, len(ids), chunk):
                q = (
                    update(JOBS)
                    .where(
                        JOBS.c.id.in_(ids[start : start + chunk]),
                        JOBS.c.worker == worker,
                        JOBS.c.status == JobStatus.running,
                    )
                    .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
                )
                renewed += int(conn.execute(q).rowcount)
        return renewed

    def _jobs(self, q: Any) -> list[Job]:
        with self.db.engine.connect() as conn:
            return self._with_schemas([as_job(row) for row in conn.execute(q)])

    def _one_job(self, q: Any) -> Job | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(q).one_or_none()
        return None if row is None else self._with_schemas([as_job(row)])[0]

    def _with_schemas(self, jobs: list[Job]) -> list[Job]:
        """The jobs, each with its schema from the schemas table (a row written before it has its own)."""
        found = self.schemas.get(job.schema_hash for job in jobs if job.schema_ is None)
        for job in jobs:
            if job.schema_ is None:
                job.schema_ = found.get(job.schema_hash)
        return jobs
