"""A PostgreSQL that stops answering (SIGSTOP: its connections stay open, nothing comes back) holds only the
requests already inside it: every other request is answered 503 `store_unavailable` within
`IRQ_STORE_WAIT_S`, and once it answers again every request is served."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.procs import PostgresServer, wait_until
from tests.support import start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)


def _cluster_pids(store: PostgresServer) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((store.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True)
    return [postmaster, *(int(pid) for pid in children.stdout.split())]


def test_a_frozen_postgres_gets_503s_within_the_store_wait_not_hung_requests(
    redis_url: str, tmp_path: Path
) -> None:
    try:
        store = PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    store.start()
    stack = start_stack(store.url, redis_url, None, tmp_path, env={"IRQ_STORE_WAIT_S": "2"})
    answers: list[tuple[int, float]] = []
    try:
        with stack.client() as http:
            job_id = http.post("/v1/jobs", json={"prompt": "a job to poll"}).json()["id"]

        def poll() -> None:
            started = time.monotonic()
            with stack.client() as http:
                status = http.get(f"/v1/jobs/{job_id}", timeout=60).status_code
            answers.append((status, time.monotonic() - started))

        pids = _cluster_pids(store)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            polls = [threading.Thread(target=poll) for _ in range(40)]
            for t in polls:
                t.start()
            time.sleep(12)
            during = list(answers)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
        for t in polls:
            t.join(60)
        with stack.client() as http:
            after = http.get(f"/v1/jobs/{job_id}")
    finally:
        stop_stack(stack)
        store.destroy()
    refused = [took for status, took in during if status == 503]
    assert len(refused) >= 10, during  # all but the requests that had a connection inside the frozen server
    assert max(refused) < 10, refused  # the 2-s store wait a few times over at most, well inside the freeze
    assert {status for status, _ in answers} <= {200, 503} and len(answers) == 40
    assert after.status_code == 200
    print(f"\nPostgreSQL frozen 12 s, 40 polls: {len(refused)} answered 503 within {max(refused):.1f} s")


def test_results_in_hand_when_postgres_freezes_are_kept_and_every_job_runs_once(
    redis_url: str, tmp_path: Path
) -> None:
    """40 jobs running when the store freezes for longer than a lease; their answers arrive meanwhile. Once
    it answers again every job succeeds with one inference call: no result is thrown away by a lease that
    expired only because nobody could renew it."""
    try:
        store = PostgresServer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    store.start()
    inference = start_fault_service(tmp_path, latency_s=3.0)
    env = {"IRQ_LEASE_S": "3", "IRQ_SWEEP_INTERVAL_S": "1", "IRQ_WORKER_CONCURRENCY": "40"}
    stack = start_stack(store.url, redis_url, inference.url, tmp_path, env=env)
    prompts = [f"frozen store job {i}: a function that returns {i}" for i in range(40)]
    try:
        with stack.client() as http:
            ids = [http.post("/v1/jobs", json={"prompt": p}).json()["id"] for p in prompts]
            wait_until(lambda: sum(inference.calls().get(p, 0) for p in prompts) == 40, 60, "40 calls made")
        pids = _cluster_pids(store)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(10)  # the answers come back after 3 s; the leases (3 s) cannot be renewed
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()
        with stack.client() as http:
            finished = [stack.wait_for(http, job_id, 120) for job_id in ids]
        done_s = time.monotonic() - thawed
        calls = inference.calls()
    finally:
        stop_stack(stack)
        inference.service.stop()
        store.destroy()
    assert [job["status"] for job in finished] == ["succeeded"] * 40
    repeated = sum(calls.get(p, 0) > 1 for p in prompts)
    assert repeated == 0, f"{repeated} job(s) generated again after the store came back"
    print(
        f"\nPostgreSQL frozen 10 s with 40 answers in hand: all 40 succeeded {done_s:.1f} s after, 40 calls"
    )
