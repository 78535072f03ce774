"""Child processes of `irq dev`, the tests and the benchmarks: start an irq service, wait until it answers,
stop it (or kill it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.1) -> object:
    """Poll `check` until it returns something truthy; raise `TimeoutError` naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def children(parent: int) -> dict[int, str]:
    """The processes whose parent is `parent` (Linux: read from /proc), each as "STATE COMMAND LINE" (the
    state "Z" for one that has ended and waits to be reaped)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if int(ppid) == parent:
            found[int(entry.name)] = f"{state} {command}"
    return found


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Service:
    """An `irq …` child process (or `python -m module …`) in a session of its own, with its output in a log
    file a failing test can show, or (without a `log_dir`) on this process's terminal; `cwd` is the folder
    it runs in (None: this process's)."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path | None,
        module: str = "cli",
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log" if log_dir is not None else None
        self._log: IO[bytes] | None = self.log_path.open("wb") if self.log_path is not None else None
        # A session of its own: a terminal's Ctrl-C reaches only the parent, which stops its children in turn.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log is not None else None,
            cwd=cwd,
            start_new_session=True,
        )

    def check_running(self) -> None:
        """Raise `RuntimeError` (with the end of the log) if the process has exited."""
        if self.proc.poll() is not None:
            log = self.log()
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}" + (f":\n{log}" if log else "")
            )

    def wait_ready(self, url: str, timeout_s: float = 60) -> None:
        def ready() -> bool:
            self.check_running()
            return answers(url)

        wait_until(ready, timeout_s, f"{self.name} at {url}")

    def log(self) -> str:
        """The end of the log file ("" where the output goes to the terminal)."""
        if self.log_path is None:
            return ""
        return self.log_path.read_text(errors="replace")[-6000:]

    def kill(self) -> None:
        """`kill -9` of the process and its children: no clean-up of any kind."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_log()

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM to the process and its children; SIGKILL if they have not exited after `grace_s`."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
