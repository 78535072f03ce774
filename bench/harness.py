"""What every benchmark starts: its own Redis, a store, the simulated inference service, the API and
workers, as the same `irq …` processes a deployment runs; and what every benchmark ends with: a table,
a JSON file and a PNG plot of the latency distribution."""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import cli.stack
from cli.procs import free_port
from cli.stack import StackEnv
from irq.endpoints import load_registry
from irq.store.models import ACTIVE

console = Console()


class Stack(cli.stack.Stack):
    """A benchmark's stack, with its own Redis, and what a benchmark reaches it with: the API's URL, the
    store and a key."""

    def __init__(self, config: StackEnv, workdir: Path) -> None:
        super().__init__(config, workdir)
        self.workdir = workdir
        self.api = self.api_url
        self.redis_url = self.settings.redis_url
        self.start_redis()
        try:
            self.db, keys = self.prepare_store("bench")
        except BaseException:
            super().stop()
            raise
        self.key = keys[0]

    @property
    def redis_pid(self) -> int:
        assert self.redis_proc is not None
        return self.redis_proc.pid

    def stop(self) -> None:
        super().stop()
        self.db.dispose()


@contextmanager
def stack(
    *,
    latency_s: float,
    slots: int,
    workers: int = 1,
    database_url: str | None = None,
    worker: bool = True,
    env: dict[str, str] | None = None,
    inference_url: str | None = None,
    worker_pool: str = "threads",
    endpoints_file: Path | None = None,
    endpoints: Sequence[str] = (),
) -> Iterator[Stack]:
    """Redis (a server of its own), the store (a fresh SQLite file unless `database_url`), the simulated
    inference service (unless `inference_url` names a real one, or `endpoints_file` a registry of them),
    the API, and `workers` worker processes with the default settings unless `env`, each serving
    `endpoints` (all of the registry's for none). A `worker_pool` other than threads runs the workers
    through Celery's own command, which patches the standard library for gevent before anything is
    imported."""
    workdir = Path(tempfile.mkdtemp(prefix="irq-bench-"))
    config = StackEnv(
        database_url=database_url or f"sqlite:///{workdir / 'irq.db'}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        api_port=free_port(),
        inference_port=free_port(),
        inference_url=inference_url,
        engine="simulated",
        extra={
            "IRQ_SIMULATED_LATENCY_S": str(latency_s),
            "IRQ_SIMULATED_SLOTS": str(slots),
            "IRQ_FILES_DIR": str(workdir / "files"),
            **({"IRQ_ENDPOINTS_FILE": str(endpoints_file.resolve())} if endpoints_file else {}),
            **(env or {}),
        },
    )
    bench = Stack(config, workdir)
    try:
        if inference_url is None and endpoints_file is None:
            bench.start_inference()
        bench.start_api()
        if worker:
            served = load_registry(bench.settings).selected(endpoints)
            for i in range(workers):
                bench.start_worker(
                    f"worker-{i}", worker_name=f"bench-{i}", pool=worker_pool, endpoints=endpoints
                )
            # Measure from here: no job may wait in the queue for a worker that is still starting.
            bench.wait_workers(workers * len(served))
        yield bench
    finally:
        bench.stop()


_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU so far of every process in a process group (a service and its children: each
    service starts in a session of its own)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between ranks; NaN for no values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return float(values[0])
    return float(
        statistics.quantiles(values, n=1000, method="inclusive")[max(0, min(998, round(q * 10) - 1))]
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report(
    name: str,
    title: str,
    rows: list[tuple[str, str]],
    result: dict[str, Any],
    latencies_ms: dict[str, list[float]],
    out_dir: Path,
) -> None:
    """Print `rows` as a table, write `<name>.json` (with the raw figures) and `<name>.png`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)
    (out_dir / f"{name}.json").write_text(json.dumps({"machine": machine(), **result}, indent=2) + "\n")
    _plot(title, latencies_ms, out_dir / f"{name}.png")
    console.print(f"wrote {out_dir / f'{name}.json'} and {out_dir / f'{name}.png'}")


def _plot(title: str, latencies_ms: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in latencies_ms.items():
        if values:
            ax.hist(values, bins=60, alpha=0.6, label=f"{label} (n={len(values)})")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class Finished:
    job: dict[str, Any]
    client_ms: float  # from the submit request to the poll that saw the job finished


async def _retrying(call: Any, attempts: int = 3) -> Any:
    """A request again after a transport error (a keep-alive connection the server closed as it was
    reused); submits carry an Idempotency-Key, so a repeat never makes a second job."""
    import httpx

    for attempt in range(attempts):
        try:
            response = await call()
            response.raise_for_status()
            return response.json()
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def _submit_and_wait(
    http: Any, body: dict[str, Any], started: float, deadline: float = float("inf")
) -> Finished:
    import time
    import uuid

    import httpx

    headers = {"Idempotency-Key": uuid.uuid4().hex}
    try:
        job = await _retrying(lambda: http.post("/v1/jobs", json=body, headers=headers))
    except httpx.HTTPStatusError as exc:  # refused at submit (e.g. a schema llguidance cannot compile)
        refused = {"status": "refused", "error": exc.response.json().get("error")}
        return Finished(job=refused, client_ms=(time.perf_counter() - started) * 1000.0)
    url = f"/v1/jobs/{job['id']}"
    while job["status"] in ACTIVE and time.monotonic() < deadline:
        job = await _retrying(lambda: http.get(url, params={"wait": 30}))
    return Finished(job=job, client_ms=(time.perf_counter() - started) * 1000.0)


def run_jobs(
    bench: Stack, bodies: list[dict[str, Any]], concurrency: int, deadline_s: float | None = None
) -> tuple[list[Finished], float]:
    """Submit one job per request body through REST, `concurrency` clients at a time, each long-polling its
    job to the end (or, with `deadline_s`, until that many seconds after the first submit: a job still
    active then comes back as it was). Returns the jobs, in order, and the wall time from the first submit
    to the last job seen finished."""
    n = len(bodies)
    import asyncio
    import time

    import httpx
    from tqdm import tqdm

    async def main() -> tuple[list[Finished], float]:
        headers = {"Authorization": f"Bearer {bench.key}"}
        progress = tqdm(total=n, unit="job", leave=False)
        finished: list[Finished | None] = [None] * n
        todo = iter(range(n))

        async def client() -> None:
            # One connection per client: httpx's pool scans all its connections for every request, so
            # `concurrency` clients of one connection cost far less CPU than one client with them all.
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(
                base_url=bench.api, headers=headers, limits=limits, timeout=120
            ) as http:
                for i in todo:
                    finished[i] = await _submit_and_wait(http, bodies[i], time.perf_counter(), deadline)
                    progress.update()

        started = time.perf_counter()
        deadline = time.monotonic() + (deadline_s if deadline_s is not None else float("inf"))
        await asyncio.gather(*(client() for _ in range(min(concurrency, n))))
        wall = time.perf_counter() - started
        progress.close()
        return [f for f in finished if f is not None], wall

    return asyncio.run(main())
