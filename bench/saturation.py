"""GPU saturation: a simulated inference service that generates `slots` requests at once in `latency_s`
each (the rest wait in its queue, as in vLLM's); N jobs through REST with the default worker settings.
Efficiency = ideal makespan (ceil(N / slots) × latency) ÷ measured makespan (first job created to last
finished, from the store)."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.clients import Clients
from bench.harness import Stack, percentile, report, stack
from irq.store import reads
from irq.store.models import JobStatus


async def _submit_all(bench: Stack, n: int, concurrency: int) -> None:
    headers = {"Authorization": f"Bearer {bench.key}"}
    gate = asyncio.Semaphore(concurrency)
    async with Clients(concurrency, base_url=bench.api, headers=headers, timeout=60) as clients:

        async def one(i: int) -> None:
            async with gate:
                (
                    await clients.next().post("/v1/jobs", json={"prompt": f"saturation job {i}"})
                ).raise_for_status()

        await asyncio.gather(*(one(i) for i in range(n)))


def run(
    n: int,
    latency_s: float,
    slots: int,
    out_dir: Path,
    database_url: str | None = None,
    worker_pool: str = "threads",
) -> dict[str, Any]:
    with stack(latency_s=latency_s, slots=slots, database_url=database_url, worker_pool=worker_pool) as bench:
        asyncio.run(_submit_all(bench, n, concurrency=64))
        with tqdm(total=n, unit="job", leave=False) as progress:
            while (done := reads.finished_count(bench.db)) < n:
                progress.update(done - progress.n)
                time.sleep(0.25)
        jobs = reads.finished_spans(bench.db)
    first = min(job.created_at for job in jobs)
    last = max(job.finished_at for job in jobs)
    makespan = (last - first).total_seconds()
    ideal = math.ceil(n / slots) * latency_s
    succeeded = sum(job.status == JobStatus.succeeded for job in jobs)
    totals = [job.total_ms for job in jobs if job.total_ms is not None]
    waits = [job.queue_wait_ms for job in jobs if job.queue_wait_ms is not None]
    result = {
        "jobs": n,
        "slots": slots,
        "latency_s": latency_s,
        "worker_pool": worker_pool,
        "succeeded": succeeded,
        "ideal_makespan_s": ideal,
        "makespan_s": makespan,
        "efficiency": ideal / makespan,
        "jobs_per_s": n / makespan,
        "total_ms": {"p50": percentile(totals, 50), "p99": percentile(totals, 99)},
        "queue_wait_ms": {"p50": percentile(waits, 50), "p99": percentile(waits, 99)},
    }
    rows = [
        ("jobs", str(n)),
        ("inference slots × seconds per request", f"{slots} × {latency_s:g}"),
        ("worker pool", worker_pool),
        ("succeeded", f"{succeeded}/{n}"),
        ("ideal makespan s", f"{ideal:.1f}"),
        ("measured makespan s", f"{makespan:.1f}"),
        ("efficiency", f"{ideal / makespan:.3f}"),
        ("jobs/s", f"{n / makespan:.1f}"),
        (
            "job total p50 / p99 s",
            f"{percentile(totals, 50) / 1000:.1f} / {percentile(totals, 99) / 1000:.1f}",
        ),
    ]
    report("saturation", "GPU saturation (simulated inference)", rows, result, {"job total": totals}, out_dir)
    return result
