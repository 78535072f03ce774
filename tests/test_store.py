"""The store on SQLite and PostgreSQL: migrations apply and revert, and the state machine's rules hold."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect, text

from inference.errors import RetryableInferenceError
from irq.broker import Broker, queue_keys
from irq.jobs import JobManager, Outcome
from irq.keys import authenticate, create_key, hash_key
from irq.migrate import downgrade, upgrade
from irq.settings import Settings
from irq.store.db import Database
from irq.store.jobs import JobStore
from irq.store.models import ApiKey, JobStatus
from irq.submission import NewJob
from tests import ROOT
from worker.upkeep import sweep


def new_job(**over: object) -> NewJob:
    fields: dict[str, object] = dict(
        prompt="max of a list",
        schema={"type": "object"},
        model="SmolLM2-135M-Instruct",  # the implicit endpoint's
        backend="guidance",
        max_tokens=64,
        temperature=0.3,
        top_p=0.95,
        priority=5,
        timeout_s=60,
        max_attempts=2,
    )
    return NewJob(**{**fields, **over})  # type: ignore[arg-type]


def outcome() -> Outcome:
    return Outcome(
        result={"a": 1},
        finish_reason="stop",
        prompt_tokens=5,
        completion_tokens=10,
        ttft_ms=5,
        generation_ms=100,
        backend="llguidance",
        endpoint="http://x/generate",
    )


def test_irq_db_upgrade_creates_the_tables_and_downgrade_removes_them(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "db", "upgrade"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"IRQ_DATABASE_URL": database_url, "PATH": ""},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    db = Database(database_url)
    assert {"jobs", "api_keys", "alembic_version"} <= set(inspect(db.engine).get_table_names())
    db.dispose()
    downgrade(database_url)
    db = Database(database_url)
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    db.dispose()


def test_the_migrations_build_every_index_the_models_declare(db: Database) -> None:
    """A model's index with no migration behind it would exist in the tests' metadata only."""
    from irq.store.models import Base

    found = inspect(db.engine)
    for table in Base.metadata.sorted_tables:
        declared = {index.name for index in table.indexes}
        built = {index["name"] for index in found.get_indexes(table.name)}
        assert declared <= built, (table.name, declared - built)
    assert "ix_jobs_created_at" in {i["name"] for i in found.get_indexes("jobs")}  # /v1/stats' window


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated store on SQLite and on PostgreSQL."""
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def jobs(db: Database, redis_url: str) -> Iterator[JobManager]:
    """The lifecycle over the store, with a real broker (a Redis database of its own)."""
    settings = Settings(redis_url=redis_url)
    broker = Broker(settings)
    yield JobManager.open(settings, db, broker)
    broker.close()


@pytest.fixture
def owner(db: Database) -> int:
    principal = authenticate(db, create_key(db, "alice"))
    assert principal is not None
    return principal.key_id


def test_keys_are_stored_hashed_and_authenticate(db: Database) -> None:
    key = create_key(db, "alice")
    with db.session() as s:
        row = s.query(ApiKey).one()
    assert row.key_hash == hash_key(key) and key not in (row.key_hash, row.prefix)
    assert authenticate(db, key) is not None and authenticate(db, key + "x") is None


def test_a_job_is_claimed_once_and_a_late_result_does_not_overwrite_a_cancel(
    jobs: JobManager, owner: int
) -> None:
    job, created = jobs.submit(owner, new_job())
    assert created and job.status == JobStatus.queued
    claimed = jobs.claim(job.id, "w1", "default", 30)
    assert claimed is not None and claimed.attempts == 1 and claimed.status == JobStatus.running
    assert jobs.claim(job.id, "w2", "default", 30) is None  # a duplicate delivery finds it taken
    jobs.cancel(job.id, owner)
    assert jobs.succeed(claimed, outcome()) is False
    final = jobs.store.get(job.id)
    assert final is not None and final.status == JobStatus.cancelled and final.result is None


