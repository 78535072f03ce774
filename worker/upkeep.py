"""What every worker process does beside running jobs, so that no accepted job is lost.

- It renews the lease of each job it is running. A worker killed with `kill -9` stops renewing, and its
  jobs' leases expire.
- One worker at a time (a short Redis lock) sweeps the store: running jobs with an expired lease go back
  to the queue (or fail when out of attempts), and jobs queued in SQL for a while that have no message in
  Redis (Redis restarted without persistence, or the API died between insert and enqueue) are enqueued
  again. A duplicate message is harmless: claiming a job is a conditional UPDATE, so only one delivery
  runs it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import redis

from irq.jobs import JobManager, utcnow
from irq.settings import Settings
from worker.celery_app import brokered_job_ids, enqueue

log = logging.getLogger("irq.upkeep")

SWEEP_LOCK = "irq:sweeper"


@dataclass(frozen=True)
class SweepReport:
    expired: int  # running jobs whose worker stopped renewing their lease, sent back to the queue
    reenqueued: int  # queued jobs that had no message in the broker, enqueued again


def sweep(jobs: JobManager, broker: redis.Redis, settings: Settings) -> SweepReport:
    """One pass over the store; safe to run at any time, from any process."""
    requeued = jobs.expire_leases()
    for job in requeued:
        enqueue(job.id, job.priority)
    stale = jobs.queued_since_before(utcnow() - timedelta(seconds=settings.sweep_stale_s))
    missing = []
    if stale:
        held = brokered_job_ids(broker)  # read after the store, so a job finished meanwhile is only re-sent
        missing = [job for job in stale if job.id not in held]
        for job in missing:
            enqueue(job.id, job.priority)
    if requeued or missing:
        log.warning(
            "sweep: %d job(s) with an expired lease re-queued, %d lost message(s) re-sent",
            len(requeued),
            len(missing),
        )
    return SweepReport(expired=len(requeued), reenqueued=len(missing))


class Upkeep:
    """A daemon thread renewing this worker's leases and, when it holds the sweep lock, sweeping."""

    def __init__(self, jobs: JobManager, broker: redis.Redis, settings: Settings, worker: str) -> None:
        self.jobs = jobs
        self.broker = broker
        self.settings = settings
        self.worker = worker
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="irq-upkeep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        renew_every = self.settings.lease_s / 3
        tick = min(renew_every, self.settings.sweep_interval_s)
        next_renew = next_sweep = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self._guarded(self.jobs.renew_leases, self.worker, self.settings.lease_s)
                next_renew = now + renew_every
            if now >= next_sweep:
                self._guarded(self._sweep_if_leader)
                next_sweep = now + self.settings.sweep_interval_s
            self._stop.wait(tick)

    def _sweep_if_leader(self) -> None:
        interval_ms = int(self.settings.sweep_interval_s * 1000)
        if self.broker.set(SWEEP_LOCK, self.worker, nx=True, px=max(interval_ms - 100, 100)):
            sweep(self.jobs, self.broker, self.settings)

    @staticmethod
    def _guarded(fn, *args) -> None:  # type: ignore[no-untyped-def]
        try:
            fn(*args)
        except Exception as exc:  # the store or Redis is down: try again next tick
            log.warning("upkeep: %s failed: %s: %s", fn.__name__, type(exc).__name__, exc)
