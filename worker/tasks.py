"""The job task: one Celery message carries one job id; everything else is read from the store."""

from __future__ import annotations

import enum
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any, TypeVar

from celery.exceptions import Terminated
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown

from inference.abort import Abort, Aborted
from inference.client import InferenceClient, connect
from inference.errors import EndpointDown, InferenceError, PartialOutput
from inference.protocol import GenerateRequest, GenerateResponse
from irq.bounding import cached_bounded_schema, is_hollow
from irq.bounding.narrowing import mentions_one_of, one_of_narrowed
from irq.broker import TASK_RUN_JOB, Broker
from irq.clock import utcnow
from irq.endpoints import Endpoint, Registry, RegistryError
from irq.error_codes import ErrorCode
from irq.jobs import JobManager, Outcome
from irq.retry import Fault, InternalFault
from irq.schema_check.options import GuidanceOptions, engine_schema
from irq.settings import Settings, get_settings
from irq.store.db import STORE_UNAVAILABLE, Database
from irq.store.models import Job
from worker.app import celery_app
from worker.cancels import CancelWatch
from worker.gate import EndpointGate
from worker.upkeep import Upkeep
from worker.validation import HollowDocument, Uncheckable, checked_document

log = logging.getLogger("irq.worker")
T = TypeVar("T")


class Attempt(enum.StrEnum):
    """How one delivery of a job's message ended."""

    succeeded = "succeeded"
    failed = "failed"
    retrying = "retrying"  # back in the queue after a retryable fault
    skipped = "skipped"  # not queued: cancelled, finished, or another delivery holds it
    discarded = "discarded"  # a result for a job cancelled meanwhile
    waiting = "waiting"  # the endpoint is down: the job went back to its queue, its attempt not spent


def served_endpoint(registry: Registry, settings: Settings) -> Endpoint:
    """The endpoint this worker process serves: `IRQ_WORKER_ENDPOINT`, or the registry's only one."""
    if settings.worker_endpoint:
        return registry.endpoint(settings.worker_endpoint)
    if len(registry.endpoints) > 1:
        raise RegistryError("a worker process serves one endpoint: run it as `irq worker --endpoint NAME`")
    return registry.endpoints[0]


class _Process:
    """The store, the broker, the inference client and the upkeep thread of one worker process.

    Created once, under a lock, when the worker is ready (or on first use): the threads pool runs tasks in
    the worker's own process, where Celery's per-child signal never fires. `name` identifies this process
    in job records and leases, so a restarted worker never renews the leases of the one it replaces.
    `node` is the Celery node name, to which the gate sends "stop / resume consuming".
    """

    _lock = threading.Lock()
    name = ""
    node = ""
    db: Database | None = None
    broker: Broker | None = None
    jobs: JobManager | None = None
    inference: InferenceClient | None = None
    gate: EndpointGate | None = None
    upkeep: Upkeep | None = None
    cancels: CancelWatch | None = None
    guidance = GuidanceOptions()
    # Per job id, how many of this process's threads hold a delivery of it; only these leases are renewed.
    # A count, not a set: a broker that reconnects gives back unacknowledged messages, so a job may be
    # delivered again while a thread still runs it, and that duplicate's end must not end the lease.
    running: Counter[str] = Counter()
    _running_lock = threading.Lock()

    @classmethod
    def get(cls) -> tuple[JobManager, InferenceClient, EndpointGate]:
        with cls._lock:
            if cls.jobs is None or cls.inference is None or cls.gate is None:
                settings = get_settings()
                cls.broker = Broker(settings, celery_app)
                endpoint = served_endpoint(cls.broker.registry, settings)
                cls.name = f"{settings.worker_name or socket.gethostname()}#{os.getpid()}"
                cls.guidance = GuidanceOptions.of(settings)
                # A connection for each thread, and a few for the upkeep and the gate.
                cls.db = Database(settings.database_url, pool_size=endpoint.max_inflight + 4)
                cls.jobs = JobManager.open(settings, cls.db, cls.broker)
                cls.inference = connect(endpoint, settings)
                cls.gate = EndpointGate(endpoint, cls.inference.healthy, cls._consume)
                cls.upkeep = Upkeep(cls.jobs, settings, cls.name, cls.gate, cls.running_ids)
                cls.upkeep.start()
                cls.cancels = CancelWatch(cls.broker.redis)
                cls.cancels.start()
            return cls.jobs, cls.inference, cls.gate

    @classmethod
    def running_ids(cls) -> list[str]:
        with cls._running_lock:
            return list(cls.running)

    @classmethod
    def track(cls, job_id: str, on: bool) -> None:
        with cls._running_lock:
            cls.running[job_id] += 1 if on else -1
            if cls.running[job_id] <= 0:
                del cls.running[job_id]

    @classmethod
    def watching(cls, job_id: str) -> AbstractContextManager[Abort]:
        """The abort of the job's inference request, set when the job ends meanwhile (`worker/cancels.py`)."""
        return cls.cancels.watching(job_id) if cls.cancels is not None else nullcontext(Abort())

    @classmethod
    def _consume(cls, on: bool) -> None:
        """Start or stop taking messages from the endpoint's queue."""
        if cls.upkeep is not None:
            cls.upkeep.publish()
        if not cls.node or cls.gate is None:
            return
        queue, control = cls.gate.endpoint.queue, celery_app.control
        if on:
            control.add_consumer(queue, destination=[cls.node], reply=False)
        else:
            control.cancel_consumer(queue, destination=[cls.node], reply=False)

    @classmethod
    def close(cls) -> None:
        with cls._lock:
            if cls.gate is not None:
                cls.gate.stop()
            if cls.upkeep is not None:
                cls.upkeep.stop()
            if cls.cancels is not None:
                cls.cancels.stop()
            if cls.inference is not None:
                cls.inference.close()
            if cls.broker is not None:
                cls.broker.close()
            if cls.db is not None:
                cls.db.dispose()
            cls.db = cls.jobs = cls.inference = cls.broker = cls.upkeep = cls.gate = cls.cancels = None


