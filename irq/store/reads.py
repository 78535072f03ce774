"""Aggregate reads of the jobs table for `/v1/stats`, `/dashboard/data`, `/metrics` and `/readyz`: counts,
outcome and timing columns, histograms. No prompts, schemas or documents are read here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import case, func, select, text

from irq.store.db import Database
from irq.store.jobs import JOBS
from irq.store.models import ApiKey, JobStatus

KEYS = ApiKey.__table__


class FinishedJob(NamedTuple):
    """The outcome and timing columns of one finished job, for statistics."""

    model: str
    backend: str | None
    status: str
    error_code: str | None
    total_ms: float | None
    ttft_ms: float | None
    tokens_per_s: float | None
    generation_ms: float | None
    endpoint: str | None


class JobSpan(NamedTuple):
    """When one finished job was created and finished, how it ended and how long it waited."""

    created_at: datetime
    finished_at: datetime
    status: str
    total_ms: float | None
    queue_wait_ms: float | None


class Histogram(NamedTuple):
    """A cumulative histogram of one timing column, for one model and backend."""

    model: str
    backend: str | None
    jobs: int  # that have a value
    total: float  # the sum of the values, in the column's unit
    cumulative: list[int]  # values ≤ each bound


def ping(db: Database) -> None:
    """Raise unless the store answers."""
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def counts_by_owner(db: Database, since: datetime, owner_id: int | None = None) -> list[tuple[str, str, int]]:
    """(owner name, status, jobs) for jobs created since `since`; all owners' when `owner_id` is None."""
    q = (
        select(KEYS.c.name, JOBS.c.status, func.count())
        .join(KEYS, KEYS.c.id == JOBS.c.owner_id)
        .where(JOBS.c.created_at >= since)
        .group_by(KEYS.c.name, JOBS.c.status)
    )
    if owner_id is not None:
        q = q.where(JOBS.c.owner_id == owner_id)
    with db.engine.connect() as conn:
        return [(name, status, int(n)) for name, status, n in conn.execute(q)]


def finished_since(db: Database, since: datetime, owner_id: int | None = None) -> list[FinishedJob]:
    """Jobs finished since `since` (every owner's when `owner_id` is None)."""
    q = select(*(JOBS.c[name] for name in FinishedJob._fields)).where(JOBS.c.finished_at >= since)
    if owner_id is not None:
        q = q.where(JOBS.c.owner_id == owner_id)
    with db.engine.connect() as conn:
        return [FinishedJob(*row) for row in conn.execute(q)]


def finished_spans(db: Database) -> list[JobSpan]:
    """Every finished job's span (a benchmark's makespan and waits; its store holds only its own jobs)."""
    q = select(*(JOBS.c[name] for name in JobSpan._fields)).where(JOBS.c.finished_at.is_not(None))
    with db.engine.connect() as conn:
        return [JobSpan(*row) for row in conn.execute(q)]


def finished_count(db: Database, since: datetime | None = None, until: datetime | None = None) -> int:
    """Jobs that finished (in the window, when one is given)."""
    q = select(func.count()).select_from(JOBS).where(JOBS.c.finished_at.is_not(None))
    if since is not None:
        q = q.where(JOBS.c.finished_at >= since)
    if until is not None:
        q = q.where(JOBS.c.finished_at <= until)
    with db.engine.connect() as conn:
        return int(conn.execute(q).scalar() or 0)


def finished_outline(
    db: Database, since: datetime, limit: int, owner_id: int | None = None
) -> list[tuple[datetime, str, str, str | None, str | None, float | None]]:
    """(finished_at, status, model, backend, endpoint, total_ms) of the jobs finished since `since` (one
    owner's, or every owner's for None), newest first and at most `limit`: the columns a dashboard plots."""
    q = (
        select(
            JOBS.c.finished_at, JOBS.c.status, JOBS.c.model, JOBS.c.backend, JOBS.c.endpoint, JOBS.c.total_ms
        )
        .where(JOBS.c.finished_at >= since)
        .order_by(JOBS.c.finished_at.desc())
        .limit(limit)
    )
    if owner_id is not None:
        q = q.where(JOBS.c.owner_id == owner_id)
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(q)]


def running_by_endpoint(db: Database) -> dict[str | None, int]:
    """Jobs running now, by the endpoint they run on."""
    q = (
        select(JOBS.c.endpoint, func.count())
        .where(JOBS.c.status == JobStatus.running)
        .group_by(JOBS.c.endpoint)
    )
    with db.engine.connect() as conn:
        return {endpoint: int(n) for endpoint, n in conn.execute(q)}


def status_counts(db: Database) -> list[tuple[str, str, str | None, int]]:
    """(status, model, backend, jobs) over the whole table."""
    q = select(JOBS.c.status, JOBS.c.model, JOBS.c.backend, func.count()).group_by(
        JOBS.c.status, JOBS.c.model, JOBS.c.backend
    )
    with db.engine.connect() as conn:
        return [(status, model, backend, int(n)) for status, model, backend, n in conn.execute(q)]


def error_counts(db: Database) -> list[tuple[str | None, str, int]]:
    """(error code, model, jobs) of failed jobs."""
    q = (
        select(JOBS.c.error_code, JOBS.c.model, func.count())
        .where(JOBS.c.status == JobStatus.failed)
        .group_by(JOBS.c.error_code, JOBS.c.model)
    )
    with db.engine.connect() as conn:
        return [(code, model, int(n)) for code, model, n in conn.execute(q)]


def histograms(db: Database, column: str, bounds: Sequence[float]) -> Iterator[Histogram]:
    """Per model and backend, the jobs that have a value in `column`, counted under each bound."""
    col: Any = JOBS.c[column]
    under = [func.sum(case((col <= bound, 1), else_=0)) for bound in bounds]
    q = (
        select(JOBS.c.model, JOBS.c.backend, func.count(col), func.sum(col), *under)
        .where(col.is_not(None))
        .group_by(JOBS.c.model, JOBS.c.backend)
    )
    with db.engine.connect() as conn:
        for model, backend, count, total, *cumulative in conn.execute(q):
            yield Histogram(model, backend, int(count), float(total or 0), [int(n or 0) for n in cumulative])
