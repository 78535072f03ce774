"""The store's heavy reads in processes of their own, so that their CPU never holds an API process's
interpreter lock.

`/v1/stats`, `/dashboard/data` and `/metrics` read the rollups and merge their histograms in Python: run in
the API's own process, a long-window read held its interpreter lock for hundreds of milliseconds at a time,
and the submits in flight waited for it (p99 8 → 93 ms at 10M jobs, docs/bench-results/NOTEBOOK.md).
`ReadProcess.call` runs such a read (a function whose first argument is the store's `Database`: a read of
`irq/store`, or a route's whole computation over such reads) in a child process with its own small pool to the
same store, and hands back its result; the API thread waiting for it holds no lock meanwhile. The children run
at a lower priority than the API, are started when first needed (spawned: a fork of a threaded server is
unsafe), and one that dies is replaced at the next read.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from irq.store.db import STORE_UNAVAILABLE, Database

PROCESSES = 2  # so that one slow read does not hold back the next
# Below the API's priority: on a busy machine the scheduler gives the submits' threads the CPU first.
NICENESS = 10
PARENT_CHECK_S = 1.0
T = TypeVar("T")


class StoreReadFailed(Exception):
    """A read in the read process found the store unavailable, took too long, or lost its process: the
    API answers 503 `store_unavailable`, as for a read of its own."""


_db: Database | None = None  # the child's


def _start(parent: int, url: str, wait_s: float, statement_timeout_s: float | None) -> None:
    global _db
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C of the API stops the children through the pool
    os.nice(NICENESS)
    threading.Thread(target=_exit_with, args=(parent,), name="irq-read-parent", daemon=True).start()
    _db = Database(url, pool_size=1, wait_s=wait_s, statement_timeout_s=statement_timeout_s)


def _exit_with(parent: int) -> None:
    """End this child once the API that started it is gone (killed, it cannot stop its pool): the pool's
    queue never closes under a child, which holds both of its ends."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _run(read: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    assert _db is not None, "the read process was not started"
    try:
        return read(_db, *args, **kwargs)
    except STORE_UNAVAILABLE as exc:  # as text: a driver's exception may not survive the trip back
        raise StoreReadFailed(
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


class ReadProcess:
    """`call(read, …)` runs `read(db, …)`, a module-level function (the child imports it by name), in a child
    process and returns its result, which must pickle; at most `timeout_s` are waited for it."""

    def __init__(self, url: str, wait_s: float, statement_timeout_s: float | None, timeout_s: float) -> None:
        self._start_args = (os.getpid(), url, wait_s, statement_timeout_s)
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def call(self, read: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        pool = self._current()
        try:
            return pool.submit(_run, read, args, kwargs).result(timeout=self.timeout_s)
        except FutureTimeout:
            raise StoreReadFailed(f"the read took longer than {self.timeout_s:.0f} s") from None
        except BrokenProcessPool:
            self._discard(pool)
            raise StoreReadFailed("the read process exited; the next read starts another") from None

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    PROCESSES,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start,
                    initargs=self._start_args,
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
