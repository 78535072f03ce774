"""The sweeper re-sends only what is really lost: a batch still being sent by the API is left to it, however
long the upload takes, and a job whose message the broker lost is sent again once."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from irq.broker import UNACKED_KEY
from tests.procs import wait_until
from tests.support import start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)


def test_a_long_batch_upload_is_not_sent_twice_by_the_sweeper(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    # The worker's endpoint is down, so it runs nothing (its gate holds the queue) but it sweeps every half
    # second, and calls a job stale after one: far less than the upload takes.
    # A lease long enough that no message the gate holds back counts as lost: this test is about the upload.
    env = {"IRQ_SWEEP_INTERVAL_S": "0.5", "IRQ_SWEEP_STALE_S": "1", "IRQ_LEASE_S": "10"}
    stack = start_stack(sqlite_url, redis_url, "http://127.0.0.1:9/generate", tmp_path, env=env)
    try:
        n = 6000
        lines = [{"prompt": f"batch job {i}: a function that returns {i}"} for i in range(n)]
        answer: list[httpx.Response] = []

        def upload() -> None:
            with stack.client() as http:
                answer.append(http.post("/v1/batches", json=lines, timeout=240))

        uploading = threading.Thread(target=upload)
        uploading.start()
        uploading.join(240)
        assert answer and answer[0].status_code == 202, answer and answer[0].text

        def messages() -> int:
            return stack.queue_length() + int(stack.redis.hlen(UNACKED_KEY))

        wait_until(lambda: messages() >= n, 30, "every message")
        time.sleep(3)  # six more sweeps after the upload
        # Settled: a job the worker gave back while its gate closed is briefly in two places.
        counted = wait_until(lambda: (a := messages()) == messages() and a, 30, "a settled count")
    finally:
        stop_stack(stack)
    resent = [
        int(m) for m in re.findall(r"(\d+) lost message\(s\) re-sent", (tmp_path / "worker.log").read_text())
    ]
    assert sum(resent) == 0, f"the sweeper re-sent {sum(resent)} message(s) of a batch being uploaded"
    assert counted == n  # one message a job
