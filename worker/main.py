"""`irq worker`: one Celery worker process per endpoint it serves, so that each endpoint has its own queue,
its own bound on requests in flight (`max_inflight` threads), and its own gate (`worker/gate.py`): a cold,
slow or dead endpoint never holds back the jobs of another."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from irq.broker import worker_argv
from irq.endpoints import Endpoint, RegistryError, load_registry
from irq.settings import Settings, get_settings
from irq.supervision import supervise

STOP_S = 30  # how long the processes may take to finish their jobs after a stop


def run_workers(settings: Settings, names: Sequence[str]) -> int:
    """Serve the endpoints named (all of the registry's for none); returns the exit status."""
    try:
        endpoints = load_registry(settings).selected(names)
    except RegistryError as exc:
        print(f"irq worker: {exc}", file=sys.stderr)
        return 2
    if len(endpoints) == 1:
        return _serve(endpoints[0])
    return _supervise(endpoints)


def _serve(endpoint: Endpoint) -> int:
    """This process becomes the Celery worker of `endpoint`; returns its exit status, not 0 when it stopped
    on an error (Celery logs it as "Unrecoverable error"), so that a supervisor restarts it."""
    os.environ["IRQ_WORKER_ENDPOINT"] = endpoint.name
    get_settings.cache_clear()
    from celery.bin.celery import celery

    # Celery's command line itself: `app.worker_main` drops the status the worker command ends with.
    argv = ["-A", "worker.app", *worker_argv(get_settings(), endpoint)]
    status = celery.main(args=argv, standalone_mode=False)
    return status if isinstance(status, int) else 0


def _supervise(endpoints: Sequence[Endpoint]) -> int:
    """One `irq worker --endpoint NAME` child per endpoint; a stop signal stops them all, and so does the
    exit of any one of them (then with its exit status)."""
    argv = [sys.executable, "-m", "cli", "worker", "--endpoint"]
    return supervise([([*argv, e.name], {}) for e in endpoints], "irq worker", STOP_S)
