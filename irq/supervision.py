"""Supervision of a few child processes as one: `irq worker` runs one per endpoint and `irq inference serve`
one per replica; a stop signal stops them all, and so does the exit of any one of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def supervise(commands: list[tuple[list[str], dict[str, str]]], what: str, stop_s: float = 30) -> int:
    """Run one child per (argv, extra environment) until a stop signal, or until one of them exits: then
    stop the others and return that child's status (1 for a child that exited 0: it was not asked to)."""
    stopping: list[int] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [subprocess.Popen(argv, env={**os.environ, **env}) for argv, env in commands]
    status = 0
    while not stopping:
        exited = [c for c in children if c.poll() is not None]
        if exited:
            status = exited[0].returncode or 1
            print(f"{what}: a child process exited ({exited[0].returncode}); stopping", file=sys.stderr)
            break
        time.sleep(0.5)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + stop_s
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return status
