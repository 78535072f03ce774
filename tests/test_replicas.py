"""Two replicas of one model behind one irq: endpoints registered for the same model and backend share its
queue, so each takes jobs as it has room for them (a faster one takes more), and one killed mid-run loses
no job: its jobs end, each exactly once, on the other."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack, write_registry

pytestmark = pytest.mark.timeout(300)

SLOTS = 8  # few enough that the replicas, not this 2-core machine, bound the rate
LATENCY_S = {"fast": 0.5, "slow": 2.0}  # per request; each replica generates SLOTS at once


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[dict[str, FaultService]]:
    env = {"IRQ_SERVED_MODEL": "sim", "IRQ_SIMULATED_SLOTS": str(SLOTS)}
    started = {name: start_fault_service(tmp_path, s, env=env, name=name) for name, s in LATENCY_S.items()}
    yield started
    for service in started.values():
        service.service.stop()


@pytest.fixture
def deployment(
    sqlite_url: str, redis_url: str, tmp_path: Path, replicas: dict[str, FaultService]
) -> Iterator[Stack]:
    registry = write_registry(
        tmp_path / "endpoints.toml",
        *(
            dict(name=n, url=s.url, model="sim", backend="guidance", max_inflight=SLOTS)
            for n, s in replicas.items()
        ),
    )
    env = {
        "IRQ_ENDPOINTS_FILE": str(registry),
        "IRQ_RATE_LIMIT_PER_S": "0",
        "IRQ_RETRY_BACKOFF_S": "0.2",
        "IRQ_RETRY_BACKOFF_MAX_S": "1",
    }
    stack = start_stack(sqlite_url, redis_url, None, tmp_path, env=env, worker=False)
    stack.start_worker()
    stack.wait_workers(2)
    yield stack
    stop_stack(stack)


def run(stack: Stack, prompts: list[str], during: object = None) -> tuple[list[dict], float]:  # type: ignore[type-arg]
    """Submit the prompts as one batch (so that the queue holds them all at once), then wait for every job;
    the jobs and the makespan."""
    lines = "".join(json.dumps({"prompt": p}) + "\n" for p in prompts)
    started = time.monotonic()
    with stack.client() as http, concurrent.futures.ThreadPoolExecutor(32) as pool:
        batch = http.post("/v1/batches", content=lines).json()
        if callable(during):
            during()
        wait_until(lambda: _done(http, batch["id"]), 120, "the batch to finish", interval_s=0.2)
        makespan_s = time.monotonic() - started
        ids = [
            json.loads(line)["id"]
            for line in http.get(f"/v1/batches/{batch['id']}/results").text.splitlines()
        ]
        jobs = list(pool.map(lambda i: http.get(f"/v1/jobs/{i}").json(), ids))
    return jobs, makespan_s


def _done(http: httpx.Client, batch_id: str) -> bool:
    return bool(http.get(f"/v1/batches/{batch_id}").json()["status"] == "completed")


def test_replicas_share_the_queue_by_capacity(deployment: Stack, replicas: dict[str, FaultService]) -> None:
    n = 240
    jobs, makespan_s = run(deployment, [f"job {i}" for i in range(n)])
    ideal_s = n / sum(SLOTS / s for s in LATENCY_S.values())
    print(f"{n} jobs on {SLOTS} × 0.5 s + {SLOTS} × 2 s: makespan {makespan_s:.1f} s, ideal {ideal_s:.1f} s,")
    assert {j["status"] for j in jobs} == {"succeeded"}
    by_endpoint = Counter(j["endpoint"] for j in jobs)
    print(f"jobs by replica: {dict(by_endpoint)}")
    # By capacity, not in turn: the fast replica (4× the slow one's rate) takes the larger share.
    assert by_endpoint["fast"] >= 2 * by_endpoint["slow"] > 0, by_endpoint
    assert sum(replicas["fast"].calls().values()) == by_endpoint["fast"]
    assert sum(replicas["slow"].calls().values()) == by_endpoint["slow"]


def test_a_replica_killed_mid_run_loses_no_job(deployment: Stack, replicas: dict[str, FaultService]) -> None:
    prompts = [f"job {i}" for i in range(200)]

    def kill_slow() -> None:
        wait_until(lambda: sum(replicas["slow"].calls().values()) >= 8, 60, "the slow replica to be busy")
        replicas["slow"].service.kill()

    jobs, _ = run(deployment, prompts, during=kill_slow)
    assert {j["status"] for j in jobs} == {"succeeded"}, Counter(j["status"] for j in jobs)
    # Every job that did not finish on the slow replica before it died finished on the fast one, once.
    fast_calls = replicas["fast"].calls()
    on_fast = [j for j in jobs if j["endpoint"] == "fast"]
    assert all(fast_calls[j["prompt"]] == 1 for j in on_fast)
    assert sum(fast_calls.values()) == len(on_fast)
    assert len(on_fast) > len(prompts) // 2
    with httpx.Client(base_url=deployment.api, headers={"Authorization": f"Bearer {deployment.key}"}) as http:
        state = {e["name"]: e["state"] for e in http.get("/v1/stats").json()["endpoints"]}
    assert state == {"fast": "up", "slow": "down"}
