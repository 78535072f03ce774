"""Broker blips: the broker's connections drop (Redis `CLIENT KILL`, a Redis restart, RabbitMQ closing the
connections of a vhost) while jobs longer than a lease run, and every job still runs once.

A dropped connection gives the worker's unacknowledged messages back to the queue, so the jobs it is running
are delivered again, often to the same worker: that second delivery must be dropped without touching the
running attempt's lease. The worker must reconnect on every path and resume consuming within seconds, and
never exit over it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from irq.broker import make_celery
from irq.settings import Settings
from tests.procs import RedisServer, wait_until
from tests.support import Stack, start_fault_service, start_stack, stop_stack
from tests.test_faults import FAST_RECOVERY, jobs_of, record, status_counts, submit, wait_all
from tests.test_rabbitmq import amqp_url

__all__ = ["amqp_url"]  # the fixture, for the RabbitMQ case

pytestmark = pytest.mark.timeout(300)

LONG_S = 25  # each long job's inference call: many leases (3 s) long
BLIP_ENV = {**FAST_RECOVERY, "IRQ_WORKER_CONCURRENCY": "20"}


def _attempt_ends(stack: Stack) -> dict[str, int]:
    """How the worker's deliveries ended, as Celery logged them (`succeeded`, `skipped`, `discarded` …)."""
    log = (stack.log_dir / "worker.log").read_text() if stack.log_dir else ""
    ends: dict[str, int] = {}
    for end in re.findall(r"Task irq\.run_job\[[^\]]+\] succeeded in [\d.e-]+s: '(\w+)'", log):
        ends[end] = ends.get(end, 0) + 1
    return ends


def _progress(stack: Stack, ids: list[str], more: int) -> Callable[[], bool]:
    """A check: `more` jobs of `ids` have succeeded since it was made."""
    target = status_counts(stack.db, ids)["succeeded"] + more
    return lambda: status_counts(stack.db, ids)["succeeded"] >= target


def _blip_during_long_jobs(
    stack: Stack, calls: Callable[[], dict[str, int]], blip: Callable[[], None], scenario: str
) -> None:
    """10 jobs of `LONG_S` running when `blip()` drops the worker's broker connection, 20 short jobs sent
    right after: the short ones finish while the long ones still run, and every job runs once."""
    long_prompts = [f"[faults: sleep={LONG_S}] long job {i}" for i in range(10)]
    short_prompts = [f"short job {i} after the blip" for i in range(20)]
    with stack.client() as http:
        long_ids = [submit(http, p) for p in long_prompts]
        wait_until(lambda: status_counts(stack.db, long_ids)["running"] == 10, 60, "10 long jobs running")
        wait_until(lambda: sum(calls().get(p, 0) for p in long_prompts) == 10, 30, "their inference calls")
        blip()
        blip_at = time.monotonic()
        short_ids = [submit(http, p) for p in short_prompts]
    wait_all(stack.db, short_ids, "succeeded", 60)
    resumed_s = time.monotonic() - blip_at
    long_running = status_counts(stack.db, long_ids)["running"]
    wait_all(stack.db, long_ids, "succeeded", LONG_S + 60)
    made = calls()
    jobs = jobs_of(stack.db, long_ids + short_ids)
    ends = _attempt_ends(stack)
    record(
        scenario,
        jobs=30,
        lost=0,
        inference_calls=sum(made.get(p, 0) for p in long_prompts + short_prompts),
        discarded=ends.get("discarded", 0),
        short_jobs_done_after_s=round(resumed_s, 1),
    )
    assert {p: made.get(p, 0) for p in long_prompts + short_prompts} == dict.fromkeys(
        long_prompts + short_prompts, 1
    ), "a job ran twice or never"
    assert all(job.attempts == 1 and job.error_code is None for job in jobs.values())
    assert ends.get("discarded", 0) == 0 and ends.get("succeeded") == 30, ends
    # The worker consumed again at once: the short jobs were done while the long ones still ran.
    assert long_running == 10, f"the short jobs took {resumed_s:.1f} s after the blip"


def test_a_redis_connection_reset_during_jobs_longer_than_the_lease_runs_each_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    broker = RedisServer()
    broker.start()
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, broker.url + "/0", inference.url, tmp_path, env=BLIP_ENV)
    try:
        stack.wait_workers(1)

        def blip() -> None:
            killed = stack.redis.execute_command("CLIENT", "KILL", "TYPE", "normal")  # type: ignore[no-untyped-call]
            assert int(killed) > 0  # every client but this one: the worker's, the API's

        _blip_during_long_jobs(
            stack, inference.calls, blip, "Redis connections reset, 10 jobs of 25 s running"
        )
    finally:
        stop_stack(stack)
        inference.service.stop()
        broker.kill()


