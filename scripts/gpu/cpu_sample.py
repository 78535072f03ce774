"""Where the GPU host's CPU goes during a benchmark: every process's CPU time, sampled once a second.

    python3 -m scripts.gpu.cpu_sample --out FILE.json     (until SIGTERM; scripts/gpu/run-paths.sh runs it)

Each sample is the cores each role used since the previous sample (CPU seconds over wall seconds, from
/proc/PID/stat), and the machine's busy cores (/proc/stat). A role is named by what the process runs:
vLLM's engine core, irq's inference service (its front end), vLLM's OpenAI server, irq's API and worker,
Redis, the benchmark's clients, and the rest. `window` sums a timeline over one run (paths_bench's report).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
ROLES = (  # (role, a piece of the command line); the first match names the process
    ("engine core", "EngineCore"),
    ("irq service", "-m cli inference serve"),
    ("vLLM server", "vllm.entrypoints.openai.api_server"),
    ("irq api", "-m cli api"),
    ("irq worker", "-m cli worker"),
    ("irq worker", "celeryd"),  # the title Celery gives its worker process once it runs
    ("redis", "redis-server"),
    ("clients", "paths_bench"),
    ("sampler", "cpu_sample"),
)


def role(pid: str) -> str:
    """The role its command line names; a process whose command line names none (a uvicorn worker of
    `irq api`, started by multiprocessing) takes its parent's."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
    except (OSError, IndexError):
        return "gone"
    named = next((name for name, piece in ROLES if piece in command), None)
    if named is None and "multiprocessing" in command and parent not in ("0", "1"):
        return role(parent)
    return named or "other"


def cpu_ticks() -> dict[str, int]:
    """Every process's user + system ticks, by pid."""
    ticks = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks


def machine_busy() -> tuple[int, int]:
    """The machine's (busy, total) ticks over all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def sample_until_stopped(out: Path, interval_s: float) -> None:
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    roles: dict[str, str] = {}
    timeline: list[dict[str, Any]] = []
    before, busy_before, t_before = cpu_ticks(), machine_busy(), time.time()
    while not stop:
        time.sleep(interval_s)
        now, busy_now, t_now = cpu_ticks(), machine_busy(), time.time()
        wall = t_now - t_before
        cores: dict[str, float] = {}
        for pid, ticks in now.items():
            if roles.get(pid, "other") == "other":  # a process can rename itself after it starts
                roles[pid] = role(pid)
            used = ticks - before.get(pid, ticks)
            if used > 0:
                cores[roles[pid]] = cores.get(roles[pid], 0.0) + used / TICK / wall
        busy = (busy_now[0] - busy_before[0]) / max(busy_now[1] - busy_before[1], 1)
        timeline.append({"t": round(t_now, 2), "cores": {k: round(v, 2) for k, v in cores.items()},
                         "machine_busy": round(busy * (os.cpu_count() or 1), 2)})  # fmt: skip
        before, busy_before, t_before = now, busy_now, t_now
    out.write_text(json.dumps({"cpus": os.cpu_count(), "interval_s": interval_s, "timeline": timeline}))


def window(timeline: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Mean and max cores per role over the samples taken inside [start, end]."""
    inside = [s for s in timeline if start < s["t"] <= end]
    if not inside:
        return {}
    names = sorted({name for s in inside for name in s["cores"]})
    result: dict[str, Any] = {}
    for name in [*names, "machine_busy"]:
        values = [s["machine_busy"] if name == "machine_busy" else s["cores"].get(name, 0.0) for s in inside]
        result[name] = {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}
    result["samples"] = len(inside)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interval-s", type=float, default=1.0)
    args = parser.parse_args()
    sample_until_stopped(args.out, args.interval_s)


if __name__ == "__main__":
    main()
