"""`irq bench …`: the benchmarks' commands, thin wrappers over `bench/`; each prints a table and writes a JSON
file and a PNG plot."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer


class WorkerPool(enum.StrEnum):
    threads = "threads"
    gevent = "gevent"


bench_app = typer.Typer(help="Benchmarks: each prints a table and writes a JSON file and a PNG plot.")
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the JSON and PNG files.")]
StoreOpt = Annotated[str | None, typer.Option("--database-url", help="Store (default: a fresh SQLite file).")]


PoolOpt = Annotated[
    WorkerPool,
    typer.Option(
        help="Celery pool of the workers: threads (what `irq worker` runs) or gevent (`pip install gevent`), "
        "to compare the two."
    ),
]


@bench_app.command("overhead")
def bench_overhead(
    jobs: int = 3000,
    concurrency: int = 64,
    out: OutOpt = Path("bench-results"),
    database_url: StoreOpt = None,
    worker_pool: PoolOpt = WorkerPool.threads,
) -> None:
    """Queue overhead: irq jobs with an instant inference service vs bare Celery no-op round trips."""
    from bench.overhead import run

    run(jobs, concurrency, out, database_url, worker_pool.value)


@bench_app.command("saturation")
def bench_saturation(
    jobs: int = 1000,
    latency: float = 2.7,
    slots: int = 64,
    out: OutOpt = Path("bench-results"),
    database_url: StoreOpt = None,
    worker_pool: PoolOpt = WorkerPool.threads,
) -> None:
    """GPU saturation: a simulated inference service with `slots` at once, `latency` s per request."""
    from bench.saturation import run

    run(jobs, latency, slots, out, database_url, worker_pool.value)


@bench_app.command("api-load")
def bench_api_load(
    rate: float = 200,
    duration: float = 60,
    steps: Annotated[
        str, typer.Option(help="Rates to try for the highest sustained one.")
    ] = "300,400,500,600,700,800",
    step_duration: float = 15,
    api_workers: Annotated[int, typer.Option(help="Processes of the API (IRQ_API_WORKERS).")] = 1,
    out: OutOpt = Path("bench-results"),
) -> None:
    """The API under load: submit latency at a fixed rate, then the highest rate served with no errors."""
    from bench.api_load import run

    run(rate, duration, [float(s) for s in steps.split(",") if s], step_duration, api_workers, out)


@bench_app.command("schemas")
def bench_schemas(
    schemas: Annotated[Path, typer.Option(help="Folder of JSON Schemas, one job each.")] = Path(
        "../shared/data/jsonschemabench"
    ),
    prompts: Annotated[Path, typer.Option(help="JSONL with a `prompt` per line (default IR schema).")] = Path(
        "../shared/data/prompts.jsonl"
    ),
    limit: Annotated[int | None, typer.Option(help="Only the first N schemas, in name order.")] = None,
    per_category: Annotated[
        int | None, typer.Option(help="Only the first N schemas of each category.")
    ] = None,
    max_tokens: int = 512,
    inference_url: Annotated[
        str | None, typer.Option(help="A running inference service (else the local engine is started).")
    ] = None,
    deadline_s: Annotated[
        float, typer.Option(help="Jobs still active this long after the start count as such.")
    ] = 3600,
    out: OutOpt = Path("bench-results"),
) -> None:
    """Real-world schemas through the pipeline: accepted, schema-valid, truncated and other failures per
    category, each success checked again with jsonschema."""
    from bench.schemas import run

    run(
        schemas,
        prompts,
        out,
        limit=limit,
        per_category=per_category,
        max_tokens=max_tokens,
        inference_url=inference_url,
        deadline_s=deadline_s,
    )


@bench_app.command("openai-batch")
def bench_openai_batch(
    lines: Annotated[int, typer.Option(help="Requests in the batch file.")] = 50_000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    out: OutOpt = Path("bench-results"),
) -> None:
    """A large OpenAI batch file through /openai/v1 on the simulated engine: upload, create and download
    times, jobs/s, and the API process's peak memory."""
    from bench.openai_batch import run

    run(lines, out, workers)


@bench_app.command("store")
def bench_store(
    rows: Annotated[
        str, typer.Option(help="Finished jobs to fill the store with, step by step.")
    ] = "100000,1000000",
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="An empty PostgreSQL database (default: SQLite).")
    ] = None,
    span_days: Annotated[float, typer.Option(help="The jobs' finish times spread over this many days.")] = 30,
    keep_days: Annotated[float, typer.Option(help="The prune at the end keeps this many last days.")] = 3,
    out: OutOpt = Path("bench-results"),
) -> None:
    """The store at N finished jobs: every read path and submit timed through the API, bytes per job, and a
    prune that keeps the counts."""
    from bench.store import run

    run([int(n) for n in rows.split(",")], out, database_url, span_days, keep_days)


@bench_app.command("compare")
def bench_compare(
    endpoints_file: Annotated[Path, typer.Option(help="The endpoint registry (TOML).")],
    prompts: Annotated[Path, typer.Option(help="JSONL with a `prompt` per line (default IR schema).")],
    endpoint: Annotated[
        list[str] | None, typer.Option(help="An endpoint of the registry; repeat. Default: all.")
    ] = None,
    schemas: Annotated[Path | None, typer.Option(help="Folder of JSON Schemas, one job each.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Each job's max_tokens (else the API's).")] = None,
    concurrency: int = 64,
    out: OutOpt = Path("bench-results"),
) -> None:
    """The same jobs through one deployment to each endpoint of the registry: schema-valid rate, latency,
    TTFT, tokens/s with bootstrap confidence intervals, and Mann-Whitney tests between endpoints."""
    from bench.compare import requests, run

    run(endpoints_file, endpoint or [], requests(prompts, schemas, max_tokens), concurrency, out)
