"""RabbitMQ as Celery's broker (`IRQ_BROKER_URL=amqp://…`), Redis kept for the rest: the pipeline, kill -9
of a worker with jobs in flight, and a broker restart with jobs queued, each job run once and none lost.

Each test has a vhost of its own on the machine's RabbitMQ (127.0.0.1:5672, guest/guest), made and
deleted with `rabbitmqctl`; the restart test restarts the RabbitMQ application (`stop_app`/`start_app`),
which every vhost of that server shares for its ~3 s.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import wait_until
from tests.support import start_fault_service, start_stack, stop_stack
from tests.test_faults import FAST_RECOVERY, jobs_of, record, status_counts, submit, wait_all

pytestmark = pytest.mark.timeout(300)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not found (Debian's rabbitmq-server)")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        pytest.skip("no RabbitMQ on 127.0.0.1:5672")
    vhost = f"irq-test-{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


def test_the_pipeline_runs_every_job_once_on_rabbitmq(
    sqlite_url: str, redis_url: str, amqp_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env={"IRQ_BROKER_URL": amqp_url})
    try:
        with stack.client() as http:
            prompts = [f"rabbit job {i}: a function that returns {i}" for i in range(30)]
            ids = [submit(http, p, priority=i % 10) for i, p in enumerate(prompts)]
            batch = http.post("/v1/batches", json=[{"prompt": f"rabbit batch {i}"} for i in range(20)]).json()
            for job_id in ids:
                assert stack.wait_for(http, job_id, 60)["status"] == "succeeded"
            wait_until(
                lambda: http.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed",
                60,
                "the batch",
            )
            counts = http.get(f"/v1/batches/{batch['id']}").json()["counts"]
            ready = httpx.get(stack.api + "/readyz", timeout=10)
            scraped = httpx.get(stack.api + "/metrics", timeout=10).text
        calls = inference.calls()
    finally:
        stop_stack(stack)
        inference.service.stop()
    assert counts == {"succeeded": 20}
    assert all(calls.get(p) == 1 for p in prompts) and all(
        calls.get(f"rabbit batch {i}") == 1 for i in range(20)
    )
    assert ready.status_code == 200
    assert (
        'irq_queue_depth{backend="guidance",endpoint="default",model="SmolLM2-135M-Instruct"} 0.0' in scraped
    )


def test_kill_9_of_a_worker_on_rabbitmq_loses_none(
    sqlite_url: str, redis_url: str, amqp_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path, latency_s=8.0)
    env = {**FAST_RECOVERY, "IRQ_BROKER_URL": amqp_url, "IRQ_WORKER_CONCURRENCY": "40"}
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=env, worker=False)
    try:
        prompts = [f"rabbit kill job {i}: a function that returns {i}" for i in range(60)]
        with stack.client() as http:
            ids = [submit(http, p) for p in prompts]
        doomed = stack.start_worker("worker-1")
        wait_until(lambda: status_counts(stack.db, ids)["running"] == 40, 60, "40 jobs running")
        doomed.kill()
        killed_at = time.monotonic()
        stack.start_worker("worker-2")
        wait_all(stack.db, ids, "succeeded", 120)
        recovered_s = time.monotonic() - killed_at
        calls = inference.calls()
        jobs = jobs_of(stack.db, ids)
    finally:
        stop_stack(stack)
        inference.service.stop()
    assert all(calls.get(p, 0) in (1, 2) for p in prompts), calls
    assert sum(calls.get(p, 0) == 2 for p in prompts) <= 40  # only a job in flight may run twice
    assert all(job.result is not None for job in jobs.values())
    made = sum(calls.get(p, 0) for p in prompts)
    scenario = "RabbitMQ: kill -9 of a worker, 40 jobs in flight and 20 queued"
    record(scenario, jobs=60, lost=0, inference_calls=made, recovered_s=round(recovered_s, 1))


def test_a_rabbitmq_restart_with_jobs_queued_loses_none(
    sqlite_url: str, redis_url: str, amqp_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    env = {**FAST_RECOVERY, "IRQ_BROKER_URL": amqp_url}
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=env, worker=False)
    try:
        prompts = [f"rabbit restart job {i}: a function that returns {i}" for i in range(200)]
        with stack.client() as http:
            ids = [submit(http, p) for p in prompts]
        _rabbitmqctl("stop_app")
        try:
            with stack.client() as http:
                refused = http.post("/v1/jobs", json={"prompt": "while the broker is down"})
        finally:
            _rabbitmqctl("start_app")
        stack.start_worker("worker-1")
        wait_all(stack.db, ids, "succeeded", 120)
        calls = inference.calls()
    finally:
        stop_stack(stack)
        inference.service.stop()
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "broker_unavailable"
    assert all(calls.get(p) == 1 for p in prompts), "a job ran twice or never"
    record("RabbitMQ restart with 200 jobs queued", jobs=200, lost=0, inference_calls=sum(calls.values()))
