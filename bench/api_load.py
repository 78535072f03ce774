"""The API under load: a load generator submits jobs (with a JSON Schema of their own, so the schema check
runs, and a bearer key, so auth runs) at a fixed rate; then rising rates find the highest rate served
with no errors and no backlog. No worker runs: this is the submit path.

The generator is `hey` (Debian package `hey`) where it is installed, with one connection per 50 requests
per second, each held to its share of the rate (hey's connections send on aligned tickers, so many
connections at a low rate each would arrive as bursts and measure the bursts). Without hey, an asyncio
generator in this process sends at the scheduled times and counts latency from them (no coordinated
omission), but it competes with the API for the CPU of a small machine."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Stack, console, percentile, report, stack

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "arity": {"type": "integer"}},
    "required": ["name", "arity"],
    "additionalProperties": False,
}


async def _load(bench: Stack, rate: float, duration_s: float) -> tuple[list[float], Counter[str], float]:
    n = int(rate * duration_s)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"Authorization": f"Bearer {bench.key}"}
    async with httpx.AsyncClient(base_url=bench.api, headers=headers, limits=limits, timeout=30) as http:

        async def one(i: int, scheduled: float) -> None:
            try:
                response = await http.post("/v1/jobs", json={"prompt": f"load {i}", "schema": SCHEMA})
                outcomes[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1
            latencies.append((time.perf_counter() - scheduled) * 1000.0)

        tasks = []
        start = time.perf_counter() + 0.1
        for i in range(n):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        achieved = n / (time.perf_counter() - start)
    return latencies, outcomes, achieved


RATE_PER_CONNECTION = 50


def _hey(bench: Stack, rate: float, duration_s: float) -> tuple[list[float], Counter[str], float]:
    connections = max(1, math.ceil(rate / RATE_PER_CONNECTION))
    run = subprocess.run(
        [
            "hey", "-z", f"{duration_s:g}s", "-c", str(connections), "-q", f"{rate / connections:g}",
            "-m", "POST", "-T", "application/json", "-H", f"Authorization: Bearer {bench.key}",
            "-d", json.dumps({"prompt": "load", "schema": SCHEMA}), "-o", "csv", bench.api + "/v1/jobs",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    for row in csv.DictReader(io.StringIO(run.stdout)):
        latencies.append(float(row["response-time"]) * 1000.0)
        outcomes[row["status-code"]] += 1
    return latencies, outcomes, len(latencies) / duration_s


def _measure(bench: Stack, rate: float, duration_s: float) -> tuple[list[float], Counter[str], float]:
    if shutil.which("hey"):
        return _hey(bench, rate, duration_s)
    return asyncio.run(_load(bench, rate, duration_s))


def run(
    rate: float, duration_s: float, steps: list[float], step_s: float, api_workers: int, out_dir: Path
) -> dict[str, Any]:
    env = {
        "IRQ_MAX_INFLIGHT_JOBS": "0",  # one key sends everything here
        "IRQ_RATE_LIMIT_PER_S": "0",
        "IRQ_API_WORKERS": str(api_workers),
    }
    with stack(latency_s=0.0, slots=1, worker=False, env=env) as bench:
        _measure(bench, min(rate, 50), 2)  # warm up connections and the schema-check cache
        latencies, outcomes, achieved = _measure(bench, rate, duration_s)
        ramp = []
        for step in steps:
            lat, out, got = _measure(bench, step, step_s)
            errors = sum(v for k, v in out.items() if k != "202")
            ramp.append(
                {
                    "rate": step,
                    "achieved": got,
                    "errors": errors,
                    "p50_ms": percentile(lat, 50),
                    "p99_ms": percentile(lat, 99),
                }
            )
            console.print(
                f"  {step:.0f}/s: achieved {got:.0f}/s, errors {errors}, p99 {percentile(lat, 99):.1f} ms"
            )
    errors = sum(v for k, v in outcomes.items() if k != "202")
    sustained = [
        r["rate"]
        for r in ramp
        if r["errors"] == 0 and r["achieved"] >= 0.97 * r["rate"] and r["p99_ms"] < 1000
    ]
    best = max(sustained, default=None)
    result = {
        "load_generator": "hey" if shutil.which("hey") else "asyncio (in process)",
        "rate": rate,
        "duration_s": duration_s,
        "api_workers": api_workers,
        "requests": len(latencies),
        "achieved_per_s": achieved,
        "outcomes": dict(outcomes),
        "errors": errors,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "ramp": ramp,
        "highest_sustained_rate": best,
    }
    rows = [
        ("offered rate / duration", f"{rate:g}/s for {duration_s:g} s"),
        ("API processes", str(api_workers)),
        ("requests / achieved rate", f"{len(latencies)} / {achieved:.1f}/s"),
        ("errors (not 202)", str(errors)),
        ("submit latency p50 / p99 ms", f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f}"),
        ("highest rate with no errors and no backlog", f"{best:g}/s" if best else "none of the steps"),
    ]
    report("api_load", f"API under load: submits at {rate:g}/s", rows, result, {"submit": latencies}, out_dir)
    return result
