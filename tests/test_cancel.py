"""Cancel reaches the engine: a job cancelled (alone or with its batch) while its generation runs stops
that generation, so the inference service reports nothing running and the next job does not wait behind it.

The inference side is irq's service app over the simulated engine with one slot and a long latency: a
generation nobody stopped would hold the slot for the whole latency, and the next job would wait for it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from inference.abort import Abort, Aborted
from inference.engines.simulated import SimulatedEngine
from inference.http_client import HttpInferenceClient
from inference.protocol import GenerateRequest, GenerateResponse
from inference.service import create_app
from irq.endpoints import implicit_registry
from irq.events import Notifier
from irq.ir_schema import ir_json_schema
from irq.settings import Settings
from tests.procs import wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack
from worker.cancels import CancelWatch

pytestmark = pytest.mark.timeout(300)

LATENCY_S = 15.0  # each generation's; far above the time a cancel may take to reach the engine
STOPPED_WITHIN_S = 3.0  # cancel → the service reports no generation running
SMALL_WAIT_MS = 1500.0  # the next job's engine wait: nothing ahead of it


@pytest.fixture
def one_slot(tmp_path: Path) -> Iterator[FaultService]:
    """The service over the simulated engine, one generation at a time, each taking `LATENCY_S`."""
    service = start_fault_service(tmp_path, latency_s=LATENCY_S, env={"IRQ_SIMULATED_SLOTS": "1"})
    yield service
    service.service.stop()


@pytest.fixture
def stack(sqlite_url: str, redis_url: str, one_slot: FaultService, tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(sqlite_url, redis_url, one_slot.url, tmp_path)
    yield stack
    stop_stack(stack)


def running_at(service: FaultService) -> int:
    """Generations the inference service has in progress (its own count, `/health`)."""
    return int(httpx.get(service.base + "/health", timeout=10).json()["running"])


def assert_stops_and_next_job_runs_at_once(
    stack: Stack, service: FaultService, http: httpx.Client, cancelled_at: float, scenario: str
) -> None:
    wait_until(lambda: running_at(service) == 0, STOPPED_WITHIN_S, "the service to stop the generation")
    stopped_s = time.monotonic() - cancelled_at
    assert http.get("/v1/stats").json()["jobs"].get("running", 0) == 0
    job = stack.wait_for(http, http.post("/v1/jobs", json={"prompt": "the next job"}).json()["id"], 120)
    assert job["status"] == "succeeded"
    assert job["timings"]["engine_wait_ms"] < SMALL_WAIT_MS, job["timings"]
    # An upper bound: the service's count is read every 0.1 s.
    print(
        f"\n{scenario}: the service's running count was 0 within {stopped_s:.2f} s of the cancel's answer; "
        f"the next job's engine_wait_ms {job['timings']['engine_wait_ms']:.1f}"
    )


def test_cancelling_a_running_job_stops_its_generation(stack: Stack, one_slot: FaultService) -> None:
    with stack.client() as http:
        job_id = http.post("/v1/jobs", json={"prompt": "a long job"}).json()["id"]
        wait_until(lambda: running_at(one_slot) == 1, 60, "the job's generation to start")
        assert http.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert_stops_and_next_job_runs_at_once(stack, one_slot, http, time.monotonic(), "job cancel")
        job = http.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["result"], job["attempts"]) == ("cancelled", None, 1)
    assert one_slot.calls()["a long job"] == 1


def test_cancelling_a_batch_stops_the_generations_of_its_running_jobs(
    stack: Stack, one_slot: FaultService
) -> None:
    with stack.client() as http:
        batch = http.post("/v1/batches", json=[{"prompt": f"batch job {i}"} for i in range(3)]).json()
        # One generating, two waiting for the engine's slot: all three are the service's.
        wait_until(lambda: running_at(one_slot) == 3, 60, "the batch's requests to reach the service")
        assert http.post(f"/v1/batches/{batch['id']}/cancel").json()["counts"] == {"cancelled": 3}
        assert_stops_and_next_job_runs_at_once(stack, one_slot, http, time.monotonic(), "batch cancel")
    assert one_slot.calls() == {**{f"batch job {i}": 1 for i in range(3)}, "the next job": 1}


# The layers under the worker: its client, and the service.


def ir_request() -> GenerateRequest:
    return GenerateRequest(prompt="p", schema=ir_json_schema(), max_tokens=64, temperature=0, top_p=1)


def http_client(service: FaultService) -> HttpInferenceClient:
    settings = Settings(inference_url=service.url)
    return HttpInferenceClient(implicit_registry(settings).endpoints[0], settings)


def test_an_aborted_request_frees_its_thread_and_the_engine_and_the_thread_goes_on(
    one_slot: FaultService,
) -> None:
    client = http_client(one_slot)
    abort, outcome, after = Abort(), [], []

    def worker_thread() -> None:
        try:
            client.generate(ir_request(), timeout_s=120, abort=abort)
        except Exception as exc:
            outcome.append(exc)
        # The same thread's next request goes out on a new connection and runs at once.
        after.append(client.generate(ir_request(), timeout_s=120))

    thread = threading.Thread(target=worker_thread)
    try:
        thread.start()
        wait_until(lambda: running_at(one_slot) == 1, 30, "the generation to start")
        abort.set()
        wait_until(lambda: outcome, STOPPED_WITHIN_S, "the thread to drop its request")
        assert isinstance(outcome[0], Aborted)
        thread.join(LATENCY_S + 60)
        assert after and isinstance(after[0], GenerateResponse)
        assert (after[0].engine_wait_ms or 0.0) < SMALL_WAIT_MS
    finally:
        abort.set()
        thread.join(LATENCY_S + 60)
        client.close()


def test_an_abort_before_the_request_or_after_its_answer_touches_no_request(
    tmp_path: Path,
) -> None:
    service = start_fault_service(tmp_path, env={"IRQ_SIMULATED_SLOTS": "1"})
    client = http_client(service)
    try:
        early = Abort()
        early.set()
        with pytest.raises(Aborted):
            client.generate(GenerateRequest(prompt="early", schema=ir_json_schema()), 30, abort=early)
        late = Abort()
        client.generate(GenerateRequest(prompt="answered", schema=ir_json_schema()), 30, abort=late)
        late.set()  # the connection now idles in the thread's pool, or carries the next request
        reply = client.generate(GenerateRequest(prompt="next", schema=ir_json_schema()), 30)
        assert reply.finish_reason == "stop"
        assert service.calls() == {"answered": 1, "next": 1}
    finally:
        client.close()
        service.service.stop()


def test_a_cancelled_service_request_stops_its_generation() -> None:
    """How a Modal call cancelled through the SDK reaches the service: its request's coroutine is
    cancelled (`inference/modal_app.py` calls the app in process); the engine must let go of it too."""
    latency_s = 5.0
    settings = Settings(engine="simulated", simulated_latency_s=latency_s, simulated_slots=1)
    app = create_app(SimulatedEngine(settings), settings)
    body = ir_request().model_dump(by_alias=True)

    async def scenario() -> tuple[int, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://inference") as client:

            async def running() -> int:
                health: dict[str, Any] = (await client.get("/health")).json()
                return int(health["running"])

            call = asyncio.ensure_future(client.post("/generate", json=body))
            while await running() == 0:
                await asyncio.sleep(0.01)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            after_cancel = await running()
            nxt = (await client.post("/generate", json=body)).json()
            return after_cancel, float(nxt["engine_wait_ms"])

    after_cancel, next_wait_ms = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert after_cancel == 0
    assert next_wait_ms < SMALL_WAIT_MS  # the engine's one slot was free: nothing generated for nobody


def test_the_watch_aborts_the_request_of_a_job_that_ends_before_or_while_it_is_in_flight(
    redis_url: str,
) -> None:
    client = redis.Redis.from_url(redis_url)
    watch = CancelWatch(client)
    watch.start()
    try:
        wait_until(watch.subscribed.is_set, 10, "the subscription")
        notifier = Notifier(client)
        notifier.finished(["ended-before-its-request"])  # between the job's claim and its request
        with watch.watching("running") as running, watch.watching("other") as other:
            wait_until(lambda: "ended-before-its-request" in watch._ended, 10, "the first notice")
            with watch.watching("ended-before-its-request") as early:
                assert early.is_set
            notifier.finished(["running"])
            wait_until(lambda: running.is_set, 1.0, "the abort of the running job's request")
            assert not other.is_set
    finally:
        watch.stop()
        client.close()
