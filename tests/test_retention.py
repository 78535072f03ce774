"""Retention and rollups with real processes: finished jobs are deleted after the retention time (by the
sweeper, or `irq db prune`), their ids then answer 410 `expired`, and `/v1/stats` and `/metrics` still count
them from the rollups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from irq import retention
from irq.clock import new_id, utcnow
from irq.keys import create_key
from irq.settings import Settings
from irq.store import rollups
from irq.store.db import Database
from irq.store.jobs import JobStore
from irq.submission import NewJob, job_row
from tests.procs import wait_until
from tests.support import start_fault_service, start_stack, stop_stack

ROOT = Path(__file__).resolve().parents[1]
RETENTION_S = 30.0


def _job_counts(scraped: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(scraped):
        for sample in family.samples:
            if sample.name == "irq_jobs":
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0) + sample.value
    return counts


def _status_is(http: httpx.Client, path: str, status: int) -> bool:
    return http.get(path).status_code == status


def _stats_view(stats: dict[str, Any]) -> tuple[Any, ...]:
    groups = [(g["model"], g["finished"], g["succeeded"], g["total_ms"]["p50"]) for g in stats["groups"]]
    return stats["jobs"], groups


def test_the_sweeper_deletes_jobs_past_retention_and_the_stats_still_count_them(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    env = {
        "IRQ_RETENTION_DAYS": str(RETENTION_S / 86400),
        "IRQ_ROLLUP_LAG_S": "0",
        "IRQ_SWEEP_INTERVAL_S": "1",
    }
    stack = start_stack(database_url, redis_url, inference.url, tmp_path, env=env)
    try:
        with stack.client() as http:
            ok = [
                http.post("/v1/jobs", json={"prompt": f"A function returning {i}"}).json()["id"]
                for i in range(4)
            ]
            bad = http.post("/v1/jobs", json={"prompt": "[faults: 400] refused"}).json()["id"]
            batch = http.post("/v1/batches", json=[{"prompt": "Sum a list"}, {"prompt": "Reverse it"}]).json()
            for job_id in [*ok, bad]:
                stack.wait_for(http, job_id, 60)
            wait_until(
                lambda: http.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed",
                60,
                "the batch",
            )
            before = http.get("/v1/stats", params={"window": 3600}).json()
            scraped_before = httpx.get(stack.api + "/metrics", timeout=10).text
            assert http.get(f"/v1/jobs/{ok[0]}").status_code == 200

            gone: Any = wait_until(
                lambda: (r := http.get(f"/v1/jobs/{ok[0]}")).status_code == 410 and r,
                RETENTION_S + 60,
                "the job to be pruned",
            )
            for job_id in [*ok[1:], bad]:
                wait_until(partial(_status_is, http, f"/v1/jobs/{job_id}", 410), 30, f"{job_id} pruned")
            batch_gone: Any = wait_until(
                lambda: (r := http.get(f"/v1/batches/{batch['id']}")).status_code == 410 and r,
                30,
                "the batch",
            )
            listed = http.get("/v1/jobs").json()
            after = http.get("/v1/stats", params={"window": 3600}).json()
            never = http.get(f"/v1/jobs/{new_id()}")
        scraped_after = httpx.get(stack.api + "/metrics", timeout=10).text
    finally:
        stop_stack(stack)
        inference.service.stop()
    error = gone.json()["error"]
    assert error["code"] == "expired" and ok[0] in error["message"]
    assert batch_gone.json()["error"]["code"] == "expired"
    assert never.status_code == 404  # an id minted just now was never there
    assert listed["jobs"] == []
    assert before["jobs"] == {"succeeded": 6, "failed": 1}
    assert _stats_view(after) == _stats_view(before)
    assert _job_counts(scraped_after) == _job_counts(scraped_before) == {"succeeded": 6, "failed": 1}


def test_irq_db_prune_exports_then_deletes_and_the_counts_stay(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env={"IRQ_ROLLUP_LAG_S": "0"})
    try:
        with stack.client() as http:
            ids = [
                http.post("/v1/jobs", json={"prompt": f"A function returning {i}"}).json()["id"]
                for i in range(3)
            ]
            for job_id in ids:
                stack.wait_for(http, job_id, 60)
            before = http.get("/v1/stats", params={"window": 3600}).json()
            exported = tmp_path / "jobs.jsonl"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "cli",
                    "db",
                    "prune",
                    "--older-than-days",
                    "0",
                    "--export",
                    str(exported),
                ],
                env={**os.environ, **stack.env, "IRQ_ROLLUP_LAG_S": "0"},
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            after = http.get("/v1/stats", params={"window": 3600}).json()
            missing = http.get(f"/v1/jobs/{ids[0]}")
    finally:
        stop_stack(stack)
        inference.service.stop()
    assert done.returncode == 0, done.stderr
    assert "pruned 3 job(s)" in done.stdout
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(ids)
    assert all(line["status"] == "succeeded" and line["result"] for line in lines)
    assert missing.status_code == 404  # kept forever by default here: a manual prune, not an expiry
    assert _stats_view(after) == _stats_view(before) and before["jobs"] == {"succeeded": 3}


def test_rollups_merged_into_hours_answer_the_same_counts_and_close_percentiles(sqlite_url: str) -> None:
    """Jobs finished over two days: the minutes older than the horizon merge into hours, and every window's
    counts stay exact, its percentiles within the buckets' 2.2%."""
    from irq.migrate import upgrade

    upgrade(sqlite_url)
    db = Database(sqlite_url)
    create_key(db, "owner")
    new = NewJob("p", {}, "m", "guidance", 64, 0.3, 0.95, 5, 60.0, 3)
    now = utcnow()
    rows = []
    for i in range(600):
        finished = now - timedelta(minutes=5 * i + 2)
        row = job_row(1, new, finished - timedelta(seconds=5))
        status = "failed" if i % 7 == 0 else "succeeded"
        row.update(
            status=status,
            finished_at=finished,
            total_ms=100.0 + i,
            error_code="timeout" if i % 7 == 0 else None,
        )
        rows.append(row)
    JobStore(db).insert(rows)
    rollups.roll_up(db, lag_s=0)
    hours = rollups.compact(db, max_periods=1000)
    assert hours > 0
    for window_h in (1, 24, 24 * 30):
        since = now - timedelta(hours=window_h)
        window = rollups.finished_in(db, since)
        # A window's start is rounded down to its rollups' period: an hour, past the minutes' horizon.
        start = since if window_h < 2 else since.replace(minute=0, second=0, microsecond=0)
        expect = [r for r in rows if r["finished_at"] >= start]
        counted = {
            s: sum(g.jobs for k, g in window.groups.items() if k.status == s) for s in ("succeeded", "failed")
        }
        assert counted == {
            "succeeded": sum(r["status"] == "succeeded" for r in expect),
            "failed": sum(r["status"] == "failed" for r in expect),
        }
        won = rollups.Timing()
        for key, group in window.groups.items():
            if key.status == "succeeded":
                won.merge(group.timing("total_ms"))
        exact = sorted(r["total_ms"] for r in expect if r["status"] == "succeeded")
        assert won.quantile(0.5) == pytest.approx(exact[(len(exact) + 1) // 2 - 1], rel=0.022)
    db.dispose()


def _table_bytes(db: Database, *tables: str) -> int:
    with db.engine.connect() as conn:
        return sum(
            int(conn.execute(text("SELECT pg_relation_size(:t)"), {"t": t}).scalar_one()) for t in tables
        )


def test_the_keepers_tables_do_not_grow_as_it_merges_minutes_into_hours(postgres_url: str) -> None:
    """Ten hours of the records keeper, an hour at a time: each hour's minutes are rolled up, then merged
    into their hour, and the rows left dead on PostgreSQL are reclaimed by the keeper's VACUUM (autovacuum
    may be off, or late for a table this small), so the tables stay the size of what they hold."""
    from irq.migrate import upgrade

    upgrade(postgres_url)
    db = Database(postgres_url)
    create_key(db, "owner")
    settings = Settings(database_url=postgres_url, rollup_lag_s=0, retention_days=0)
    new = NewJob("p", {}, "m", "guidance", 64, 0.3, 0.95, 5, 60.0, 3)
    start = utcnow().replace(minute=0, second=0, microsecond=0) - timedelta(hours=12)
    rows = []
    for minute in range(12 * 60):
        finished = start + timedelta(minutes=minute, seconds=30)
        for status in ("succeeded", "failed"):
            row = job_row(1, new, finished - timedelta(seconds=5))
            row.update(status=status, finished_at=finished, total_ms=100.0 + minute)
            rows.append(row)
    JobStore(db).insert(rows)
    sizes = []
    for hour in range(3, 13):
        retention.keep(db, settings, now=start + timedelta(hours=hour))
        sizes.append(_table_bytes(db, "job_rollups", "job_totals"))
    counted = rollups.finished_in(db, start)
    assert sum(g.jobs for g in counted.groups.values()) == 2 * 12 * 60
    # Each hour leaves 120 minute rows behind as two hour rows; kept, those dead rows would double the
    # tables from the third hour to the last.
    assert sizes[-1] < 1.5 * sizes[0], sizes
    db.dispose()


def test_the_rollup_rows_a_process_keeps_follow_new_minutes_merges_and_a_reset(database_url: str) -> None:
    """One `Database` read again and again, as a read process does (irq/store/rollup_cache.py): minutes
    rolled up after its first read are counted, minutes merged into hours are not counted twice, and after
    every rollup is forgotten and rolled up again (new ids, or on SQLite the same ones) the counts hold."""
    from irq.migrate import upgrade

    upgrade(database_url)
    db = Database(database_url)
    create_key(db, "owner")
    new = NewJob("p", {}, "m", "guidance", 64, 0.3, 0.95, 5, 60.0, 3)
    start = utcnow().replace(second=0, microsecond=0) - timedelta(hours=5)
    rows = []
    for minute in range(5 * 60):
        finished = start + timedelta(minutes=minute, seconds=30)
        row = job_row(1, new, finished - timedelta(seconds=5))
        row.update(status="succeeded", finished_at=finished, total_ms=100.0 + minute)
        rows.append(row)
    JobStore(db).insert(rows)

    def counted() -> int:
        return sum(g.jobs for g in rollups.finished_in(db, start).groups.values())

    rollups.roll_up(db, lag_s=0, now=start + timedelta(hours=2))
    assert counted() == len(rows)  # the rollups of two hours, then the jobs after the mark
    rollups.roll_up(db, lag_s=0)
    assert counted() == len(rows)
    assert rollups.compact(db, max_periods=1000) > 0
    assert counted() == len(rows)
    rollups.reset(db)
    rollups.roll_up(db, lag_s=0)
    assert counted() == len(rows)
    db.dispose()
