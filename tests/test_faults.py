"""Nothing lost: real processes are killed or stopped mid-run, and every accepted job still ends once.

The inference side is `tests.fault_service` (irq's service app over the simulated engine, faults scripted
per prompt, calls counted), so a test can tell a repeated inference call from a repeated result.
Tests that kill Redis or PostgreSQL start instances of their own on free ports.
Set IRQ_RELIABILITY_REPORT=FILE to append each scenario's figures to FILE as JSON lines
(docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from irq.broker import TASK_RUN_JOB, make_celery
from irq.clock import utcnow
from irq.ir_schema import ir_json_schema
from irq.settings import Settings
from irq.store.db import Database
from irq.store.jobs import JobStore
from irq.store.models import Job
from irq.submission import NewJob, job_row
from tests.procs import PostgresServer, RedisServer, wait_until
from tests.support import FaultService, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)

# Short leases and sweeps so that recovery shows within a test's time; the defaults are 30 s and 15 s.
FAST_RECOVERY = {
    "IRQ_LEASE_S": "3",
    "IRQ_SWEEP_INTERVAL_S": "1",
    "IRQ_SWEEP_STALE_S": "3",
    "IRQ_RETRY_BACKOFF_S": "0.2",
    "IRQ_RETRY_BACKOFF_MAX_S": "1",
}


def record(scenario: str, **figures: object) -> None:
    print(f"\n{scenario}: {figures}")
    path = os.environ.get("IRQ_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"scenario": scenario, **figures}) + "\n")


def submit(http: httpx.Client, prompt: str, **fields: object) -> str:
    response = http.post("/v1/jobs", json={"prompt": prompt, **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def jobs_of(db: Database, ids: list[str]) -> dict[str, Job]:
    with db.session() as s:
        return {job.id: job for job in s.scalars(select(Job).where(Job.id.in_(ids)))}


def status_counts(db: Database, ids: list[str]) -> Counter[str]:
    return Counter(job.status for job in jobs_of(db, ids).values())


def wait_all(db: Database, ids: list[str], status: str, timeout_s: float) -> None:
    wait_until(
        lambda: status_counts(db, ids)[status] == len(ids),
        timeout_s,
        f"{len(ids)} jobs {status} (now {dict(status_counts(db, ids))})",
        interval_s=0.2,
    )


@pytest.fixture
def fault_inference(tmp_path: Path) -> Iterator[FaultService]:
    service = start_fault_service(tmp_path)
    yield service
    service.service.stop()


def test_kill_9_of_a_worker_with_200_jobs_in_flight_loses_none(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    # Long enough that the worker has all 200 running before the first finishes, even on a loaded machine.
    inference = start_fault_service(tmp_path, latency_s=15.0)
    stack = start_stack(
        postgres_url,
        redis_url,
        inference.url,
        tmp_path,
        env={**FAST_RECOVERY, "IRQ_WORKER_CONCURRENCY": "200"},
        worker=False,
    )
    try:
        with stack.client() as http:
            ids = [submit(http, f"job {i}: a function that returns {i}") for i in range(200)]
        prompts = {job_id: f"job {i}: a function that returns {i}" for i, job_id in enumerate(ids)}
        doomed = stack.start_worker("worker-1")
        wait_until(lambda: status_counts(stack.db, ids)["running"] == 200, 60, "200 jobs running")
        in_flight = {job_id for job_id, job in jobs_of(stack.db, ids).items() if job.status == "running"}
        doomed.kill()
        killed_at = time.monotonic()
        stack.start_worker("worker-2")
        wait_all(stack.db, ids, "succeeded", 120)
        recovered_s = time.monotonic() - killed_at

        calls = inference.calls()
        repeated = {job_id for job_id in ids if calls.get(prompts[job_id], 0) > 1}
        assert all(calls.get(prompts[job_id], 0) in (1, 2) for job_id in ids), calls
        assert repeated <= in_flight  # only a job that was in flight may have been generated twice
        jobs = jobs_of(stack.db, ids)
        assert all(job.result is not None and job.attempts <= 2 for job in jobs.values())
        record(
            "kill -9 of a worker, 200 jobs in flight",
            jobs=200,
            lost=200 - sum(job.status == "succeeded" for job in jobs.values()),
            inference_calls=sum(calls.get(p, 0) for p in prompts.values()),
            repeated_calls=len(repeated),
            recovered_s=round(recovered_s, 1),
        )
    finally:
        stop_stack(stack)
        inference.service.stop()


def test_a_job_whose_worker_died_fails_when_out_of_attempts(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path, latency_s=30.0)
    stack = start_stack(
        sqlite_url, redis_url, inference.url, tmp_path, env={**FAST_RECOVERY, "IRQ_MAX_ATTEMPTS": "1"}
    )
    try:
        with stack.client() as http:
            job_id = submit(http, "a function that never comes back")
            wait_until(lambda: jobs_of(stack.db, [job_id])[job_id].status == "running", 60, "job running")
            stack.services[1].kill()
            stack.start_worker("worker-2")
            job = stack.wait_for(http, job_id, 60)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "worker_lost"
        assert "gave up after 1 attempt" in job["error"]["message"]
    finally:
        stop_stack(stack)
        inference.service.stop()


def test_redis_restart_with_500_jobs_queued_loses_none(postgres_url: str, tmp_path: Path) -> None:
    broker = RedisServer()
    broker.start()
    inference = start_fault_service(tmp_path)
    stack = start_stack(
        postgres_url,
        broker.url + "/0",
        inference.url,
        tmp_path,
        env={**FAST_RECOVERY, "IRQ_WORKER_CONCURRENCY": "32"},
        worker=False,
    )
    try:
        with stack.client() as http:
            ids = [submit(http, f"queued job {i}") for i in range(500)]
            assert stack.queue_length() == 500

            broker.kill()
            refused = http.post("/v1/jobs", json={"prompt": "submitted while Redis is down"})
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "broker_unavailable"
            ready = http.get("/readyz")
            assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
            broker.start()
            restarted_at = time.monotonic()
        stack.redis.connection_pool.disconnect()  # its connections died with the old server
        assert stack.queue_length() == 0  # the restart lost every message
        with stack.db.session() as s:
            assert s.query(Job).count() == 500  # the refused job was not stored

        # Duplicate deliveries of 50 jobs before any worker runs.
        producer = make_celery(Settings(redis_url=broker.url + "/0"))
        for job_id in ids[:50]:
            producer.send_task(TASK_RUN_JOB, args=[job_id])

        stack.start_worker()
        wait_all(stack.db, ids, "succeeded", 180)
        recovered_s = time.monotonic() - restarted_at
        calls = inference.calls()
        assert all(calls.get(f"queued job {i}") == 1 for i in range(500)), calls

        # Duplicates of messages already delivered change nothing either.
        for job_id in ids[:50]:
            producer.send_task(TASK_RUN_JOB, args=[job_id])
        wait_until(lambda: stack.queue_length() == 0, 30, "the duplicates to be consumed")
        time.sleep(1)
        assert inference.calls() == calls
        assert status_counts(stack.db, ids) == {"succeeded": 500}
        record(
            "Redis restarted (no persistence) with 500 jobs queued",
            jobs=500,
            lost=0,
            duplicate_messages=100,
            duplicate_inference_calls=sum(calls.values()) - 500,
            recovered_s=round(recovered_s, 1),
        )
        producer.close()
    finally:
        stop_stack(stack)
        inference.service.stop()
        broker.kill()


def test_postgres_restart_during_a_run_loses_none(redis_url: str, tmp_path: Path) -> None:
    try:
        store = PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    store.start()
    inference = start_fault_service(tmp_path, latency_s=0.5)
    stack = start_stack(store.url, redis_url, inference.url, tmp_path, env={"IRQ_WORKER_CONCURRENCY": "8"})
    try:
        with stack.client() as http:
            ids = [submit(http, f"job {i} during a database restart") for i in range(100)]
            wait_until(lambda: status_counts(stack.db, ids)["succeeded"] >= 10, 60, "10 jobs done")
            store.stop()
            stopped_at = time.monotonic()
            polled = http.get(f"/v1/jobs/{ids[0]}")
            submitted = http.post("/v1/jobs", json={"prompt": "submitted while the store is down"})
            ready = http.get("/readyz")
            time.sleep(3)
            store.start()
            down_s = time.monotonic() - stopped_at
        assert polled.status_code == 503 and polled.json()["error"]["code"] == "store_unavailable"
        assert submitted.status_code == 503
        assert polled.headers["Retry-After"]
        assert ready.status_code == 503 and int(ready.headers["Retry-After"]) > 0
        wait_all(stack.db, ids, "succeeded", 120)
        recovered_s = time.monotonic() - stopped_at
        calls = inference.calls()
        record(
            "PostgreSQL restarted during a run of 100 jobs",
            jobs=100,
            lost=0,
            store_down_s=round(down_s, 1),
            duplicate_inference_calls=sum(calls.values()) - 100,
            all_done_after_stop_s=round(recovered_s, 1),
        )
    finally:
        stop_stack(stack)
        inference.service.stop()
        store.destroy()


def test_inference_faults_retry_fail_or_time_out_as_they_should(
    sqlite_url: str, redis_url: str, fault_inference: FaultService, tmp_path: Path
) -> None:
    stack = start_stack(
        sqlite_url, redis_url, fault_inference.url, tmp_path,
        env={**FAST_RECOVERY, "IRQ_WORKER_CONCURRENCY": "1"},
    )  # fmt: skip
    try:
        with stack.client() as http:
            flaky = submit(http, "[faults: 503, 503] retried twice")
            throttled = submit(http, "[faults: 429] throttled once")
            broken = submit(http, "[faults: 500, 502, 503] fails every attempt")
            refused = submit(http, "[faults: 400] refused")
            hung = submit(http, "[faults: hang] never answers", timeout=3)
            after = submit(http, "submitted after the hanging one")
            jobs = {j: stack.wait_for(http, j, 90) for j in (flaky, throttled, broken, refused)}
            hung_job = stack.wait_for(http, hung, 90)
            after_job = stack.wait_for(http, after, 90)
        assert jobs[flaky]["status"] == "succeeded" and jobs[flaky]["attempts"] == 3
        assert jobs[throttled]["status"] == "succeeded" and jobs[throttled]["attempts"] == 2
        assert jobs[broken]["status"] == "failed" and jobs[broken]["attempts"] == 3
        assert jobs[broken]["error"]["code"] == "injected_503"
        assert "gave up after 3 attempt(s)" in jobs[broken]["error"]["message"]
        assert jobs[refused]["status"] == "failed" and jobs[refused]["attempts"] == 1  # permanent: no retry
        assert jobs[refused]["error"] == {"code": "injected_400", "message": "HTTP 400: injected HTTP 400"}
        assert hung_job["status"] == "failed" and hung_job["error"]["code"] == "timeout"
        started, finished = (
            datetime.fromisoformat(hung_job["timings"][k]) for k in ("started_at", "finished_at")
        )
        assert (finished - started).total_seconds() < 3 + 2  # failed at its deadline, not later
        # One worker slot: the job behind the hanging one ran once the deadline freed the slot.
        assert after_job["status"] == "succeeded"
    finally:
        stop_stack(stack)


def test_jobs_wait_for_an_unreachable_endpoint_and_fail_once_it_stays_down_past_their_timeout(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    from tests.procs import free_port

    closed = f"http://127.0.0.1:{free_port()}/generate"  # nothing listens there: connection refused
    stack = start_stack(sqlite_url, redis_url, closed, tmp_path, env=FAST_RECOVERY)
    try:
        with stack.client() as http:
            short = http.post("/v1/jobs", json={"prompt": "no inference service", "timeout": 4}).json()
            long = http.post("/v1/jobs", json={"prompt": "no inference service", "timeout": 600}).json()
            failed = stack.wait_for(http, short["id"], 60)
            waiting = http.get(f"/v1/jobs/{long['id']}").json()
        # The job never reached an endpoint: no attempt was spent, and it failed only once the endpoint had
        # been down, and the job queued, for longer than its timeout.
        assert (failed["status"], failed["attempts"]) == ("failed", 0)
        assert failed["error"]["code"] == "endpoint_unavailable"
        created = datetime.fromisoformat(failed["timings"]["created_at"])
        assert (datetime.fromisoformat(failed["timings"]["finished_at"]) - created).total_seconds() >= 4
        assert (waiting["status"], waiting["attempts"]) == ("queued", 0)
    finally:
        stop_stack(stack)


def test_cancel_of_a_running_job_survives_its_late_result(
    sqlite_url: str, redis_url: str, fault_inference: FaultService, tmp_path: Path
) -> None:
    stack = start_stack(sqlite_url, redis_url, fault_inference.url, tmp_path)
    prompt = "[faults: sleep=3] answers late"
    try:
        with stack.client() as http:
            job_id = submit(http, prompt)
            wait_until(lambda: jobs_of(stack.db, [job_id])[job_id].status == "running", 60, "job running")
            # Cancelled with its request in flight (a job cancelled before its request went out makes none).
            wait_until(lambda: fault_inference.calls().get(prompt) == 1, 10, "the inference call")
            cancelled = http.post(f"/v1/jobs/{job_id}/cancel").json()
            assert cancelled["status"] == "cancelled"
            time.sleep(4)  # the late result has come back by now, unless the worker dropped the request
            job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled"
        assert job["result"] is None
        assert fault_inference.calls()[prompt] == 1
    finally:
        stop_stack(stack)


def test_retry_backoff_is_exponential_with_full_jitter() -> None:
    from irq.retry import RetryPolicy

    settings = Settings()
    backoff_s = RetryPolicy.from_settings(settings).delay_s
    for attempt in (1, 2, 3, 4, 8):
        cap = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1))
        waits = [backoff_s(attempt) for _ in range(500)]
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > 0.8 * cap and min(waits) < 0.2 * cap  # spread over the whole range


def test_jobs_delivered_to_a_worker_that_died_before_claiming_them_are_recovered_within_a_lease(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The worker receives 20 messages while the store is locked (its claims wait), and is killed: Redis
    holds the messages as delivered and unacknowledged, and would redeliver them only after its visibility
    timeout (an hour). The sweeper sends them again once they are a lease old."""
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=FAST_RECOVERY, worker=False)
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        with stack.client() as http:
            ids = [submit(http, f"delivered job {i}: a function that returns {i}") for i in range(20)]
        lock.execute("BEGIN EXCLUSIVE")  # every claim now waits for the store
        doomed = stack.start_worker("worker-1")
        wait_until(lambda: stack.redis.hlen("unacked") == 20, 60, "20 messages delivered to the worker")
        doomed.kill()
        lock.execute("ROLLBACK")
        killed_at = time.monotonic()
        assert status_counts(stack.db, ids) == {"queued": 20}  # delivered, never claimed
        stack.start_worker("worker-2")
        wait_all(stack.db, ids, "succeeded", 60)
        recovered_s = time.monotonic() - killed_at
        calls = inference.calls()
        assert all(calls.get(f"delivered job {i}: a function that returns {i}") == 1 for i in range(20)), (
            calls
        )
        record("kill -9 of a worker holding 20 delivered, unclaimed messages", jobs=20, lost=0,
               inference_calls=sum(calls.values()), recovered_s=round(recovered_s, 1))  # fmt: skip
    finally:
        lock.close()
        stop_stack(stack)
        inference.service.stop()


