"""The job lifecycle: the one place that moves a job between statuses, with the side effects each move
carries (the message to the broker after a create or a requeue, the "finished" notice after every move
into a terminal status, the retry decision after a fault).

queued → running → succeeded | failed | cancelled; a retryable fault sends a running job back to queued
until its attempts or its deadline run out. Every transition is a single conditional UPDATE
(`irq/store/jobs.py`), so a repeated or late call (a duplicate delivery, a result after cancel) changes
nothing.

Broker down at submit: a submit whose first message cannot be sent keeps nothing (its rows are deleted
and `BrokerUnavailable` is raised, so the client is told to retry); once one message was sent, every job of
the submit is accepted, and a message that could not follow is sent by the sweeper (`resend_lost`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from irq.broker import Broker
from irq.clock import ms_between, new_id, utcnow
from irq.endpoints import EndpointState, NotServed, Registry
from irq.error_codes import ErrorCode
from irq.events import Notifier
from irq.retry import Fault, Generated, RetryDecision, RetryPolicy, WorkerLost
from irq.settings import Settings
from irq.store.db import Database
from irq.store.jobs import Also, JobStore
from irq.store.models import Batch, Job, JobStatus
from irq.store.updates import JobUpdate
from irq.submission import NewJob, job_row, request_hash, same_request

log = logging.getLogger("irq.jobs")

MAX_OUTPUT_CHARS = 16_000  # of a failed generation's text, kept on the job for inspection
RETRY_PRIORITY = 9  # a retry's message: the most urgent


class BrokerUnavailable(Exception):
    """A submit's first message could not be sent: nothing of the submit was kept."""


