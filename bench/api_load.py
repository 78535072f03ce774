"""The API under load: a load generator submits jobs (with a JSON Schema of their own, so the schema check
runs, and a bearer key, so auth runs) at a fixed rate; then rising rates find the highest rate served
with no errors and no backlog. No worker runs: this is the submit path. Each rising rate also goes to
`bench.minimal_submit` (FastAPI + SQLAlchemy + Celery with nothing else, one process, stock kombu) on the
same Redis, the two taking turns to go first, as the reference measured in the same run; each step
records the CPU the target's processes used per request (from /proc).

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
import statistics
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.clients import Clients
from bench.harness import Stack, console, group_cpu_s, percentile, report, stack
from cli.procs import answers, free_port, wait_until


@dataclass(frozen=True)
class Target:
    """A submit endpoint under load: irq's API, or the minimal reference path."""

    name: str
    url: str
    key: str
    pgid: int  # its processes' group, for their CPU


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "arity": {"type": "integer"}},
    "required": ["name", "arity"],
    "additionalProperties": False,
}


async def _load(target: Target, rate: float, duration_s: float) -> tuple[list[float], Counter[str], float]:
    n = int(rate * duration_s)
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {target.key}"}
    async with Clients(512, base_url=target.url, headers=headers, timeout=30) as clients:

        async def one(i: int, scheduled: float) -> None:
            try:
                response = await clients.next().post(
                    "/v1/jobs", json={"prompt": f"load {i}", "schema": SCHEMA}
                )
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


def _hey(target: Target, rate: float, duration_s: float) -> tuple[list[float], Counter[str], float]:
    connections = max(1, math.ceil(rate / RATE_PER_CONNECTION))
    run = subprocess.run(
        [
            "hey", "-z", f"{duration_s:g}s", "-c", str(connections), "-q", f"{rate / connections:g}",
            "-m", "POST", "-T", "application/json", "-H", f"Authorization: Bearer {target.key}",
            "-d", json.dumps({"prompt": "load", "schema": SCHEMA}), "-o", "csv", target.url + "/v1/jobs",
        ],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    for row in csv.DictReader(io.StringIO(run.stdout)):
        latencies.append(float(row["response-time"]) * 1000.0)
        outcomes[row["status-code"]] += 1
    return latencies, outcomes, len(latencies) / duration_s


def _measure(target: Target, rate: float, duration_s: float) -> tuple[list[float], Counter[str], float]:
    if shutil.which("hey"):
        return _hey(target, rate, duration_s)
    return asyncio.run(_load(target, rate, duration_s))


def _step(target: Target, rate: float, step_s: float) -> dict[str, Any]:
    """One rate for `step_s`; with the CPU the target's processes used per request answered."""
    cpu_before = group_cpu_s(target.pgid)
    lat, out, got = _measure(target, rate, step_s)
    cpu_s = group_cpu_s(target.pgid) - cpu_before
    errors = sum(v for k, v in out.items() if k != "202")
    console.print(
        f"  {target.name} {rate:.0f}/s: achieved {got:.0f}/s, errors {errors}, "
        f"p99 {percentile(lat, 99):.1f} ms"
    )
    return {
        "rate": rate,
        "achieved": got,
        "errors": errors,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "cpu_ms_per_request": cpu_s * 1000 / max(1, len(lat)),
    }


def _ramps(targets: list[Target], steps: list[float], step_s: float) -> dict[str, list[dict[str, Any]]]:
    """Each rate in turn for every target, the targets' order alternating from one rate to the next, so
    a drift of the machine's speed weighs on both alike."""
    ramps: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for i, rate in enumerate(steps):
        for target in targets if i % 2 == 0 else targets[::-1]:
            ramps[target.name].append(_step(target, rate, step_s))
    return ramps


def _summary(ramp: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest rate served in full (97%) with no errors and p99 under a second, the highest rate
    achieved, and the median of the steps' CPU per request."""
    sustained = [
        r["rate"]
        for r in ramp
        if r["errors"] == 0 and r["achieved"] >= 0.97 * r["rate"] and r["p99_ms"] < 1000
    ]
    return {
        "ramp": ramp,
        "highest_sustained_rate": max(sustained, default=None),
        "highest_achieved_rate": max((r["achieved"] for r in ramp), default=None),
        "cpu_ms_per_request": statistics.median(r["cpu_ms_per_request"] for r in ramp) if ramp else None,
    }


def _minimal_submit(bench: Stack) -> Target:
    """`bench.minimal_submit` under uvicorn, one process, on the stack's Redis and a store of its own."""
    port = free_port()
    service = bench.start(
        "minimal-submit",
        ["bench.minimal_submit:app", "--host", "127.0.0.1", "--port", str(port)],
        module="uvicorn",
        BENCH_DATABASE_URL=f"sqlite:///{bench.workdir / 'minimal-submit.db'}",
        BENCH_REDIS_URL=bench.redis_url,
    )
    target = Target("minimal", f"http://127.0.0.1:{port}", key="unused", pgid=service.proc.pid)
    wait_until(lambda: answers(target.url + "/openapi.json"), 60, "the minimal submit app")
    return target


def run(
    rate: float, duration_s: float, steps: list[float], step_s: float, api_workers: int, out_dir: Path
) -> dict[str, Any]:
    env = {
        "IRQ_MAX_INFLIGHT_JOBS": "0",  # one key sends everything here
        "IRQ_RATE_LIMIT_PER_S": "0",
        "IRQ_API_WORKERS": str(api_workers),
    }
    with stack(latency_s=0.0, slots=1, worker=False, env=env) as bench:
        api = next(service for service in bench.services if service.name == "api")
        irq = Target("irq", bench.api, bench.key, pgid=api.proc.pid)
        minimal = _minimal_submit(bench)
        for target in (irq, minimal):
            _measure(target, min(rate, 50), 2)  # warm up connections and irq's schema-check cache
        latencies, outcomes, achieved = _measure(irq, rate, duration_s)
        ramps = _ramps([irq, minimal], steps, step_s)
    ours, reference = _summary(ramps["irq"]), _summary(ramps["minimal"])
    errors = sum(v for k, v in outcomes.items() if k != "202")
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
        **ours,
        "minimal_submit_path": reference,
    }
    rows = [
        ("offered rate / duration", f"{rate:g}/s for {duration_s:g} s"),
        ("API processes", str(api_workers)),
        ("requests / achieved rate", f"{len(latencies)} / {achieved:.1f}/s"),
        ("errors (not 202)", str(errors)),
        ("submit latency p50 / p99 ms", f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f}"),
        ("steps: highest rate served in full, irq / min.*", _pair(ours, reference, "highest_sustained_rate")),
        ("steps: highest rate achieved, irq / min.*", _pair(ours, reference, "highest_achieved_rate")),
        ("steps: CPU ms per submit (median), irq / min.*", _pair(ours, reference, "cpu_ms_per_request")),
    ]
    report("api_load", f"API under load: submits at {rate:g}/s", rows, result, {"submit": latencies}, out_dir)
    console.print("* the minimal FastAPI + SQLAlchemy + Celery submit path, one process, the same rates")
    return result


def _pair(ours: dict[str, Any], reference: dict[str, Any], key: str) -> str:
    return " / ".join("-" if d[key] is None else f"{d[key]:.3g}" for d in (ours, reference))