def test_a_rabbitmq_connection_close_during_jobs_longer_than_the_lease_runs_each_once(
    sqlite_url: str, redis_url: str, amqp_url: str, tmp_path: Path
) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    inference = start_fault_service(tmp_path)
    env = {**BLIP_ENV, "IRQ_BROKER_URL": amqp_url}
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=env)
    try:
        stack.wait_workers(1)

        def blip() -> None:
            subprocess.run(
                ["rabbitmqctl", "close_all_connections", "--vhost", vhost, "--limit", "100", "a test's blip"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip

        _blip_during_long_jobs(
            stack, inference.calls, blip, "RabbitMQ connections closed, 10 jobs of 25 s running"
        )
    finally:
        stop_stack(stack)
        inference.service.stop()


def test_redis_restarted_ten_times_under_load_never_ends_the_worker(sqlite_url: str, tmp_path: Path) -> None:
    """Each restart (no persistence) drops every connection and every message; the worker reconnects each
    time, acknowledges on the old connection fail as connection errors, and the sweeper sends the lost
    messages again: the worker never stops, and every job runs once."""
    broker = RedisServer()
    broker.start()
    inference = start_fault_service(tmp_path, latency_s=2.0)
    stack = start_stack(sqlite_url, broker.url + "/0", inference.url, tmp_path, env=BLIP_ENV)
    worker = stack.services[-1]
    prompts = [f"restart job {i}: a function that returns {i}" for i in range(400)]
    try:
        with stack.client() as http:
            ids = [submit(http, p) for p in prompts]
        restarts = 0
        while restarts < 10 and status_counts(stack.db, ids)["succeeded"] < len(ids) - 60:
            # Restart while jobs run and finish, so that acknowledgements meet the closed connection.
            wait_until(_progress(stack, ids, 10), 60, "10 more jobs to finish")
            broker.kill()
            broker.start()
            restarts += 1
            assert worker.proc.poll() is None, f"the worker exited after restart {restarts}"
        wait_all(stack.db, ids, "succeeded", 180)
        calls = inference.calls()
        log = (tmp_path / "worker.log").read_text()
        assert worker.proc.poll() is None, "the worker exited"
    finally:
        stop_stack(stack)
        inference.service.stop()
        broker.kill()
    assert restarts == 10
    assert "Unrecoverable error" not in log
    assert {p: calls.get(p, 0) for p in prompts} == dict.fromkeys(prompts, 1), "a job ran twice or never"
    record("Redis restarted 10 times under load", jobs=400, lost=0, restarts=10,
           inference_calls=sum(calls.get(p, 0) for p in prompts), worker_exits=0)  # fmt: skip


@pytest.mark.parametrize("closing", ["close", "collect"])
def test_a_command_on_a_channel_whose_connection_closed_fails_as_a_connection_error(
    redis_url: str, closing: str
) -> None:
    """What a worker does after a reconnect: objects made on the old connection (the event dispatcher a
    running job's request holds, the channel that delivered its message) send on it. That must fail as a
    connection error, which Celery logs or retries, not as an AttributeError (`… 'hostname'` after
    Celery's `collect`, `… 'client'` after a close), which stopped the worker as "Unrecoverable error"."""
    app = make_celery(Settings(redis_url=redis_url))
    try:
        conn = app.connection_for_write()
        errors = conn.connection_errors
        producer = conn.Producer()
        producer.publish({"job": 1}, routing_key="irq-test-closed-channel")
        getattr(conn, closing)()
        with pytest.raises(errors):
            producer.publish({"job": 2}, routing_key="irq-test-closed-channel")
    finally:
        app.close()


def test_a_worker_that_stops_on_an_error_exits_non_zero(redis_url: str, tmp_path: Path) -> None:
    """A broker URL whose database is not a number makes Celery's consumer fail with an error it does not
    retry ("Unrecoverable error", as the `hostname` one was); `irq worker` then exits non-zero, so that its
    supervisor (compose.yaml's restart policy) starts it again. Before, it exited 0."""
    env = {
        **os.environ,
        "IRQ_DATABASE_URL": f"sqlite:///{tmp_path / 'irq.db'}",
        "IRQ_REDIS_URL": redis_url,
        "IRQ_BROKER_URL": redis_url.rsplit("/", 1)[0] + "/not-a-number",
    }
    run = subprocess.run(
        [sys.executable, "-m", "cli", "worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "Unrecoverable error" in run.stderr + run.stdout, run.stderr[-2000:]
    assert run.returncode == 1


def test_a_second_delivery_ending_leaves_the_first_one_tracked() -> None:
    """The unit under the first two tests: the worker renews the leases of the job ids `running_ids`
    gives, and two deliveries of one job are two holds on it."""
    from worker.tasks import _Process

    _Process.track("job-1", True)
    _Process.track("job-1", True)  # the duplicate delivery
    _Process.track("job-1", False)  # … finds the job running and ends
    assert _Process.running_ids() == ["job-1"]
    _Process.track("job-1", False)
    assert _Process.running_ids() == []
