"""A few long-lived schema-check processes, shared fairly between API keys.

A check runs in a process rather than a thread because llguidance's compile cannot be interrupted: a check
that overruns its time limit is stopped by killing its process, and a fresh one takes its place.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import Counter

logger = logging.getLogger(__name__)

# Found by the module system as the API process found irq: installed, or on the path it was started with.
COMMAND = (sys.executable, "-m", "irq.schema_check")
# A fresh process imports llguidance and jsonschema (about 0.2 s); its start is not charged to a check.
STARTUP_LIMIT_S = 30.0


class Busy(Exception):
    """No check process was free for this caller within the wait."""


class Overran(Exception):
    """The check did not finish within its time limit; its process was killed."""


class Crashed(Exception):
    """The check process died in the middle of a check."""


class Unavailable(Exception):
    """A check process could not be started."""


def _read_line(fd: int, deadline: float) -> bytes:
    """One line from `fd` by `deadline`: `TimeoutError` after it, `EOFError` when the writer is gone."""
    line = bytearray()
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError
            line += chunk
    return bytes(line)


class _Checker:
    """One `python -m irq.schema_check` process and its two pipes."""

    def __init__(self, command: tuple[str, ...]) -> None:
        self._popen = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._ready = False

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def alive(self) -> bool:
        return self._popen.poll() is None

    def wait_ready(self) -> None:
        if not self._ready:
            assert self._popen.stdout is not None
            if _read_line(self._popen.stdout.fileno(), time.monotonic() + STARTUP_LIMIT_S) != b"ready\n":
                raise EOFError("the check process said something else than ready")
            self._ready = True

    def ask(self, request: bytes, timeout_s: float) -> bytes:
        """The process's answer to one request line; `TimeoutError`, `EOFError` or `OSError` if none."""
        assert self._popen.stdin is not None and self._popen.stdout is not None
        deadline = time.monotonic() + timeout_s
        self._popen.stdin.write(request + b"\n")  # the process is idle, so it reads all of it at once
        return _read_line(self._popen.stdout.fileno(), deadline)

    def kill(self) -> None:
        self._popen.kill()
        self._popen.wait()
        for pipe in (self._popen.stdin, self._popen.stdout):
            if pipe is not None:
                pipe.close()


class CheckPool:
    """`size` check processes, started as they are first needed; one caller (`owner`, e.g. an API key) may
    hold at most half of them, so that no caller can make every other one wait."""

    def __init__(self, size: int, command: tuple[str, ...] = COMMAND) -> None:
        self.size = max(1, size)
        self.per_owner = max(1, self.size // 2)
        self._command = command
        self._free = threading.Condition()
        self._idle: list[_Checker] = []
        self._live: set[_Checker] = set()
        self._running: Counter[int | None] = Counter()

    def pids(self) -> set[int]:
        """The process ids of the pool's check processes, busy or idle."""
        with self._free:
            return {checker.pid for checker in self._live}

    def running(self) -> int:
        """How many checks hold a slot now."""
        with self._free:
            return sum(self._running.values())

    def run(self, request: str, *, owner: int | None, timeout_s: float, wait_s: float) -> str:
        """The answer of a check process to `request`, once one is free for `owner` (within `wait_s`)."""
        checker = self._acquire(owner, wait_s)
        try:
            try:
                if checker is None or not checker.alive:  # an idle process may have died (OOM killer)
                    checker = self._replace(checker, start=False) or self._start()
                checker.wait_ready()
            except (OSError, EOFError, TimeoutError) as exc:
                logger.error("could not start a schema-check process: %s", exc)
                checker = self._replace(checker, start=False)
                raise Unavailable("the schema checker could not start; retry later") from None
            try:
                return checker.ask(request.encode(), timeout_s).decode()
            except TimeoutError:
                checker = self._replace(checker)
                raise Overran from None
            except (OSError, EOFError):
                checker = self._replace(checker)
                raise Crashed from None
        finally:
            self._release(owner, checker)

    def close(self) -> None:
        """Kill every check process, busy or idle."""
        with self._free:
            live, self._live, self._idle = list(self._live), set(), []
        for checker in live:
            checker.kill()

    def _acquire(self, owner: int | None, wait_s: float) -> _Checker | None:
        """Take a slot for `owner`, with its idle process if there is one; `Busy` after `wait_s`."""
        deadline = time.monotonic() + wait_s
        with self._free:
            while sum(self._running.values()) >= self.size or self._running[owner] >= self.per_owner:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Busy(self._busy_message(owner))
                self._free.wait(left)
            self._running[owner] += 1
            return self._idle.pop() if self._idle else None

    def _busy_message(self, owner: int | None) -> str:
        if self._running[owner] >= self.per_owner:
            return (
                f"this caller already has {self._running[owner]} schema checks running, the most one may "
                "have at once; retry when one has finished"
            )
        return f"all {self.size} schema-check processes are busy; retry shortly"

    def _release(self, owner: int | None, checker: _Checker | None) -> None:
        with self._free:
            self._running[owner] -= 1
            if self._running[owner] <= 0:
                del self._running[owner]
            if checker is not None and checker in self._live:
                self._idle.append(checker)
            self._free.notify_all()

    def _start(self) -> _Checker:
        checker = _Checker(self._command)
        with self._free:
            self._live.add(checker)
        return checker

    def _replace(self, checker: _Checker | None, *, start: bool = True) -> _Checker | None:
        """Kill `checker`; with `start`, start its successor now, so that it is ready for the next check."""
        if checker is not None:
            with self._free:
                self._live.discard(checker)
            checker.kill()
        if not start:
            return None
        try:
            return self._start()
        except OSError as exc:
            logger.error("could not start a schema-check process: %s", exc)
            return None


_pools: dict[int, CheckPool] = {}
_pools_lock = threading.Lock()


def check_pool(size: int) -> CheckPool:
    """This process's pool of `size` check processes (one per size: in practice one per process)."""
    with _pools_lock:
        if size not in _pools:
            _pools[size] = CheckPool(size)
        return _pools[size]


@atexit.register
def _close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
    for pool in pools:
        pool.close()