@worker_ready.connect
def _open(sender: Any = None, **_: Any) -> None:
    _Process.node = str(getattr(sender, "hostname", "") or "")
    _Process.get()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close(**_: Any) -> None:
    _Process.close()


def _store(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A store call, retried with backoff while the database is unreachable, frozen or its pool exhausted
    (up to `store_retry_s`).

    A job's result is never dropped because the database restarted; if it stays down longer, the job is
    still `running` in the store, its lease is no longer renewed, and the sweeper re-queues it once it
    expires.
    """
    deadline = time.monotonic() + get_settings().store_retry_s
    delay = 0.25
    while True:
        try:
            return call(*args, **kwargs)
        except STORE_UNAVAILABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            cause = type(getattr(exc, "orig", None) or exc).__name__
            log.warning("store unreachable (%s), retrying in %.1f s", cause, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


GATE_WAIT_S = 1.0  # how long a delivered job waits for a closed gate before going back to its queue


def run_job(job_id: str) -> Attempt:
    """Claim, generate, validate, store."""
    jobs, inference, gate = _Process.get()
    if not gate.wait_open(GATE_WAIT_S):
        # Delivered before the worker stopped consuming: back to the queue, for when the endpoint (or a
        # replica's worker) can take it.
        _store(jobs.send_again, job_id)
        return Attempt.waiting
    _Process.track(job_id, True)
    try:
        job = _store(jobs.claim, job_id, _Process.name, gate.endpoint.name, get_settings().lease_s)
        if job is None:
            return Attempt.skipped
        try:
            return _attempt(jobs, inference, gate, job)
        except Exception as exc:  # whatever went wrong, the job ends (or is retried): it never stays running
            log.exception("job %s attempt %d: unexpected %s", job.id, job.attempts, type(exc).__name__)
            fault = InternalFault(f"{type(exc).__name__} in the worker: {str(exc)[:200]}")
            return _after_fault(jobs, job, fault)
    finally:
        _Process.track(job_id, False)


def _attempt(jobs: JobManager, inference: InferenceClient, gate: EndpointGate, job: Job) -> Attempt:
    assert job.deadline_at is not None  # set by the claim
    remaining = (job.deadline_at - utcnow()).total_seconds()
    if remaining <= 0:
        _store(jobs.fail, job, ErrorCode.timeout, f"the job's {job.timeout_s:g} s ran out over its attempts")
        return Attempt.failed
    schema = (
        cached_bounded_schema(job.document_schema, job.max_tokens) if job.bounded else job.document_schema
    )
    request = GenerateRequest(
        prompt=job.prompt,
        # Validated below against the user's own schema, whatever the engine was given.
        schema=engine_schema(schema, _Process.guidance),
        max_tokens=job.max_tokens,
        temperature=job.temperature,
        top_p=job.top_p,
        # A bounded document closes within the budget: stopping a loop there would only fail the job.
        stop_loops=not job.bounded,
    )
    endpoint = gate.endpoint
    try:
        with _Process.watching(job.id) as abort:
            reply = inference.generate(request, timeout_s=remaining, abort=abort)
    except Aborted:
        log.info("job %s attempt %d: ended meanwhile, its request dropped", job.id, job.attempts)
        return Attempt.discarded
    except EndpointDown as exc:
        gate.close(str(exc))
        _store(jobs.release, job)
        return Attempt.waiting
    except InferenceError as exc:
        log.warning("job %s attempt %d: %s (%s)", job.id, job.attempts, exc.code, exc)
        return _after_fault(jobs, job, exc, endpoint.name)
    if reply.model != job.model or (job.backend not in (None, "auto") and reply.backend != job.backend):
        message = (
            f"endpoint {endpoint.name} answered with model {reply.model!r} and backend {reply.backend!r}; "
            f"the job asked for {job.model!r} with {job.backend!r} (check the registry's entry for it)"
        )
        failed = _store(jobs.fail, job, ErrorCode.model_mismatch, message, endpoint=endpoint.name)
        return Attempt.failed if failed else Attempt.discarded
    if mentions_one_of(schema):
        with _Process.watching(job.id) as abort:
            reply = _one_branch_again(inference, request, schema, reply, job.deadline_at, abort)
    return _store_reply(jobs, job, reply, endpoint.name)


def _one_branch_again(
    inference: InferenceClient,
    request: GenerateRequest,
    schema: dict[str, Any],
    reply: GenerateResponse,
    deadline: datetime,
    abort: Abort,
) -> GenerateResponse:
    """A document that matches several branches of a `oneOf` (the lenient grammar reads it as `anyOf`):
    generated once more, at once, under the schema narrowed to one branch that excludes the others
    (`irq.bounding.narrowing`); the first reply stands when nothing can be narrowed or the second fails (or
    is dropped: the job was cancelled meanwhile, and its request stops with it, as the first one's would)."""
    document, error = checked_document(reply.text, schema)
    narrowed = None if error is None else one_of_narrowed(schema, document)
    remaining = (deadline - utcnow()).total_seconds()
    if narrowed is None or remaining <= 0:
        return reply
    again = request.model_copy(update={"schema_": engine_schema(narrowed, _Process.guidance)})
    try:
        return inference.generate(again, timeout_s=remaining, abort=abort)
    except Aborted:  # the job ended meanwhile: the lifecycle drops whatever is stored for it now
        return reply
    except InferenceError as exc:
        log.warning("narrowed to one oneOf branch, the generation failed: %s (%s)", exc.code, exc)
        return reply


def _after_fault(jobs: JobManager, job: Job, fault: Fault, endpoint: str | None = None) -> Attempt:
    """The lifecycle's retry decision for this attempt's fault, as the attempt's end."""
    decision = _store(jobs.retry_or_fail, job, fault, endpoint=endpoint)
    return Attempt.retrying if decision.retry else Attempt.failed


def _store_reply(jobs: JobManager, job: Job, reply: GenerateResponse, endpoint: str) -> Attempt:
    try:
        document, error = checked_document(reply.text, job.document_schema)
    except Uncheckable as exc:
        return _after_fault(jobs, job, exc, endpoint)
    if error is not None:
        message = f"output does not match the schema {error}"
        failed = _store(
            jobs.fail,
            job,
            ErrorCode.schema_mismatch,
            message,
            endpoint=endpoint,
            result=document,
            validation_error=error,
            output=PartialOutput(
                text="",
                finish_reason=reply.finish_reason,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens or reply.tokens_used,
            ),
        )
        return Attempt.failed if failed else Attempt.discarded
    if is_hollow(document, job.document_schema):
        output = PartialOutput(
            text=json.dumps(document),
            finish_reason=reply.finish_reason,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens or reply.tokens_used,
        )
        return _after_fault(jobs, job, HollowDocument(document, output), endpoint)
    outcome = Outcome(
        result=document,
        finish_reason=reply.finish_reason,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens or reply.tokens_used,
        ttft_ms=reply.ttft_ms,
        generation_ms=reply.generation_time_ms,
        backend=reply.backend,
        endpoint=endpoint,
        engine_wait_ms=reply.engine_wait_ms,
    )
    return Attempt.succeeded if _store(jobs.succeed, job, outcome) else Attempt.discarded


class JobFailed(Exception):
    """The job failed: raised so that Celery's events (Flower) show the task as FAILURE, not SUCCESS. It is
    in the task's `throws`, so Celery logs it in one line, without a traceback; the task has no retry
    policy of its own, so Celery never retries it (irq's retries are the lifecycle's, `irq/retry.py`)."""


class NotRun(Terminated):  # type: ignore[misc]  # Celery's exceptions carry no type hints
    """The delivery ran nothing: its job was cancelled (or had finished, or another delivery holds it).
    Celery's worker answers a task that ends with `Terminated` as a revoked one: it acks the message and
    sends `task-revoked`, so Flower shows REVOKED, as for a task revoked through Celery. (A `Reject` would
    show as FAILURE: Celery sends `task-failed` for a message rejected for good.)"""


@celery_app.task(name=TASK_RUN_JOB, throws=(JobFailed, NotRun))
def run_job_task(job_id: str) -> str:
    """The attempt's end as Celery's state: FAILURE for a failed job, REVOKED for a delivery that ran
    nothing (a cancelled job's); SUCCESS otherwise, its value saying how the attempt ended (`retrying`: the
    job is queued again as a new message)."""
    attempt = run_job(job_id)
    if attempt == Attempt.failed:
        raise JobFailed(f"job {job_id} failed: GET /v1/jobs/{job_id} says why")
    if attempt in (Attempt.skipped, Attempt.discarded):
        why = "its result was discarded" if attempt == Attempt.discarded else "it was not queued"
        raise NotRun(f"job {job_id}: {why} (cancelled, finished, or run by another delivery)")
    return attempt.value
