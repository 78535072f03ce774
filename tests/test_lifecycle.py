"""Every move into a terminal status wakes the clients long-polling the job at once, and a broker that is
down at submit keeps nothing of a refused submit and loses nothing of an accepted one.

The API re-reads the store only every 30 s here (`IRQ_LONG_POLL_RECHECK_S`), so a long-poll that answers
within half a second of the job's `finished_at` was woken by the job's finished notice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from irq.store.models import Batch, Job
from tests.procs import RedisServer, wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)

RECHECK = {"IRQ_LONG_POLL_RECHECK_S": "30", "IRQ_MAX_WAIT_S": "60"}
WOKEN_WITHIN_S = 0.5  # well under the default 1-s recheck, and sixty times under this API's


@pytest.fixture
def inference(tmp_path: Path) -> Iterator[FaultService]:
    service = start_fault_service(tmp_path)
    yield service
    service.service.stop()


@pytest.fixture
def stack(sqlite_url: str, redis_url: str, inference: FaultService, tmp_path: Path) -> Iterator[Stack]:
    env = {
        **RECHECK,
        "IRQ_LEASE_S": "2",
        "IRQ_SWEEP_INTERVAL_S": "0.5",
        "IRQ_RETRY_BACKOFF_S": "0.1",
        "IRQ_RETRY_BACKOFF_MAX_S": "0.2",
    }
    running = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=env)
    yield running
    stop_stack(running)


class LongPoll:
    """`GET /v1/jobs/{id}?wait=55` in a thread of its own, started before the job finishes."""

    def __init__(self, stack: Stack, job_id: str) -> None:
        self.answer: dict[str, Any] = {}
        self.answered_at = 0.0
        self._thread = threading.Thread(target=self._poll, args=(stack, job_id), daemon=True)
        self._thread.start()

    def _poll(self, stack: Stack, job_id: str) -> None:
        with stack.client() as http:
            response = http.get(f"/v1/jobs/{job_id}", params={"wait": 55}, timeout=70)
        self.answered_at = time.time()
        self.answer = response.json()

    def lag_s(self, timeout_s: float = 60) -> float:
        """Seconds from the job's `finished_at` to the long-poll's answer."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the long-poll did not answer"
        finished_at = datetime.fromisoformat(self.answer["timings"]["finished_at"])
        return self.answered_at - finished_at.timestamp()


def submit(http: httpx.Client, prompt: str, **fields: object) -> str:
    response = http.post("/v1/jobs", json={"prompt": prompt, **fields})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def running(stack: Stack, job_id: str) -> None:
    with stack.client() as http:
        wait_until(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] == "running", 30, "job running")


def test_success_and_failure_wake_the_long_poll_at_once(stack: Stack) -> None:
    with stack.client() as http:
        ok = submit(http, "a function that returns 1 [faults: sleep=1.5]")
        # The simulated engine refuses any schema but the IR one: a permanent failure, after the sleep.
        bad = submit(http, "a function that returns 2 [faults: sleep=1.5]", schema={"type": "integer"})
    polls = {job_id: LongPoll(stack, job_id) for job_id in (ok, bad)}
    lags = {job_id: poll.lag_s() for job_id, poll in polls.items()}
    assert polls[ok].answer["status"] == "succeeded"
    assert polls[bad].answer["status"] == "failed" and polls[bad].answer["attempts"] == 1
    assert all(lag < WOKEN_WITHIN_S for lag in lags.values()), lags


def test_cancel_and_batch_cancel_wake_the_long_poll_at_once(stack: Stack) -> None:
    with stack.client() as http:
        job_id = submit(http, "a function that never returns [faults: hang]")
        batch = http.post("/v1/batches", json=[{"prompt": "a batch job that hangs [faults: hang]"}]).json()
        batch_job = http.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["jobs"][0]["id"]
        running(stack, job_id)
        running(stack, batch_job)
        polls = [LongPoll(stack, job_id), LongPoll(stack, batch_job)]
        time.sleep(0.5)  # both polls are waiting
        assert http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert http.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelled"
    lags = [poll.lag_s() for poll in polls]
    assert [poll.answer["status"] for poll in polls] == ["cancelled", "cancelled"]
    assert all(lag < WOKEN_WITHIN_S for lag in lags), lags


def test_the_deadline_wakes_the_long_poll_at_once(stack: Stack) -> None:
    with stack.client() as http:
        job_id = submit(http, "a function that runs past its deadline [faults: hang]", timeout=2)
    poll = LongPoll(stack, job_id)
    lag = poll.lag_s()
    assert poll.answer["status"] == "failed" and poll.answer["error"]["code"] == "timeout"
    assert lag < WOKEN_WITHIN_S, lag


