"""Flower against a real worker: the job's task is read back through Flower's own REST API, named by the
job id alone (never the prompt), and only with Flower's credentials."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import start_fault_service, start_stack, stop_stack
from tests.procs import free_port, wait_until

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
        stack.start_worker()
        with stack.client() as http:
            job_id = http.post("/v1/jobs", json={"prompt": prompt}).json()["id"]
            assert stack.wait_for(http, job_id, 60)["status"] == "succeeded"

        def task() -> dict | None:  # type: ignore[type-arg]
            tasks = httpx.get(base + "/api/tasks", auth=AUTH, timeout=10).json()
            return next((t for t in tasks.values() if job_id in str(t.get("args"))), None)

        found = wait_until(task, 30, "the job's task in Flower")
        assert found["name"] == "irq.run_job"  # type: ignore[index]
        assert found["state"] == "SUCCESS"  # type: ignore[index]
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
