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
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.clients import Clients, retrying


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def submit_and_wait(
    api: str, key: str, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[list[dict[str, Any]], float]:
    """Every body of `bodies` submitted as a job (from `concurrency` clients), then each job long-polled to
    its end: the finished jobs, in the order of `bodies`, and the seconds the submits took."""
    headers = {"Authorization": f"Bearer {key}"}
    async with Clients(concurrency, base_url=api, headers=headers, timeout=120) as clients:
        gate = asyncio.Semaphore(concurrency)

        async def submit(body: dict[str, Any]) -> str | dict[str, Any]:
            """The job's id; a submit the API refuses (4xx), as a job record of status `refused`."""
            async with gate:
                headers = {"Idempotency-Key": uuid.uuid4().hex}
                try:
                    r = await retrying(lambda: clients.next().post("/v1/jobs", json=body, headers=headers))
                except httpx.HTTPStatusError as exc:
                    if not 400 <= exc.response.status_code < 500:
                        raise
                    return refused(exc.response)
                return str(r.json()["id"])

        async def finish(job_id: str | dict[str, Any]) -> dict[str, Any]:
            if isinstance(job_id, dict):
                return job_id
            url = f"/v1/jobs/{job_id}"
            async with gate:
                while True:
                    poll = await retrying(lambda: clients.next().get(url, params={"wait": 30}))
                    job: dict[str, Any] = poll.json()
                    if job["status"] in ("succeeded", "failed", "cancelled"):
                        return job

        started = time.perf_counter()
        ids = await asyncio.gather(*(submit(b) for b in bodies))
        submitted = time.perf_counter() - started
        jobs = await asyncio.gather(*(finish(j) for j in ids))
    return list(jobs), submitted


async def batch_and_wait(
    api: str, key: str, bodies: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], float]:
    """Every body of `bodies` as one `/v1/batches` upload (JSON lines), the batch polled until it completes,
    then its jobs' records (`/v1/jobs?batch_id=`, newest first), and the seconds the upload took."""
    headers = {"Authorization": f"Bearer {key}"}
    upload = "".join(json.dumps(body) + "\n" for body in bodies)
    async with httpx.AsyncClient(base_url=api, headers=headers, timeout=300) as http:
        started = time.perf_counter()
        sent = await retrying(
            lambda: http.post(
                "/v1/batches",
                content=upload,
                headers={"Content-Type": "application/jsonl", "Idempotency-Key": uuid.uuid4().hex},
            )
        )
        submitted = time.perf_counter() - started
        batch_id = sent.json()["id"]
        poll = partial(http.get, f"/v1/batches/{batch_id}")
        while (await retrying(poll)).json()["status"] == "in_progress":  # then completed, or cancelled
            await asyncio.sleep(0.25)
        jobs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"batch_id": batch_id, "limit": 500}
        while True:
            page = (await retrying(partial(http.get, "/v1/jobs", params=dict(params)))).json()
            jobs += page["jobs"]
            if not page["next_cursor"]:
                return jobs, submitted
            params["cursor"] = page["next_cursor"]


def refused(response: httpx.Response) -> dict[str, Any]:
    """A job record for a submit the API refused: no timings, the API's error as its error."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    timings = dict.fromkeys(("created_at", "finished_at", "queue_wait_ms", "generation_ms", "total_ms"))
    return {
        "status": "refused",
        "error": {"code": error.get("code", f"http_{response.status_code}"), "message": error.get("message")},
        "timings": timings,
        "usage": {"prompt_tokens": None, "completion_tokens": None},
        "validation_error": None,
        "endpoint": None,
    }


def makespan_s(jobs: list[dict[str, Any]]) -> float:
    """From the first job's creation to the last one's finish, by the store's timestamps."""
    finished = [j for j in jobs if j["timings"]["finished_at"]]
    first = min(j["timings"]["created_at"] for j in jobs if j["timings"]["created_at"])
    last = max(j["timings"]["finished_at"] for j in finished)
    return (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()


async def run(api: str, key: str, prompts: list[str], n: int, concurrency: int) -> dict[str, Any]:
    bodies = [{"prompt": prompts[i % len(prompts)], "max_tokens": 1024} for i in range(n)]
    jobs, submitted = await submit_and_wait(api, key, bodies, concurrency)
    return summarize(jobs, submitted)


def summarize(jobs: list[dict[str, Any]], submitted: float) -> dict[str, Any]:
    n = len(jobs)
    finished = [j for j in jobs if j["timings"]["finished_at"]]
    makespan = makespan_s(jobs)
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
