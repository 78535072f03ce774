"""The store after months of jobs: fill it with realistic finished jobs (a mix of statuses, owners, models and
timings, spread over `span_days`, the default IR schema, a result each), roll them up as the sweeper does,
and time every read path through the API (`/metrics`, `/v1/stats` over several windows, `/dashboard/data`,
job lists and gets) and submits, alone and while the reads run; the API's peak RSS; the bytes per job; then
a prune of all but the last `keep_days`, checking that the stats of the whole span answer the same counts.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.harness import Stack, console, machine, percentile, stack
from cli.procs import children
from irq import retention
from irq.clock import new_id, utcnow
from irq.ir_schema import ir_json_schema
from irq.keys import create_key
from irq.store import rollups
from irq.store.db import Database
from irq.store.jobs import JobStore
from irq.store.keys import list_keys
from irq.store.rollups import compact, roll_up
from irq.submission import schema_hash

MODELS = (("SmolLM2-135M-Instruct", "guidance", "gpu-a"), ("Qwen2.5-7B-Instruct", "xgrammar", "gpu-b"))
ERRORS = ("timeout", "output_truncated", "schema_mismatch", "inference_unreachable")
RESULT = {"name": "max_of", "description": "Returns the largest item.", "parameters": [{"name": "xs"}]}
CHUNK = 5000


def _rows(n: int, owners: list[int], span_s: float, rng: random.Random) -> list[dict[str, Any]]:
    schema = ir_json_schema()
    digest = schema_hash(schema)
    now = utcnow()
    rows = []
    for i in range(n):
        model, backend, endpoint = MODELS[i % 2]
        finished = now - timedelta(seconds=rng.random() * span_s)
        total = rng.lognormvariate(7.5, 0.6)
        wait = total * rng.random() * 0.3
        roll = rng.random()
        status, code = ("succeeded", None) if roll < 0.9 else ("failed", rng.choice(ERRORS))
        if roll > 0.98:
            status, code = "cancelled", "cancelled"
        generation = total - wait
        tokens = int(rng.uniform(80, 400))
        started = finished - timedelta(milliseconds=generation)
        created = finished - timedelta(milliseconds=total)
        rows.append(
            dict(
                id=new_id(),
                owner_id=owners[i % len(owners)],
                prompt=f"Create a function number {i} that returns the maximum of a list of integers",
                schema_=schema,
                schema_hash=digest,
                model=model,
                backend=backend,
                max_tokens=512,
                temperature=0.3,
                top_p=0.95,
                priority=5,
                timeout_s=600.0,
                status=status,
                attempts=1,
                max_attempts=3,
                error_code=code,
                error_message=code,
                result=RESULT if status == "succeeded" else None,
                finish_reason="stop",
                prompt_tokens=180,
                completion_tokens=tokens,
                retry_truncated=True,
                bounded=False,
                created_at=created,
                enqueued_at=created,
                started_at=started,
                first_started_at=started,
                finished_at=finished,
                queue_wait_ms=wait,
                engine_wait_ms=wait * 0.1,
                ttft_ms=generation * 0.05,
                generation_ms=generation,
                total_ms=total,
                tokens_per_s=tokens / generation * 1000,
                worker="bench@host",
                endpoint=endpoint,
            )
        )
    return rows


# PostgreSQL makes the same mix itself, far faster than rows sent from here (10M rows in minutes).
_PG_FILL = text(
    """
    INSERT INTO jobs (id, owner_id, prompt, schema, schema_hash, model, backend, max_tokens, temperature,
        top_p, priority, timeout_s, status, attempts, max_attempts, error_code, error_message, result,
        finish_reason, prompt_tokens, completion_tokens, retry_truncated, bounded, created_at, enqueued_at,
        started_at, first_started_at, finished_at, queue_wait_ms, engine_wait_ms, ttft_ms, generation_ms,
        total_ms, tokens_per_s, worker, endpoint)
    SELECT gen_random_uuid()::text, owners[1 + g % cardinality(owners)],
        'Create a function number ' || g || ' that returns the maximum of a list of integers', NULL, :hash,
        CASE WHEN g % 2 = 0 THEN :model_a ELSE :model_b END,
        CASE WHEN g % 2 = 0 THEN :backend_a ELSE :backend_b END,
        512, 0.3, 0.95, 5, 600, status, 1, 3, code, code,
        CASE WHEN status = 'succeeded' THEN CAST(:result AS json) END, 'stop', 180, tokens, true, false,
        finished - total * interval '1 millisecond', finished - total * interval '1 millisecond',
        finished - generation * interval '1 millisecond', finished - generation * interval '1 millisecond',
        finished, wait, wait * 0.1, generation * 0.05, generation, total, tokens / generation * 1000,
        'bench@host', CASE WHEN g % 2 = 0 THEN :endpoint_a ELSE :endpoint_b END
    FROM (
        SELECT g, total, wait, total - wait AS generation, finished, tokens, owners,
            CASE WHEN r < 0.9 THEN 'succeeded' WHEN r <= 0.98 THEN 'failed' ELSE 'cancelled' END AS status,
            CASE WHEN r < 0.9 THEN NULL WHEN r <= 0.98 THEN errors[1 + floor(c * 4)::int]
                ELSE 'cancelled' END AS code
        FROM (
            SELECT g, random() AS r, random() AS c, 80 + floor(random() * 320) AS tokens,
                now() - random() * :span_s * interval '1 second' AS finished,
                exp(7.5 + 0.6 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS total,
                random() * 0.3 AS wait_share, CAST(:owners AS int[]) AS owners,
                CAST(:errors AS text[]) AS errors
            FROM generate_series(1, :n) AS g
        ) drawn, LATERAL (SELECT total * wait_share AS wait) waited
    ) mixed
    """
)


def _fill_postgres(db: Database, n: int, owners: list[int], span_days: float) -> None:
    schema = ir_json_schema()
    digest = schema_hash(schema)
    store = JobStore(db)
    with db.engine.begin() as conn:
        store.schemas.put(conn, {digest: schema})
    (model_a, backend_a, endpoint_a), (model_b, backend_b, endpoint_b) = MODELS
    names = dict(model_a=model_a, model_b=model_b, backend_a=backend_a, backend_b=backend_b)
    values = dict(names, owners=owners, hash=digest, endpoint_a=endpoint_a, endpoint_b=endpoint_b,
                  result=json.dumps(RESULT), errors=list(ERRORS), span_s=span_days * 86400)  # fmt: skip
    for start in range(0, n, 1_000_000):  # a million rows a transaction
        with db.engine.begin() as conn:
            conn.execute(_PG_FILL, {**values, "n": min(1_000_000, n - start)})


def fill(db: Database, n: int, owners: list[int], span_days: float, seed: int) -> float:
    """Insert `n` finished jobs, then ANALYZE (as autovacuum would after such a load); returns the seconds
    it took."""
    rng = random.Random(seed)
    started = time.perf_counter()
    if db.url.startswith("postgresql"):
        _fill_postgres(db, n, owners, span_days)
        _analyze(db)
        return time.perf_counter() - started
    store = JobStore(db)
    for start in range(0, n, CHUNK):
        rows = _rows(min(CHUNK, n - start), owners, span_days * 86400, rng)
        store.insert(rows)
    _analyze(db)
    return time.perf_counter() - started


def _analyze(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def _bytes_per_job(db: Database, rows: int) -> float:
    with db.engine.connect() as conn:
        if db.url.startswith("sqlite"):
            path = Path(db.url.removeprefix("sqlite:///"))
            size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        else:
            size = int(conn.execute(text("SELECT pg_total_relation_size('jobs')")).scalar() or 0)
    return size / rows


def _timed(http: httpx.Client, path: str, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        http.get(path).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


READS = (
    "/metrics",
    "/v1/stats?scope=all&window=3600",
    "/v1/stats?scope=all&window=86400",
    "/v1/stats?scope=all&window=604800",
    "/v1/stats?scope=all&window=2592000",
    "/v1/stats?window=2592000",
    "/dashboard/data?window=3600",
    "/dashboard/data?window=86400",
    "/dashboard/data?window=2592000",
    "/v1/jobs?status=queued",
    "/v1/jobs?limit=100",
)


def _submits(http: httpx.Client, n: int, interval_s: float = 0.0) -> list[float]:
    """`n` submits one after the other (`interval_s` apart), each one's latency in ms."""
    times = []
    for i in range(n):
        started = time.perf_counter()
        http.post("/v1/jobs", json={"prompt": f"store bench submit {i}"}).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(interval_s)
    return times


# A busy operator's load: a Prometheus scrape, a stats call and a dashboard refresh every second.
PACED_READS = ("/metrics", "/v1/stats?scope=all&window=86400", "/dashboard/data?window=3600")


def _submits_while(
    bench: Stack, headers: dict[str, str], http: httpx.Client, paths: tuple[str, ...]
) -> list[float]:
    """200 submits, 50 ms apart, while each of `paths` is read once a second."""
    stop = threading.Event()

    def paced() -> None:
        with httpx.Client(base_url=bench.api, headers=headers, timeout=300) as reader:
            while not stop.wait(1.0):
                for path in paths:
                    reader.get(path)

    loop = threading.Thread(target=paced, daemon=True)
    loop.start()
    try:
        return _submits(http, 200, 0.05)
    finally:
        stop.set()
        loop.join(120)


def _peak_rss_mb(bench: Stack) -> float:
    """The API process's peak RSS, with its children's (the read processes, irq/store/read_process.py)."""
    api = next(s.proc.pid for s in bench.services if s.name == "api")
    total = 0
    for pid in [api, *children(api)]:
        try:
            rows = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(row.split()[1]) for row in rows if row.startswith("VmHWM:"))
    return total / 1024


