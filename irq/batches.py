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
    TimeRemainingColumn,
)

from irq.store.models import TERMINAL

POLL_S = 1.0


def follow(http: httpx.Client, batch_id: str, out: Path | None) -> dict[str, Any]:
    """Poll the batch until it ends, showing done/failed/total, jobs/s and the time left; then write the
    results to `out` (streamed, one JSON line per job) and return the batch's last state."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[succeeded]} ok · {task.fields[failed]} failed · {task.total} total"),
        TextColumn("{task.fields[rate]:.1f} jobs/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(batch_id[:13], total=None, succeeded=0, failed=0, rate=0.0)
        first_done: int | None = None
        while True:
            batch = http.get(f"/v1/batches/{batch_id}").raise_for_status().json()
            counts = batch["counts"]
            done = sum(counts.get(s, 0) for s in TERMINAL)
            first_done = done if first_done is None else first_done  # a resumed batch was partly done
            elapsed = max(time.monotonic() - started, 1e-9)
            progress.update(
                task,
                total=batch["total"],
                completed=done,
                succeeded=counts.get("succeeded", 0),
                failed=counts.get("failed", 0),
                rate=(done - first_done) / elapsed,
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
