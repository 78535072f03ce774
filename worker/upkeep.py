"""What every worker process does beside running jobs, so that no accepted job is lost.

- It renews the lease of each job one of its threads is running (not every job recorded under its name: a
  claim whose reply was lost, or an attempt whose thread gave up on the store, is left to expire). A worker
  killed with `kill -9` stops renewing, and its jobs' leases expire. With the same beat it publishes what
  its endpoint gate sees (`worker/gate.py`).
- One worker at a time (a short Redis lock) sweeps the store: running jobs with an expired lease go back
  to the queue (or fail when out of attempts), and jobs queued in SQL for a while that have no message in
  Redis (Redis restarted without persistence, or the API died between insert and enqueue) are enqueued
  again. A duplicate message is harmless: claiming a job is a conditional UPDATE, so only one delivery
  runs it.
- One worker at a time (another lock) keeps the records, on a thread of its own so that a long catch-up
  never delays a lease renewal: it rolls up the jobs that finished and prunes those past retention
  (`irq/retention.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from irq import retention
from irq.broker import RECORDS_LOCK, SWEEP_LOCK
from irq.jobs import JobManager
from irq.settings import Settings
from worker.gate import EndpointGate

log = logging.getLogger("irq.upkeep")


@dataclass(frozen=True)
class SweepReport:
    expired: int  # running jobs whose worker stopped renewing their lease, sent back to the queue
    reenqueued: int  # queued jobs that had no message in the broker, enqueued again
    unreachable: int  # queued jobs failed because their endpoints stayed down longer than their timeout


def sweep(jobs: JobManager, settings: Settings, alive: Collection[tuple[str, str]] = ()) -> SweepReport:
    """One pass over the store; safe to run at any time, from any process. `alive`: (worker, job id) of
    the jobs the sweeping process's own threads are on, alive whatever their lease says (its renewal can
    lag behind a store that many writers hold up)."""
    expired = jobs.expire_leases(alive=alive)
    # A job delivered to a live worker is claimed at once and then has a lease: one delivered longer ago
    # than a lease and still queued was delivered to a worker that died.
    reenqueued = jobs.resend_lost(settings.sweep_stale_s, held_s=settings.lease_s)
    unreachable = jobs.fail_unreachable()
    report = SweepReport(expired, reenqueued, unreachable)
    if report.expired or report.reenqueued or report.unreachable:
        log.warning(
            "sweep: %d job(s) with an expired lease re-queued, %d lost message(s) re-sent, %d job(s) failed "
            "for an endpoint down longer than their timeout",
            report.expired,
            report.reenqueued,
            report.unreachable,
        )
    return report


class Upkeep:
    """A daemon thread renewing this worker's leases and, when it holds the sweep lock, sweeping; another
    keeping the records when it holds theirs."""

    def __init__(
        self,
        jobs: JobManager,
        settings: Settings,
        worker: str,
        gate: EndpointGate,
        running: Callable[[], list[str]],
    ) -> None:
        self.jobs = jobs
        self.settings = settings
        self.worker = worker
        self.gate = gate
        self.running = running  # the ids of the jobs this process's threads are on now
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name="irq-upkeep", daemon=True),
            threading.Thread(target=self._keep_records, name="irq-records", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        renew_every = self.settings.lease_s / 3
        tick = min(renew_every, self.settings.sweep_interval_s)
        next_renew = next_sweep = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self._guarded(self._renew)
                self._guarded(self.publish)
                next_renew = now + renew_every
            if now >= next_sweep:
                self._guarded(self._sweep_if_leader)
                next_sweep = now + self.settings.sweep_interval_s
            self._stop.wait(tick)

    def _renew(self) -> None:
        running = self.running()
        if running:
            self.jobs.store.renew_leases(self.worker, running, self.settings.lease_s)

    def publish(self) -> None:
        """Publish what the endpoint gate sees (also on every change of it)."""
        state = {**self.gate.state(), "worker": self.worker}
        self.jobs.broker.publish_endpoint_state(self.gate.endpoint.name, state)

    def _sweep_if_leader(self) -> None:
        interval_ms = int(self.settings.sweep_interval_s * 1000)
        if self.jobs.broker.take_lock(SWEEP_LOCK, self.worker, max(interval_ms - 100, 100)):
            sweep(self.jobs, self.settings, alive={(self.worker, job_id) for job_id in self.running()})

    def _keep_records(self) -> None:
        broker, interval = self.jobs.broker, self.settings.sweep_interval_s
        while not self._stop.wait(interval):
            # Held while it works (a crashed holder's lock lapses in a minute); a second keeper at once
            # would only find its steps taken (the rollups' mark and merges are conditional).
            if self._guarded(broker.take_lock, RECORDS_LOCK, self.worker, 60_000):
                try:
                    self._guarded(retention.keep, self.jobs.store.db, self.settings)
                finally:
                    self._guarded(broker.release_lock, RECORDS_LOCK, self.worker)

    @staticmethod
    def _guarded(fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, or None (logged) when it fails: the store or Redis is down, try again next tick."""
        try:
            return fn(*args)
        except Exception as exc:
            log.warning("upkeep: %s failed: %s: %s", fn.__name__, type(exc).__name__, exc)
            return None