def measure(bench: Stack, admin_key: str, rows: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=bench.api, headers=headers, timeout=300) as http:
        reads = {path: round(_timed(http, path), 1) for path in READS}
        alone = _submits(http, 200)
        stop = threading.Event()

        def read_loop() -> None:
            with httpx.Client(base_url=bench.api, headers=headers, timeout=300) as reader:
                while not stop.is_set():
                    for path in READS[:9]:
                        reader.get(path)

        loop = threading.Thread(target=read_loop, daemon=True)
        loop.start()
        during = _submits(http, 200)
        stop.set()
        loop.join(120)
        alone_paced = _submits(http, 200, 0.05)
        paced = _submits_while(bench, headers, http, PACED_READS)
    return {
        "rows": rows,
        "reads_ms": reads,
        "submit_ms": {
            "alone_p50": round(percentile(alone, 50), 1),
            "alone_p99": round(percentile(alone, 99), 1),
            "during_reads_p50": round(percentile(during, 50), 1),
            "during_reads_p99": round(percentile(during, 99), 1),
            "alone_paced_p50": round(percentile(alone_paced, 50), 1),
            "alone_paced_p99": round(percentile(alone_paced, 99), 1),
            "during_paced_reads_p50": round(percentile(paced, 50), 1),
            "during_paced_reads_p99": round(percentile(paced, 99), 1),
        },
        "api_peak_rss_mb": round(_peak_rss_mb(bench), 1),
        "bytes_per_job": round(_bytes_per_job(bench.db, rows)),
    }


