"""The whole pipeline under load: N jobs through REST → Redis → Celery worker → inference service → store.

Submits every job as fast as the API takes them (from `--concurrency` clients), then long-polls each one
to its end, and reports jobs/s from the first submit to the last finish, latency percentiles and how many
results were schema-valid. Used on the GPU host (scripts/gpu/run-pipeline.sh) and works against any irq API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _retrying(call: Any, attempts: int = 3) -> httpx.Response:
    """A request again after a transport error (a keep-alive connection the server closed as it was
    reused); submits carry an Idempotency-Key, so a repeat never makes a second job."""
    for attempt in range(attempts):
        try:
            response: httpx.Response = await call()
            return response.raise_for_status()
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def run(api: str, key: str, prompts: list[str], n: int, concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=120, limits=limits) as http:
        gate = asyncio.Semaphore(concurrency)

        async def submit(i: int) -> str:
            async with gate:
                body = {"prompt": prompts[i % len(prompts)], "max_tokens": 1024}
                headers = {"Idempotency-Key": uuid.uuid4().hex}
                r = await _retrying(lambda: http.post("/v1/jobs", json=body, headers=headers))
                return str(r.json()["id"])

        async def finish(job_id: str) -> dict[str, Any]:
            async with gate:
                while True:
                    poll = await _retrying(lambda: http.get(f"/v1/jobs/{job_id}", params={"wait": 30}))
                    job: dict[str, Any] = poll.json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        return job

        started = time.perf_counter()
        ids = await asyncio.gather(*(submit(i) for i in range(n)))
        submitted = time.perf_counter() - started
        jobs = await asyncio.gather(*(finish(j) for j in ids))
    finished = [j for j in jobs if j["timings"]["finished_at"]]
    first = min(j["timings"]["created_at"] for j in jobs)
    last = max(j["timings"]["finished_at"] for j in finished)
    makespan = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    totals = [j["timings"]["total_ms"] / 1000 for j in finished]
    waits = [
        j["timings"]["queue_wait_ms"] / 1000 for j in finished if j["timings"]["queue_wait_ms"] is not None
    ]
    tokens = sum(j["usage"]["completion_tokens"] or 0 for j in jobs)
    return {
        "jobs": n,
        "succeeded": sum(j["status"] == "succeeded" for j in jobs),
        "failed": {
            code: sum(1 for j in jobs if (j["error"] or {}).get("code") == code)
            for code in {(j["error"] or {}).get("code") for j in jobs if j["error"]}
        },
        "schema_valid": sum(j["status"] == "succeeded" and j["validation_error"] is None for j in jobs),
        "by_endpoint": dict(Counter(str(j["endpoint"]) for j in finished)),
        "submit_s": round(submitted, 2),
        "makespan_s": round(makespan, 2),
        "jobs_per_s": round(n / makespan, 2),
        "output_tokens_per_s": round(tokens / makespan, 1),
        "latency_p50_s": round(percentile(totals, 0.5), 2),
        "latency_p95_s": round(percentile(totals, 0.95), 2),
        "queue_wait_p50_s": round(percentile(waits, 0.5), 2),
        "generation_mean_s": round(
            statistics.mean(
                j["timings"]["generation_ms"] / 1000 for j in finished if j["timings"]["generation_ms"]
            ),
            2,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--prompts", type=Path, required=True, help="JSONL with a `prompt` field per line")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prompts = [json.loads(line)["prompt"] for line in args.prompts.read_text().splitlines() if line.strip()]
    result = asyncio.run(run(args.api, args.key, prompts, args.n, args.concurrency))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