def test_the_sweeper_giving_a_job_up_wakes_the_long_poll_at_once(
    sqlite_url: str, redis_url: str, inference: FaultService, tmp_path: Path
) -> None:
    env = {**RECHECK, "IRQ_LEASE_S": "2", "IRQ_SWEEP_INTERVAL_S": "0.5", "IRQ_MAX_ATTEMPTS": "1"}
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=env, worker=False)
    try:
        doomed = stack.start_worker("worker-1")
        with stack.client() as http:
            job_id = submit(http, "a function whose worker dies [faults: hang]")
        running(stack, job_id)
        poll = LongPoll(stack, job_id)
        doomed.kill()
        stack.start_worker("worker-2")  # its sweeper finds the lease expired, and no attempt left
        lag = poll.lag_s()
        assert poll.answer["status"] == "failed" and poll.answer["error"]["code"] == "worker_lost"
        assert lag < WOKEN_WITHIN_S, lag
    finally:
        stop_stack(stack)


def stored(stack: Stack) -> tuple[int, int]:
    with stack.db.session() as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0, s.scalar(
            select(func.count()).select_from(Batch)
        ) or 0


def test_with_the_broker_down_at_submit_nothing_is_kept_and_the_client_is_told_to_retry(
    sqlite_url: str, tmp_path: Path
) -> None:
    broker = RedisServer()
    broker.start()
    stack = start_stack(sqlite_url, broker.url + "/0", None, tmp_path)
    try:
        broker.kill()
        with stack.client() as http:
            single = http.post("/v1/jobs", json={"prompt": "a function that returns 1"})
            batch = http.post("/v1/batches", json=[{"prompt": "a function that returns 2"}] * 3)
        for response in (single, batch):
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "broker_unavailable"
            assert int(response.headers["Retry-After"]) > 0
        assert stored(stack) == (0, 0)
    finally:
        stop_stack(stack)
        broker.kill()


def test_a_paused_broker_answers_submits_503_within_seconds_and_nothing_is_kept(
    sqlite_url: str, tmp_path: Path
) -> None:
    broker = RedisServer()
    broker.start()
    stack = start_stack(sqlite_url, broker.url + "/0", None, tmp_path, env={"IRQ_RATE_LIMIT_PER_S": "0"})
    try:
        with stack.client() as http:
            assert http.post("/v1/jobs", json={"prompt": "before the pause"}).status_code == 202
            broker.pause()
            started = time.monotonic()
            paused = http.post("/v1/jobs", json={"prompt": "while paused"})
            waited_s = time.monotonic() - started
            broker.pause(False)
            after = http.post("/v1/jobs", json={"prompt": "after the pause"})
        assert paused.status_code == 503 and paused.json()["error"]["code"] == "broker_unavailable"
        assert waited_s < 10, f"the submit took {waited_s:.1f} s"
        assert after.status_code == 202, after.text
        assert stored(stack) == (2, 0)  # the refused submit kept nothing
        print(f"\nsubmit to a paused Redis answered 503 after {waited_s:.1f} s")
    finally:
        stop_stack(stack)
        broker.kill()


def test_a_broker_lost_mid_batch_keeps_the_accepted_batch_and_every_job_runs_once(
    sqlite_url: str, inference: FaultService, tmp_path: Path
) -> None:
    broker = RedisServer()
    broker.start()
    env = {"IRQ_SWEEP_INTERVAL_S": "1", "IRQ_SWEEP_STALE_S": "2"}
    stack = start_stack(sqlite_url, broker.url + "/0", inference.url, tmp_path, env=env, worker=False)
    try:
        n = 3000
        lines = [{"prompt": f"batch job {i}: a function that returns {i}"} for i in range(n)]
        answer: list[httpx.Response] = []

        def upload() -> None:
            with stack.client() as http:
                answer.append(http.post("/v1/batches", json=lines, timeout=120))

        uploading = threading.Thread(target=upload)
        uploading.start()
        sent = wait_until(stack.queue_length, 60, "the batch's first messages", interval_s=0.005)
        broker.kill()  # mid-batch: some messages sent, the rest not
        uploading.join(120)
        assert answer and answer[0].status_code == 202, answer and answer[0].text
        batch_id = answer[0].json()["id"]
        assert stored(stack) == (n, 1)  # the accepted batch is kept whole

        broker.start()  # empty: the sent messages were lost with the old server as well
        stack.redis.connection_pool.disconnect()
        stack.start_worker()
        with stack.client() as http:
            wait_until(
                lambda: http.get(f"/v1/batches/{batch_id}").json()["status"] == "completed",
                180,
                "the batch to complete",
                interval_s=0.5,
            )
            counts = http.get(f"/v1/batches/{batch_id}").json()["counts"]
        calls = inference.calls()
        assert counts == {"succeeded": n}
        assert all(calls.get(line["prompt"]) == 1 for line in lines), "a job ran twice or never"
        print(f"\nbroker lost mid-batch: {sent} of {n} messages had been sent when it stopped")
    finally:
        stop_stack(stack)
        broker.kill()
