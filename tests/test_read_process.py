"""The store's heavy reads run in processes of the API's own (irq/store/read_process.py): `/v1/stats`,
`/dashboard/data` and `/metrics` answer from them, when one is killed the reads answer again from a new
one while submits go on, and when the API is killed they end too."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from cli.procs import children
from tests.procs import wait_until
from tests.support import Stack


def _read_processes(parent: int) -> set[int]:
    """The children of `parent` that multiprocessing spawned as workers (not its resource tracker)."""
    return {
        pid
        for pid, command in children(parent).items()
        if "spawn_main" in command and "resource_tracker" not in command
    }


def _alive(pid: int) -> bool:
    """Running (a zombie that its new parent has not reaped yet has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _queued(http: httpx.Client) -> int | None:
    response = http.get("/v1/stats", params={"window": 3600})
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "store_unavailable", response.text
        return None
    assert response.status_code == 200, response.text
    return int(response.json()["jobs"].get("queued", 0))


def test_reads_answer_from_their_own_process_and_from_a_new_one_after_it_is_killed(api_only: Stack) -> None:
    api_pid = api_only.services[0].proc.pid
    with api_only.client() as http:
        for i in range(3):
            assert http.post("/v1/jobs", json={"prompt": f"A function returning {i}"}).status_code == 202
        assert _queued(http) == 3
        readers = _read_processes(api_pid)
        assert readers, "the stats were read in the API's own process"

        for pid in readers:
            os.kill(pid, signal.SIGKILL)
        answers: list[object] = [_queued(http)]  # a read whose process died answers 503 `store_unavailable`
        assert http.post("/v1/jobs", json={"prompt": "Sum a list"}).status_code == 202
        answers.append(wait_until(lambda: _queued(http), 30, "the stats to answer again"))
        assert answers[-1] == 4 and answers[0] in (None, 4), answers
        assert _read_processes(api_pid) - readers, "no new read process"

        assert http.get("/dashboard/data", params={"window": 3600}).status_code == 200
        scraped = httpx.get(api_only.api + "/metrics", timeout=10)
        assert scraped.status_code == 200 and "irq_jobs" in scraped.text

    # An API killed outright cannot stop its read processes: they end on their own.
    left = _read_processes(api_pid)
    os.kill(api_pid, signal.SIGKILL)
    wait_until(lambda: not any(_alive(pid) for pid in left), 15, "the read processes to end")
