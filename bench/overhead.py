"""Queue overhead: N jobs through irq (REST submit → Redis → worker → instant inference → store → long-poll)
against N bare Celery no-op round trips (send → worker → result), on the same Redis, in the same run."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.harness import Stack, percentile, report, run_jobs, stack
from cli.procs import wait_until
from irq.settings import Settings


def bare_celery(bench: Stack, n: int, concurrency: int) -> tuple[list[float], float]:
    """Round-trip latencies (ms) of `n` no-op tasks, `concurrency` at a time, and the wall time."""
    import os

    redis_url = bench.redis_url.rsplit("/", 1)[0] + "/1"
    os.environ["BENCH_REDIS_URL"] = redis_url
    from bench.noop import app, noop

    app.conf.broker_url = app.conf.result_backend = redis_url
    workers = str(Settings().worker_concurrency)
    bench.start(
        "noop-worker",
        ["-A", "bench.noop", "worker", "--pool=threads", f"--concurrency={workers}", "--loglevel=WARNING"],
        module="celery",
        BENCH_REDIS_URL=redis_url,
    )
    wait_until(lambda: app.control.ping(timeout=0.5), 60, "the no-op worker")

    def one(_: int) -> float:
        started = time.perf_counter()
        noop.delay().get(timeout=120)
        return (time.perf_counter() - started) * 1000.0

    with ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(one, range(n)))
        wall = time.perf_counter() - started
    return latencies, wall


def run(
    n: int, concurrency: int, out_dir: Path, database_url: str | None = None, worker_pool: str = "threads"
) -> dict[str, Any]:
    with stack(latency_s=0.0, slots=100_000, database_url=database_url, worker_pool=worker_pool) as bench:
        celery_ms, celery_wall = bare_celery(bench, n, concurrency)
        bodies = [{"prompt": f"bench job {i}: a function that returns {i}"} for i in range(n)]
        finished, irq_wall = run_jobs(bench, bodies, concurrency)
    succeeded = [f for f in finished if f.job["status"] == "succeeded"]
    added_ms = [f.client_ms - (f.job["timings"]["generation_ms"] or 0.0) for f in succeeded]
    irq_rate, celery_rate = n / irq_wall, n / celery_wall
    result = {
        "jobs": n,
        "concurrency": concurrency,
        "store": database_url or "sqlite (a fresh file)",
        "worker_pool": worker_pool,
        "succeeded": len(succeeded),
        "irq_jobs_per_s": irq_rate,
        "celery_noop_per_s": celery_rate,
        "ratio": irq_rate / celery_rate,
        "irq_added_latency_ms": {"p50": percentile(added_ms, 50), "p99": percentile(added_ms, 99)},
        "celery_round_trip_ms": {"p50": percentile(celery_ms, 50), "p99": percentile(celery_ms, 99)},
    }
    rows = [
        ("jobs (each way)", str(n)),
        ("clients at once", str(concurrency)),
        ("irq worker pool", worker_pool),
        ("irq jobs succeeded", f"{len(succeeded)}/{n}"),
        ("irq jobs/s", f"{irq_rate:.1f}"),
        ("bare Celery no-op round trips/s", f"{celery_rate:.1f}"),
        ("ratio irq / bare Celery", f"{irq_rate / celery_rate:.2f}"),
        (
            "irq added latency p50 / p99 ms",
            f"{percentile(added_ms, 50):.1f} / {percentile(added_ms, 99):.1f}",
        ),
        (
            "Celery round trip p50 / p99 ms",
            f"{percentile(celery_ms, 50):.1f} / {percentile(celery_ms, 99):.1f}",
        ),
    ]
    report(
        "overhead",
        "Queue overhead: irq vs bare Celery",
        rows,
        result,
        {"irq: submit to result seen": added_ms, "bare Celery: no-op round trip": celery_ms},
        out_dir,
    )
    return result