@dataclass(frozen=True)
class Outcome:
    """What one inference call produced, ready to be stored on the job."""

    result: Any
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    generation_ms: float
    backend: str
    endpoint: str
    engine_wait_ms: float | None = None
    validation_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class JobManager:
    """Submits, claims, finishes, retries, cancels and sweeps jobs; API, workers and the sweeper call this.
    Reads go to `store` directly."""

    def __init__(
        self, store: JobStore, broker: Broker, notifier: Notifier, retry: RetryPolicy, registry: Registry
    ) -> None:
        self.store = store
        self.broker = broker
        self.notifier = notifier
        self.retry = retry
        self.registry = registry

    @classmethod
    def open(cls, settings: Settings, db: Database, broker: Broker) -> JobManager:
        """The lifecycle of one process, over its store and broker."""
        return cls(
            JobStore(db),
            broker,
            Notifier(broker.redis),
            RetryPolicy.from_settings(settings),
            broker.registry,
        )

    def _enqueue(self, job: Job | Mapping[str, Any], priority: int, countdown: float | None = None) -> None:
        """Send the job's message to the queue of its model and backend (a stored job, or the row of one
        just inserted)."""
        row = job if isinstance(job, Mapping) else {"id": job.id, "model": job.model, "backend": job.backend}
        route = self.registry.route(row["model"], row["backend"])
        self.broker.enqueue(str(row["id"]), route.queue, priority, countdown)

    # --- submitting ------------------------------------------------------------------------

    def submit(self, owner_id: int, new: NewJob) -> tuple[Job, bool]:
        """Store a queued job and send its message; with an idempotency key this owner already used, the
        job it made (and False)."""
        asked = request_hash([new]) if new.idempotency_key is not None else ""
        if new.idempotency_key is not None:
            existing = self.store.by_idempotency_key(owner_id, new.idempotency_key)
            if existing is not None:
                return same_request(existing, existing.request_hash, asked), False
        row = job_row(owner_id, new, utcnow())
        if asked:
            row["request_hash"] = asked
        try:
            self.store.insert([row])
        except IntegrityError:
            # Two requests raced with the same idempotency key: the other one won.
            existing = self.store.by_idempotency_key(owner_id, new.idempotency_key or "")
            if existing is None:
                raise
            return same_request(existing, existing.request_hash, asked), False
        self._send([row])
        return Job(**row), True

    def submit_batch(
        self, owner_id: int, news: Sequence[NewJob], idempotency_key: str | None, also: Also | None = None
    ) -> tuple[Batch, bool]:
        """Store a batch, its jobs and `also(batch id)` in one transaction, then send their messages; with an
        idempotency key this owner already used, the batch it made (and False)."""
        asked = request_hash(news) if idempotency_key is not None else ""
        if idempotency_key is not None:
            existing = self.store.batch_by_idempotency_key(owner_id, idempotency_key)
            if existing is not None:
                return same_request(existing, existing.request_hash, asked), False
        now, batch_id = utcnow(), new_id()
        batch: dict[str, Any] = dict(
            id=batch_id,
            owner_id=owner_id,
            idempotency_key=idempotency_key,
            total=len(news),
            created_at=now,
            cancelled_at=None,
            request_hash=asked or None,
        )
        # Not stamped yet: `_send` stamps each chunk as it sends it, so that the sweeper tells a long upload
        # still being sent from one whose sender died.
        rows = [
            {**job_row(owner_id, new, now, batch_id, index), "enqueued_at": None}
            for index, new in enumerate(news)
        ]
        try:
            self.store.insert(rows, batch=batch, also=also(batch_id) if also is not None else ())
        except IntegrityError:
            existing = self.store.batch_by_idempotency_key(owner_id, idempotency_key or "")
            if existing is None:
                raise
            return same_request(existing, existing.request_hash, asked), False
        self._send(rows, batch_id=batch_id)
        return Batch(**batch), True

    def _send(self, rows: Sequence[dict[str, Any]], batch_id: str | None = None, chunk: int = 100) -> None:
        """The broker-down policy of the module docstring, for jobs just inserted (their rows); a batch's
        jobs are stamped `enqueued_at` a (small) chunk at a time, just before their messages go."""
        for sent, row in enumerate(rows):
            try:
                if batch_id is not None and sent % chunk == 0:
                    self.store.stamp_enqueued([r["id"] for r in rows[sent : sent + chunk]], utcnow())
                self._enqueue(row, row["priority"])
            except Exception as exc:
                if sent == 0:
                    self.store.delete_unsent([r["id"] for r in rows], batch_id)
                    raise BrokerUnavailable(f"could not enqueue the job: {type(exc).__name__}") from exc
                log.warning(
                    "%d job(s) stored but not sent (%s); the sweeper sends them", len(rows) - sent, exc
                )
                return

    # --- cancelling ------------------------------------------------------------------------

    def cancel(self, job_id: str, owner_id: int) -> Job | None:
        """Cancel a queued or running job; a finished job stays as it is. None if not the owner's."""
        cancelled = JobUpdate.ended(JobStatus.cancelled, ErrorCode.cancelled, "cancelled by the client")
        if self.store.cancel(job_id, owner_id, cancelled):
            self.notifier.finished([job_id])
        return self.store.get(job_id, owner_id)

    def cancel_batch(self, batch: Batch) -> None:
        """Cancel every queued or running job of the batch; finished ones keep their outcome."""
        cancelled = JobUpdate.ended(JobStatus.cancelled, ErrorCode.cancelled, "the batch was cancelled")
        self.notifier.finished(self.store.cancel_batch(batch.id, cancelled))

    def expire_batch(self, batch_id: str) -> None:
        """End the batch's queued and running jobs: its completion window is over (its finished jobs keep
        their outcome)."""
        message = "the batch's completion window ended"
        expired = JobUpdate.ended(JobStatus.cancelled, ErrorCode.batch_expired, message)
        self.notifier.finished(self.store.cancel_batch(batch_id, expired, mark_batch=False))

    # --- running ---------------------------------------------------------------------------

    def claim(self, job_id: str, worker: str, endpoint: str, lease_s: float) -> Job | None:
        """Move a queued job to running on `endpoint` and count the attempt; None if it is not queued."""
        return self.store.claim(job_id, worker, endpoint, lease_s)

    def send_again(self, job_id: str) -> None:
        """Send a queued job's message once more: the worker it was delivered to cannot run it now."""
        job = self.store.get(job_id)
        if job is not None and job.status == JobStatus.queued:
            self._enqueue(job, job.priority)

    def release(self, job: Job) -> bool:
        """Give a running job back to its queue as if this attempt had never started: its endpoint was
        down before the request reached it, so neither an attempt nor time of the job's deadline is spent.
        False if the job was no longer this running attempt."""
        back = JobUpdate(status=JobStatus.queued, attempts=job.attempts - 1, enqueued_at=utcnow(),
                         lease_expires_at=None, worker=None)  # fmt: skip
        if job.attempts == 1:
            back = dataclasses.replace(back, started_at=None, first_started_at=None)
        released = self.store.update_running(job, back)
        if released:
            self._requeue(job)
        return released

    def succeed(self, job: Job, outcome: Outcome) -> bool:
        """Store the result of a running job; False if the job was cancelled or finished meanwhile."""
        generation_s = outcome.generation_ms / 1000.0
        succeeded = JobUpdate(
            status=JobStatus.succeeded,
            result=outcome.result,
            validation_error=outcome.validation_error,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            backend=outcome.backend,
            endpoint=outcome.endpoint,
            engine_wait_ms=outcome.engine_wait_ms,
            ttft_ms=outcome.ttft_ms,
            generation_ms=outcome.generation_ms,
            tokens_per_s=(outcome.completion_tokens / generation_s) if generation_s > 0 else None,
            error_code=None,
            error_message=None,
        )
        return self._finish(job, succeeded)

    def fail(
        self,
        job: Job,
        code: ErrorCode | str,
        message: str,
        *,
        endpoint: str | None = None,
        result: Any = None,
        validation_error: str | None = None,
        output: Generated | None = None,
    ) -> bool:
        """Fail a running job for good with a machine-readable code, keeping what it produced (a document
        that did not validate, or the text of a generation that made none); False if it was no longer
        running."""
        failed = JobUpdate(status=JobStatus.failed, error_code=code, error_message=message[:4000])
        if endpoint is not None:
            failed = dataclasses.replace(failed, endpoint=endpoint)
        if result is not None:
            failed = dataclasses.replace(failed, result=result, validation_error=validation_error)
        if output is not None:
            failed = _with_output(failed, output)
        return self._finish(job, failed)

    def retry_or_fail(self, job: Job, fault: Fault, endpoint: str | None = None) -> RetryDecision:
        """After a fault: the retry policy's decision, applied (back to the queue after its delay, or
        failed). A job that is no longer this running attempt (cancelled meanwhile) is left alone."""
        decision = self.retry.decide(job, fault, utcnow())
        if not decision.retry:
            self.fail(job, decision.code, decision.message, endpoint=endpoint, output=fault.output)
            return decision
        requeued = self.store.update_running(
            job,
            JobUpdate(
                status=JobStatus.queued,
                enqueued_at=utcnow(),
                lease_expires_at=None,
                error_code=decision.code,
                error_message=decision.message,
                bounded=job.bounded or decision.bounded,
            ),
        )
        if requeued:
            self._requeue(job, countdown=decision.delay_s or None)
        return decision

    def _requeue(self, job: Job, countdown: float | None = None) -> None:
        """The message of a job just put back to `queued` in the store, at the front of its queue: the job's
        deadline runs over all its attempts, so the time between two of them is the backoff, not the length
        of the queue behind it. One that cannot be sent is the sweeper's to send."""
        try:
            self._enqueue(job, RETRY_PRIORITY, countdown)
        except Exception as exc:
            log.warning("job %s: could not enqueue it again: %s", job.id, exc)

    def _finish(self, job: Job, change: JobUpdate) -> bool:
        now = utcnow()
        change = dataclasses.replace(
            change,
            finished_at=now,
            lease_expires_at=None,
            queue_wait_ms=ms_between(job.started_at, job.enqueued_at),
            total_ms=ms_between(now, job.created_at),
        )
        finished = self.store.update_running(job, change)
        if finished:
            self.notifier.finished([job.id])
        return finished

    # --- sweeping --------------------------------------------------------------------------

    def expire_leases(self, limit: int = 1000, alive: Collection[tuple[str, str]] = ()) -> int:
        """Running jobs whose worker stopped renewing their lease (it died), but for those `alive` (worker,
        id), are retried or failed as any other fault would be; returns how many went back to the queue."""
        requeued = 0
        for job in (j for j in self.store.running_expired(utcnow(), limit) if (j.worker, j.id) not in alive):
            lost = WorkerLost(f"worker {job.worker} stopped renewing the job's lease")
            requeued += self.retry_or_fail(job, lost).retry
        return requeued

    def fail_unreachable(self) -> int:
        """Fail the queued jobs of a model and backend that every endpoint serving it has been down for
        longer than the job's `timeout`, while the job waited: an endpoint that stays down does not keep a
        job forever. Returns how many."""
        down = _down_since(self.registry, self.broker.endpoint_states())
        now, failed = utcnow(), 0
        for (model, backend), since in down.items():
            down_s = now.timestamp() - since
            default = self.registry.route(model, None).backend == backend
            for job in self.store.queued_for(model, backend, default):
                waited_s = (now - (job.enqueued_at or job.created_at)).total_seconds()
                if min(down_s, waited_s) < job.timeout_s:
                    continue
                message = (
                    f"no endpoint serving {model} with {backend} has answered for {down_s:.0f} s, "
                    f"longer than the job's timeout of {job.timeout_s:g} s"
                )
                ended = JobUpdate.ended(JobStatus.failed, ErrorCode.endpoint_unavailable, message)
                if self.store.end_queued(job.id, ended):
                    self.notifier.finished([job.id])
                    failed += 1
        return failed

    def resend_lost(self, stale_s: float, held_s: float) -> int:
        """Send again the jobs queued in the store for more than `stale_s` that the broker does not hold:
        Redis restarted without persistence, a message could not be sent, or it was delivered more than
        `held_s` ago to a worker that died before claiming it. Returns how many."""
        now = utcnow()
        cutoff = now - timedelta(seconds=stale_s)
        # A batch whose sender stopped stamping (the API died while sending it) has jobs never sent.
        missing = self.store.unsent_since_before(cutoff)
        stale = self.store.queued_since_before(cutoff)
        delivered_after = now.timestamp() - held_s
        # Only when the broker holds fewer messages than there are sent jobs queued can one be missing: the
        # whole queue is read only then, so a long queue costs a count per sweep. RabbitMQ keeps its messages
        # (durable queues, persistent messages) and gives a dead consumer's back at once: nothing to look for.
        if (
            stale
            and not self.broker.amqp
            and self.broker.message_count(delivered_after) < self.store.count_sent_queued()
        ):
            # Read after the store: a job finished meanwhile is only sent again, and its claim will fail.
            lost = self.broker.without_message({job.id for job in stale}, delivered_after)
            missing += [job for job in stale if job.id in lost]
        self.store.stamp_enqueued([job.id for job in missing], now)
        for job in missing:
            try:
                self._enqueue(job, job.priority)
            except NotServed as exc:  # its endpoints were taken out of the registry: nothing can run it
                ended = JobUpdate.ended(JobStatus.failed, ErrorCode.model_unavailable, str(exc))
                if self.store.end_queued(job.id, ended):
                    self.notifier.finished([job.id])
        return len(missing)


def _down_since(registry: Registry, states: dict[str, dict[str, object]]) -> dict[tuple[str, str], float]:
    """Per model and backend whose every endpoint its workers see down: since when (the latest of them)."""
    down = {}
    for route in registry.routes:
        seen = [EndpointState.of(states.get(e.name)) for e in registry.serving(route)]
        if seen and all(s.state == "down" for s in seen):
            down[(route.model, route.backend)] = max(s.since for s in seen)
    return down


def _with_output(failed: JobUpdate, output: Generated) -> JobUpdate:
    """A failure's values with what its generation left behind: its text (a document that did not validate
    is kept as `result` instead), why it stopped, and its tokens."""
    failed = dataclasses.replace(
        failed,
        finish_reason=output.finish_reason,
        prompt_tokens=output.prompt_tokens,
        completion_tokens=output.completion_tokens,
    )
    return dataclasses.replace(failed, output_text=output.text[:MAX_OUTPUT_CHARS]) if output.text else failed
