"""Following a batch from the command line: a live progress bar, then its results as JSONL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from irq.store.models import TERMINAL

POLL_S = 1.0
RATE_UNITS = ((1.0, "jobs/s"), (60.0, "jobs/min"), (3600.0, "jobs/h"))


def _significant(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def format_rate(per_s: float) -> str:
    """A rate in the first unit (jobs/s, jobs/min, jobs/h) where it is at least 1, with three significant
    digits: a batch running at 0.022 jobs/s shows "1.32 jobs/min", not "0.0 jobs/s"."""
    if per_s <= 0:
        return "0 jobs/s"
    scale, unit = next(((k, u) for k, u in RATE_UNITS if per_s * k >= 1), RATE_UNITS[-1])
    return f"{_significant(per_s * scale)} {unit}"


def format_time_left(remaining: int, per_s: float) -> str:
    """The time the remaining jobs take at this rate, as h:mm:ss ("-:--:--" while no job has finished)."""
    if remaining <= 0:
        return "0:00:00"
    if per_s <= 0:
        return "-:--:--"
    minutes, seconds = divmod(round(remaining / per_s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


def follow(http: httpx.Client, batch_id: str, out: Path | None) -> dict[str, Any]:
    """Poll the batch until it ends, showing done/failed/total, the rate and the time left at it; then write
    the results to `out` (streamed, one JSON line per job) and return the batch's last state."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[succeeded]} ok · {task.fields[failed]} failed · {task.total} total"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]} left"),
    )
    started = time.monotonic()
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(
            batch_id[:13], total=None, succeeded=0, failed=0, rate=format_rate(0), left="-:--:--"
        )
        first_done: int | None = None
        while True:
            batch = http.get(f"/v1/batches/{batch_id}").raise_for_status().json()
            counts = batch["counts"]
            done = sum(counts.get(s, 0) for s in TERMINAL)
            first_done = done if first_done is None else first_done  # a resumed batch was partly done
            elapsed = max(time.monotonic() - started, 1e-9)
            rate = (
                done - first_done
            ) / elapsed  # of this run only: a resumed batch's earlier jobs don't count
            progress.update(
                task,
                total=batch["total"],
                completed=done,
                succeeded=counts.get("succeeded", 0),
                failed=counts.get("failed", 0),
                rate=format_rate(rate),
                left=format_time_left(batch["total"] - done, rate),
            )
            if batch["status"] != "in_progress":
                break
            time.sleep(POLL_S)
    if out is not None:
        with http.stream("GET", f"/v1/batches/{batch_id}/results") as response, out.open("wb") as sink:
            response.raise_for_status()
            for chunk in response.iter_bytes():
                sink.write(chunk)
    return batch  # type: ignore[no-any-return]