def test_retryable_faults_requeue_until_attempts_run_out(jobs: JobManager, owner: int) -> None:
    busy = RetryableInferenceError("inference_http_503", "busy")
    job, _ = jobs.submit(owner, new_job(max_attempts=2))
    first = jobs.claim(job.id, "w", "default", 30)
    assert first is not None and jobs.retry_or_fail(first, busy).retry is True
    keys = queue_keys(jobs.registry.route(job.model, job.backend).queue)
    queues = {key: jobs.broker.redis.llen(key) for key in keys}
    assert queues[keys[0]] == 1  # the retry's message is at the front, ahead of priority 5's
    second = jobs.claim(job.id, "w", "default", 30)
    assert second is not None and second.attempts == 2
    assert jobs.retry_or_fail(second, busy).retry is False
    final = jobs.store.get(job.id)
    assert final is not None and final.status == JobStatus.failed and final.error_code == "inference_http_503"


def test_a_lapsed_lease_goes_back_to_the_queue_unless_the_sweeping_worker_is_running_the_job(
    jobs: JobManager, owner: int
) -> None:
    # A worker's renewal can lag behind a store held up by many writers: its own sweep keeps its own jobs.
    mine, _ = jobs.submit(owner, new_job(prompt="mine"))
    dead, _ = jobs.submit(owner, new_job(prompt="the dead worker's"))
    assert jobs.claim(mine.id, "w1", "default", 0.001) and jobs.claim(dead.id, "w2", "default", 0.001)
    time.sleep(0.01)
    assert sweep(jobs, Settings(), alive={("w1", mine.id), ("w1", dead.id)}).expired == 1
    kept, requeued = jobs.store.get(mine.id), jobs.store.get(dead.id)
    assert kept is not None and kept.status == JobStatus.running and kept.worker == "w1"
    assert requeued is not None and requeued.status == JobStatus.queued and requeued.attempts == 1
    assert sweep(jobs, Settings()).expired == 1  # swept by another worker, the lapsed lease counts
    final = jobs.store.get(mine.id)
    assert final is not None and final.status == JobStatus.queued


def test_each_schema_is_stored_once_and_every_job_reads_its_own(jobs: JobManager, owner: int) -> None:
    custom = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    default_ids = [jobs.submit(owner, new_job(prompt=f"job {i}"))[0].id for i in range(40)]
    batch, _ = jobs.submit_batch(owner, [new_job(prompt=f"line {i}", schema=custom) for i in range(10)], None)
    db = jobs.store.db
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT COUNT(*) FROM schemas")).scalar()
        copies = conn.execute(text("SELECT COUNT(*) FROM jobs WHERE schema IS NOT NULL")).scalar()
    assert (stored, copies) == (2, 0)
    fresh = JobStore(db)  # another process: nothing remembered
    assert all(j is not None and j.schema_ == {"type": "object"} for j in map(fresh.get, default_ids))
    claimed = fresh.claim(default_ids[0], "w1", "default", 30)
    assert claimed is not None and claimed.document_schema == {"type": "object"}
    assert [j.document_schema for j in fresh.batch_jobs(batch.id)] == [custom] * 10


def test_jobs_stored_with_their_own_schema_copy_still_read_it_after_the_upgrade(sqlite_url: str) -> None:
    upgrade(sqlite_url, "0011")
    db = Database(sqlite_url)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_keys (name, prefix, key_hash, is_admin, created_at) "
                "VALUES ('k', 'irq_x', 'h', 0, '2026-11-30 00:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO jobs (id, owner_id, prompt, schema, schema_hash, model, backend, max_tokens, "
                "temperature, top_p, priority, timeout_s, status, attempts, max_attempts, created_at, "
                "retry_truncated, bounded) VALUES ('01000000-0000-7000-8000-000000000001', 1, 'p', "
                """'{"type": "array"}', 'h', 'm', 'guidance', 64, 0.3, 0.95, 5, 60, 'queued', 0, 3, """
                "'2026-11-30 00:00:00', 1, 0)"
            )
        )
    upgrade(sqlite_url)
    job = JobStore(db).get("01000000-0000-7000-8000-000000000001")
    db.dispose()
    assert job is not None and job.document_schema == {"type": "array"}
