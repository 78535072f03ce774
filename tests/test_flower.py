"""Flower against a real worker: the job's task is read back through Flower's own REST API, named by the
job id alone (never the prompt), and only with Flower's credentials; a failed job's task shows as a FAILURE
and a cancelled job's as REVOKED, not as a SUCCESS."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.procs import free_port, wait_until
from tests.support import start_fault_service, start_stack, stop_stack

AUTH = ("ops", "fl0wer-pw")


def test_flower_shows_each_job_task_by_its_id_and_nothing_else(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    inference = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, worker=False)
    port = free_port()
    stack.start("flower", ["flower"], IRQ_FLOWER_PORT=str(port), IRQ_FLOWER_BASIC_AUTH=":".join(AUTH))
    base = f"http://127.0.0.1:{port}"
    prompt = "A function that returns the secret-free sum of a list"
    try:
        wait_until(lambda: _answers(base), 60, "Flower")
        with stack.client() as http:  # cancelled while queued: its message reaches the worker all the same
            cancelled_id = http.post("/v1/jobs", json={"prompt": "A function, cancelled"}).json()["id"]
            assert http.post(f"/v1/jobs/{cancelled_id}/cancel").json()["status"] == "cancelled"
        stack.start_worker()
        with stack.client() as http:
            job_id = http.post("/v1/jobs", json={"prompt": prompt}).json()["id"]
            failed_id = http.post("/v1/jobs", json={"prompt": "[faults: 400] a refused function"}).json()[
                "id"
            ]
            assert stack.wait_for(http, job_id, 60)["status"] == "succeeded"
            assert stack.wait_for(http, failed_id, 60)["status"] == "failed"

        def task(job: str) -> dict | None:  # type: ignore[type-arg]
            tasks = httpx.get(base + "/api/tasks", auth=AUTH, timeout=10).json()
            found = next((t for t in tasks.values() if job in str(t.get("args"))), None)
            return found if found and found["state"] not in ("RECEIVED", "STARTED") else None

        found = wait_until(lambda: task(job_id), 30, "the job's task in Flower")
        assert found["name"] == "irq.run_job"  # type: ignore[index]
        assert found["state"] == "SUCCESS"  # type: ignore[index]
        # A failed job's task is a FAILURE, and a cancelled job's is REVOKED: neither is a SUCCESS.
        failure = wait_until(lambda: task(failed_id), 30, "the failed job's task in Flower")
        assert failure["state"] == "FAILURE" and f"job {failed_id} failed" in failure["exception"]  # type: ignore[index]
        revoked = wait_until(lambda: task(cancelled_id), 30, "the cancelled job's task in Flower")
        assert revoked["state"] == "REVOKED"  # type: ignore[index]
        everything = httpx.get(base + "/api/tasks", auth=AUTH, timeout=10).text
        assert prompt not in everything and stack.key not in everything
        for path in ("/api/tasks", "/metrics", "/healthcheck", "/"):
            assert httpx.get(base + path, timeout=10).status_code == 401, path
        assert httpx.get(base + "/metrics", auth=AUTH, timeout=10).status_code == 200
        queues = httpx.get(base + "/api/queues/length", auth=AUTH, timeout=10)
        assert queues.status_code == 200, queues.text
        # The queue of the one endpoint's model and backend, by its name.
        assert {"name": "irq:SmolLM2-135M-Instruct:guidance", "messages": 0} in queues.json()["active_queues"]
    finally:
        stop_stack(stack)
        inference.service.stop()


def _answers(base: str) -> bool:
    try:
        return httpx.get(base + "/", auth=AUTH, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
