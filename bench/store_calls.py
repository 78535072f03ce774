"""CPU per store call on the hot path, the way `irq.store.jobs` makes it (Core statements on the jobs table)
against the same statements as ORM statements through a session (what it made before): create, claim,
succeed.

    python -m bench.store_calls [--calls 1000] [--database-url URL]   (default: a fresh SQLite file)

Each call runs `--calls` times in this process; CPU from `time.process_time()`.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Executable, func, insert, update

from irq.clock import utcnow
from irq.ir_schema import ir_json_schema
from irq.keys import create_key
from irq.migrate import upgrade
from irq.store.db import Database
from irq.store.jobs import JobStore
from irq.store.models import Job, JobStatus
from irq.store.updates import JobUpdate
from irq.submission import NewJob, job_row

SUCCEEDED = JobUpdate(
    status=JobStatus.succeeded,
    result={"intent": {"summary": "s"}},
    finish_reason="stop",
    prompt_tokens=10,
    completion_tokens=20,
    ttft_ms=5.0,
    generation_ms=50.0,
    backend="llguidance",
    endpoint="http://inference/generate",
)


class OrmJobs(JobStore):
    """`JobStore` with its statements executed as ORM statements through a session."""

    def insert(
        self,
        rows: Sequence[dict[str, Any]],
        batch: dict[str, Any] | None = None,
        chunk: int = 1000,
        also: Sequence[Executable] = (),
    ) -> None:
        with self.db.session() as s:
            s.execute(insert(Job), list(rows))
            for statement in also:
                s.execute(statement)

    def claim(self, job_id: str, worker: str, endpoint: str, lease_s: float) -> Job | None:
        now = utcnow()
        with self.db.session() as s:
            return s.scalars(
                update(Job)
                .where(Job.id == job_id, Job.status == JobStatus.queued)
                .values(
                    status=JobStatus.running,
                    attempts=Job.attempts + 1,
                    started_at=now,
                    first_started_at=func.coalesce(Job.first_started_at, now),
                    worker=worker,
                    lease_expires_at=now + timedelta(seconds=lease_s),
                )
                .returning(Job)
            ).one_or_none()

    def update_running(self, job: Job, change: JobUpdate) -> bool:
        with self.db.session() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == JobStatus.running, Job.attempts == job.attempts)
                .values(**change.columns())
            )
        return bool(res.rowcount)  # type: ignore[attr-defined]


def _created(store: JobStore, owner_id: int, new: NewJob) -> str:
    row = job_row(owner_id, new, utcnow())
    store.insert([row])
    return str(row["id"])


def _claimed(store: JobStore, job_id: str) -> Job:
    job = store.claim(job_id, "bench", "default", 60)
    assert job is not None
    return job


def _succeeded(store: JobStore, job: Job) -> None:
    now = utcnow()
    assert store.update_running(job, dataclasses.replace(SUCCEEDED, finished_at=now, lease_expires_at=None))


def cpu_ms(call: Callable[[int], object], n: int) -> float:
    started = time.process_time()
    for i in range(n):
        call(i)
    return (time.process_time() - started) * 1000.0 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'irq.db'}"
    upgrade(url)
    db = Database(url)
    jobs, orm = JobStore(db), OrmJobs(db)
    create_key(db, "bench")
    owner = 1
    new = NewJob(
        prompt="a function that returns the maximum of a list",
        schema=ir_json_schema(),
        model="m",
        backend="guidance",
        max_tokens=512,
        temperature=0.3,
        top_p=0.95,
        priority=5,
        timeout_s=600,
        max_attempts=3,
    )
    n = args.calls
    core_ids: list[str] = []
    orm_ids: list[str] = []
    core_jobs: list[Job] = []
    orm_jobs: list[Job] = []
    rows = [
        (
            "create",
            cpu_ms(lambda i: core_ids.append(_created(jobs, owner, new)), n),
            cpu_ms(lambda i: orm_ids.append(_created(orm, owner, new)), n),
        ),
        (
            "claim",
            cpu_ms(lambda i: core_jobs.append(_claimed(jobs, core_ids[i])), n),
            cpu_ms(lambda i: orm_jobs.append(_claimed(orm, orm_ids[i])), n),
        ),
        (
            "succeed",
            cpu_ms(lambda i: _succeeded(jobs, core_jobs[i]), n),
            cpu_ms(lambda i: _succeeded(orm, orm_jobs[i]), n),
        ),
    ]
    db.dispose()
    table = Table(title=f"CPU ms per store call, {n} calls each ({url.split(':')[0]})")
    for column in ("call", "Core statement (irq.store.jobs)", "ORM statement in a session"):
        table.add_column(column, justify="left" if column == "call" else "right")
    for name, core, orm_ms in rows:
        table.add_row(name, f"{core:.3f}", f"{orm_ms:.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
