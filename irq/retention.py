"""Retention: a finished job, its batch and the files uploaded for it are kept `IRQ_RETENTION_DAYS` after
it finished (30 by default: OpenAI keeps a batch's output files 30 days, and clients coming from its Batch
API fetch results on that schedule), then deleted. The rollups (`irq/store/rollups.py`) count every job
before it goes, so `/v1/stats`, `/dashboard` and `/metrics` still answer about the pruned past.

The records keeper (`worker/upkeep.py`) prunes a few chunks at each pass; `irq db prune` does it at once,
optionally exporting every deleted job as a JSON line first. Each chunk is its own short transaction on
primary keys. At each pass it also deletes the bytes in the files folder that no `files` row names (an
upload cut short by a crash) once they are `LEFTOVER_S` old.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from irq.clock import is_id, utcnow
from irq.files import FileStorage
from irq.settings import Settings
from irq.store import retention, rollups
from irq.store.db import Database
from irq.store.jobs import JobStore

CHUNK = 1000
# An upload is copied into the folder (from the request's spooled body, on local disk) and then recorded
# within seconds: bytes an hour old without a record were left by a crash, not by an upload still going on.
LEFTOVER_S = 3600.0

log = logging.getLogger("irq.retention")


@dataclass(frozen=True)
class PruneReport:
    jobs: int
    batches: int
    files: int


def cutoff(settings: Settings, now: datetime | None = None) -> datetime | None:
    """Jobs that finished before this are past retention; None when everything is kept."""
    if settings.retention_days <= 0:
        return None
    return (now or utcnow()) - timedelta(days=settings.retention_days)


def expired(settings: Settings, resource_id: str) -> bool:
    """Whether a job or batch id that names nothing stored was minted before retention could have removed
    it (ids carry their creation time): then it was pruned, rather than never there."""
    limit = cutoff(settings)
    if limit is None or not is_id(resource_id):
        return False
    created_ms = uuid.UUID(resource_id).int >> 80
    return datetime.fromtimestamp(created_ms / 1000, UTC) < limit


def prune(
    db: Database,
    files: FileStorage | None,
    before: datetime,
    export: TextIO | None = None,
    max_chunks: int | None = None,
    pause_s: float = 0.0,
    lag_s: float = rollups.LAG_S,
) -> PruneReport:
    """Delete the jobs finished before `before` (only those the rollups already count), then the batches
    left empty and the files uploaded before it; with `export`, each job is written there first."""
    rollups.roll_up(db, lag_s)
    with db.engine.connect() as conn:
        mark = rollups.rolled_until(conn)
    if mark is None:
        return PruneReport(0, 0, 0)
    before = min(before, mark)
    store = JobStore(db)
    jobs = 0
    for n, rows in enumerate(retention.finished_before(db, before, CHUNK, whole=export is not None)):
        if max_chunks is not None and n >= max_chunks:
            break
        if export is not None:
            schemas = store.schemas.get(row["schema_hash"] for row in rows if row["schema"] is None)
            for row in rows:
                row["schema"] = row["schema"] or schemas.get(row["schema_hash"])
            export.writelines(json.dumps(row, default=str, ensure_ascii=False) + "\n" for row in rows)
            export.flush()
        jobs += retention.delete_jobs(db, [row["id"] for row in rows])
        if pause_s:
            time.sleep(pause_s)  # let submits and claims through between chunks
    batches = retention.delete_empty_batches(db, before)
    if jobs:
        retention.delete_unused_schemas(db, before)
    removed = []
    if files is not None:  # only where the files are: a worker host may not mount them
        removed = retention.delete_files_before(db, before)
        for file_id in removed:
            files.delete(file_id)
    return PruneReport(jobs, batches, len(removed))


def remove_leftovers(db: Database, files: FileStorage, older_than_s: float = LEFTOVER_S) -> int:
    """Delete what the files folder holds without a record, last written more than `older_than_s` ago:
    the bytes of an upload whose API died before recording it, or partial files. Returns how many."""
    complete, partial = files.leftovers(older_than_s)
    orphans = sorted(set(complete) - retention.stored_files(db, complete))
    for file_id in orphans:
        files.delete(file_id)
    for path in partial:
        path.unlink(missing_ok=True)
    if orphans or partial:
        log.warning(
            "removed %d file(s) without a record and %d partial upload(s)", len(orphans), len(partial)
        )
    return len(orphans) + len(partial)


def keep(db: Database, settings: Settings, now: datetime | None = None) -> tuple[int, int]:
    """The sweeper's part: roll up what finished, merge old minutes into hours, delete the files folder's
    leftovers, and prune a few chunks past retention. Returns (jobs rolled up, jobs pruned)."""
    rolled = rollups.roll_up(db, settings.rollup_lag_s, now)
    # An hour of minutes merged (or a day of hours): the rows the merge left dead are reclaimed.
    if rollups.compact(db, now):
        db.vacuum(rollups.KEPT)
    # Only where the files are: a worker host may not mount them.
    files = FileStorage(settings.files_dir) if settings.files_dir.is_dir() else None
    if files is not None:
        remove_leftovers(db, files)
    limit = cutoff(settings, now)
    if limit is None:
        return rolled, 0
    return rolled, prune(db, files, limit, max_chunks=5, lag_s=settings.rollup_lag_s).jobs
