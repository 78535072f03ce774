"""The statements of retention (`irq/retention.py`): which finished jobs, batches and files are past their
time, and their deletion in chunks by primary key, so that no statement holds a long lock."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, exists, select

from irq.store.db import Database
from irq.store.jobs import BATCHES, JOBS
from irq.store.models import OpenAIBatch, StoredFile
from irq.store.schemas import SCHEMAS, used_before

FILES = cast(Table, StoredFile.__table__)
OPENAI_BATCHES = cast(Table, OpenAIBatch.__table__)


def finished_before(
    db: Database, cutoff: datetime, chunk: int, whole: bool = True
) -> Iterator[list[dict[str, Any]]]:
    """Chunks of the jobs finished before `cutoff`, oldest first: their whole rows, or only their ids unless
    `whole` (each chunk is read after the previous one was deleted: call `delete_jobs` between them)."""
    columns = [JOBS] if whole else [JOBS.c.id]
    after = (
        None  # where the last chunk ended: the index entries of deleted rows before it are not walked again
    )
    while True:
        q = select(*columns, JOBS.c.finished_at.label("_finished_at")).where(JOBS.c.finished_at < cutoff)
        if after is not None:
            q = q.where(JOBS.c.finished_at >= after)
        with db.engine.connect() as conn:
            rows = [dict(row._mapping) for row in conn.execute(q.order_by(JOBS.c.finished_at).limit(chunk))]
        if not rows:
            return
        after = rows[-1].pop("_finished_at")
        for row in rows:
            row.pop("_finished_at", None)
        yield rows


def delete_jobs(db: Database, job_ids: Sequence[str]) -> int:
    with db.engine.begin() as conn:
        return int(conn.execute(delete(JOBS).where(JOBS.c.id.in_(job_ids))).rowcount)


def delete_empty_batches(db: Database, cutoff: datetime) -> int:
    """Batches created before `cutoff` none of whose jobs is left, with their OpenAI-compatible records."""
    empty = (
        select(BATCHES.c.id)
        .where(BATCHES.c.created_at < cutoff, ~exists().where(JOBS.c.batch_id == BATCHES.c.id))
        .scalar_subquery()
    )
    with db.engine.begin() as conn:
        ids = [row[0] for row in conn.execute(select(BATCHES.c.id).where(BATCHES.c.id.in_(empty)))]
        for start in range(0, len(ids), 1000):
            part = ids[start : start + 1000]
            conn.execute(delete(OPENAI_BATCHES).where(OPENAI_BATCHES.c.id.in_(part)))
            conn.execute(delete(BATCHES).where(BATCHES.c.id.in_(part)))
        # An OpenAI batch refused at validation has no irq batch: it goes with its age.
        conn.execute(
            delete(OPENAI_BATCHES).where(
                OPENAI_BATCHES.c.created_at < cutoff, ~exists().where(BATCHES.c.id == OPENAI_BATCHES.c.id)
            )
        )
    return len(ids)


def delete_unused_schemas(db: Database, cutoff: datetime) -> int:
    """The schemas no job names any more, last stored before `cutoff` (`irq/store/schemas.py` says why a
    schema being stored again is never one of them)."""
    deleted = 0
    with db.engine.begin() as conn:
        for digest in used_before(conn, cutoff):
            named = conn.execute(select(JOBS.c.id).where(JOBS.c.schema_hash == digest).limit(1)).first()
            if named is None:
                deleted += conn.execute(delete(SCHEMAS).where(SCHEMAS.c.hash == digest)).rowcount
    return deleted


def delete_files_before(db: Database, cutoff: datetime) -> list[str]:
    """The records of the files uploaded before `cutoff`, deleted; their ids (whose bytes go next)."""
    with db.engine.begin() as conn:
        ids = [row[0] for row in conn.execute(select(FILES.c.id).where(FILES.c.created_at < cutoff))]
        for start in range(0, len(ids), 1000):
            conn.execute(delete(FILES).where(FILES.c.id.in_(ids[start : start + 1000])))
    return ids


def stored_files(db: Database, file_ids: Sequence[str]) -> set[str]:
    """Which of `file_ids` have a record."""
    found: set[str] = set()
    with db.engine.connect() as conn:
        for start in range(0, len(file_ids), 1000):
            part = list(file_ids[start : start + 1000])
            found.update(row[0] for row in conn.execute(select(FILES.c.id).where(FILES.c.id.in_(part))))
    return found
