"""Where the CPU of the queue-overhead scenario goes: the irq half of `irq bench overhead` (REST submit →
worker → instant inference → store → long-poll), with the CPU each process used over a window in the
middle of the run, read from /proc (Linux), split per job between API, workers, client, inference
service and Redis.

    python -m bench.cpu_split [--jobs 1500] [--workers 2] [--worker-pool gevent] [--env IRQ_API_WORKERS=2]

The window starts as the first job is submitted and lasts `--window` seconds; a job counts in it when the
store says it finished within it.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from bench.harness import group_cpu_s, run_jobs, stack
from irq.store import reads


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker-pool", default="threads", choices=["threads", "gevent"])
    parser.add_argument("--window", type=float, default=8.0, help="seconds")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for every irq process")
    args = parser.parse_args()
    env = dict(pair.split("=", 1) for pair in args.env)

    with stack(
        latency_s=0.0, slots=100_000, workers=args.workers, env=env, worker_pool=args.worker_pool
    ) as bench:
        groups = {service.name: service.proc.pid for service in bench.services}
        groups |= {"redis": bench.redis_pid, "client (this process)": os.getpgid(0)}
        cpu: dict[str, float] = {}
        span: list[datetime] = []

        def measure() -> None:
            before = {name: group_cpu_s(pgid) for name, pgid in groups.items()}
            span.append(datetime.now(UTC))
            time.sleep(args.window)
            cpu.update({name: group_cpu_s(pgid) - before[name] for name, pgid in groups.items()})
            span.append(datetime.now(UTC))

        bodies = [{"prompt": f"bench job {i}: a function that returns {i}"} for i in range(args.jobs)]
        meter = threading.Thread(target=measure)
        meter.start()
        finished, wall = run_jobs(bench, bodies, args.concurrency)
        meter.join()
        in_window = reads.finished_count(bench.db, span[0], span[1])

    succeeded = sum(f.job["status"] == "succeeded" for f in finished)
    seconds = (span[1] - span[0]).total_seconds()
    table = Table(
        title=f"{succeeded}/{args.jobs} jobs succeeded, {args.jobs / wall:.1f} jobs/s; "
        f"{in_window} finished in the {seconds:.1f} s window"
    )
    for column in ("process", "CPU s in the window", "CPU ms a job"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for name in [*groups, "all"]:
        used = sum(cpu.values()) if name == "all" else cpu[name]
        table.add_row(name, f"{used:.2f}", f"{1000 * used / max(in_window, 1):.1f}")
    Console().print(table)


if __name__ == "__main__":
    main()