def _counts(http: httpx.Client, window_s: float) -> dict[str, int]:
    return dict(http.get(f"/v1/stats?scope=all&window={window_s:.0f}").raise_for_status().json()["jobs"])


def run(
    steps: list[int], out_dir: Path, database_url: str | None, span_days: float = 30, keep_days: float = 3
) -> dict[str, Any]:
    env = {"IRQ_RATE_LIMIT_PER_S": "0", "IRQ_MAX_INFLIGHT_JOBS": "0", "IRQ_RETENTION_DAYS": "0"}
    results: list[dict[str, Any]] = []
    with stack(latency_s=0.0, slots=1, worker=False, database_url=database_url, env=env) as bench:
        admin_key = create_key(bench.db, "admin", admin=True)
        for i in range(3):
            create_key(bench.db, f"tenant-{i}")
        owners = [k.id for k in list_keys(bench.db) if not k.is_admin]
        filled = 0
        for target in steps:
            fill_s = fill(bench.db, target - filled, owners, span_days, seed=target)
            # From scratch each step, as after an upgrade: the jobs just filled finished before the mark.
            rollups.reset(bench.db)
            started = time.perf_counter()
            while roll_up(bench.db, lag_s=0, max_steps=1000):
                pass
            compact(bench.db, max_periods=100_000)
            bench.db.vacuum(rollups.KEPT)  # as the records keeper does after a compaction
            rollup_s = time.perf_counter() - started
            filled = target
            step = {
                **measure(bench, admin_key, target),
                "fill_s": round(fill_s, 1),
                "rollup_s": round(rollup_s, 1),
            }
            console.print(step)
            results.append(step)
        with httpx.Client(
            base_url=bench.api, headers={"Authorization": f"Bearer {admin_key}"}, timeout=300
        ) as http:
            window = (span_days + 1) * 86400
            before = _counts(http, window)
            started = time.perf_counter()
            report = retention.prune(bench.db, None, utcnow() - timedelta(days=keep_days), lag_s=0)
            prune_s = time.perf_counter() - started
            after = _counts(http, window)
            after_reads = {path: round(_timed(http, path), 1) for path in READS[:5]}
    prune = {
        "pruned": report.jobs,
        "prune_s": round(prune_s, 1),
        "counts_before": before,
        "counts_after": after,
        "same_counts": before == after,
        "reads_after_ms": after_reads,
    }
    store = "sqlite" if database_url is None else "postgresql"
    result = {"machine": machine(), "store": store, "steps": results, "prune": prune}
    _report(result, out_dir)
    return result


