"""Reads of the jobs table for `/v1/stats`, `/dashboard/data`, `/metrics` and `/readyz` besides the rollups
(`irq/store/rollups.py`, the past): the jobs active now, the newest finished ones, key names. No prompts,
schemas or documents are read here."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select, text

from irq.store.db import Database
from irq.store.jobs import JOBS
from irq.store.models import ACTIVE, ApiKey, JobStatus

KEYS = ApiKey.__table__


class JobSpan(NamedTuple):
    """When one finished job was created and finished, how it ended and how long it waited."""

    created_at: datetime
    finished_at: datetime
    status: str
    total_ms: float | None
    queue_wait_ms: float | None


def ping(db: Database) -> None:
    """Raise unless the store answers."""
    with db.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


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


def active_counts(db: Database, since: datetime, owner_id: int | None = None) -> list[tuple[int, str, int]]:
    """(owner id, status, jobs) of the jobs created since `since` that are queued or running now."""
    q = (
        select(JOBS.c.owner_id, JOBS.c.status, func.count())
        .where(JOBS.c.status.in_(list(ACTIVE)), JOBS.c.created_at >= since)
        .group_by(JOBS.c.owner_id, JOBS.c.status)
    )
    if owner_id is not None:
        q = q.where(JOBS.c.owner_id == owner_id)
    with db.engine.connect() as conn:
        return [(int(owner), status, int(n)) for owner, status, n in conn.execute(q)]


def active_by_model(db: Database) -> list[tuple[str, str, str | None, int]]:
    """(status, model, backend, jobs) of the jobs queued or running now."""
    q = (
        select(JOBS.c.status, JOBS.c.model, JOBS.c.backend, func.count())
        .where(JOBS.c.status.in_(list(ACTIVE)))
        .group_by(JOBS.c.status, JOBS.c.model, JOBS.c.backend)
    )
    with db.engine.connect() as conn:
        return [(status, model, backend, int(n)) for status, model, backend, n in conn.execute(q)]


def key_names(db: Database, key_ids: set[int]) -> dict[int, str]:
    if not key_ids:
        return {}
    q = select(KEYS.c.id, KEYS.c.name).where(KEYS.c.id.in_(sorted(key_ids)))
    with db.engine.connect() as conn:
        return {int(key_id): name for key_id, name in conn.execute(q)}