def test_a_claim_whose_reply_was_lost_is_not_kept_alive_by_the_live_worker(
    sqlite_url: str, redis_url: str, fault_inference: FaultService, tmp_path: Path
) -> None:
    """The claim's UPDATE committed but its answer never reached the worker (the connection dropped): the
    job is `running` under the live worker's name with no thread on it. Its lease must run out, so that the
    sweeper sends it again, instead of being renewed with the worker's other jobs."""
    stack = start_stack(sqlite_url, redis_url, fault_inference.url, tmp_path, env=FAST_RECOVERY)
    try:
        stack.wait_workers(1)
        worker = f"test-worker#{stack.services[-1].proc.pid}"  # `irq worker` of one endpoint: one process
        settings = Settings(database_url=sqlite_url, redis_url=redis_url)
        prompt = "a claim whose reply was lost"
        new = NewJob(prompt, ir_json_schema(), settings.default_model, "guidance", 64, 0.3, 0.95, 5, 60.0, 3)
        now = utcnow()
        row = job_row(1, new, now) | dict(
            status="running", attempts=1, worker=worker, started_at=now, first_started_at=now,
            lease_expires_at=now + timedelta(seconds=3),
        )  # fmt: skip
        JobStore(stack.db).insert([row])
        with stack.client() as http:
            job = stack.wait_for(http, str(row["id"]), 30)
        assert job["status"] == "succeeded" and job["attempts"] == 2  # re-queued by the sweeper, run once
        assert fault_inference.calls()[prompt] == 1
    finally:
        stop_stack(stack)