def _report(result: dict[str, Any], out_dir: Path) -> None:
    from rich.table import Table

    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"store-{result['store']}"
    table = Table(title=f"irq bench store ({result['store']}), medians of 3, ms")
    table.add_column("read")
    for step in result["steps"]:
        table.add_column(f"{step['rows']:,} rows", justify="right")
    for path in READS:
        table.add_row(path, *(f"{s['reads_ms'][path]:.0f}" for s in result["steps"]))
    keys = ("alone_p50", "alone_p99", "during_reads_p50", "during_reads_p99", "alone_paced_p50",
            "alone_paced_p99", "during_paced_reads_p50", "during_paced_reads_p99")  # fmt: skip
    for key in keys:
        table.add_row(f"submit {key}", *(f"{s['submit_ms'][key]:.1f}" for s in result["steps"]))
    table.add_row(
        "API peak RSS MB (its read processes too)", *(f"{s['api_peak_rss_mb']:.0f}" for s in result["steps"])
    )
    table.add_row("bytes per job", *(f"{s['bytes_per_job']}" for s in result["steps"]))
    console.print(table)
    console.print(result["prune"])
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    rows = [s["rows"] for s in result["steps"]]
    for path in READS:
        ax.plot(rows, [s["reads_ms"][path] for s in result["steps"]], marker="o", label=path)
    ax.set_xscale("log")
    ax.set_xlabel("finished jobs in the store")
    ax.set_ylabel("median read (ms)")
    ax.set_title(f"irq bench store ({result['store']})")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}.png", dpi=110)
    plt.close(fig)
    console.print(f"wrote {out_dir / f'{name}.json'} and {out_dir / f'{name}.png'}")
