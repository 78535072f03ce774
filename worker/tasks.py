"""The job task: one Celery message carries one job id; everything else is read from the store."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import jsonschema
import redis
from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown
from sqlalchemy.exc import OperationalError

from inference.client import InferenceClient, InferenceError, connect
from inference.modal_client import ModalInferenceClient
from irq.events import publish_finished
from irq.jobs import JobManager, Outcome, utcnow
from irq.settings import get_settings
from irq.store.db import Database
from irq.store.models import Job
from worker.celery_app import TASK_RUN_JOB, celery_app, enqueue
from worker.upkeep import Upkeep

log = logging.getLogger("irq.worker")
T = TypeVar("T")


class _Process:
    """The store, the inference client and the upkeep thread of one worker process.

    Created once, under a lock, when the worker is ready (or on first use): the threads pool runs tasks in
    the worker's own process, where Celery's per-child signal never fires. `name` identifies this process
    in job records and leases, so a restarted worker never renews the leases of the one it replaces.
    """

    _lock = threading.Lock()
    name = ""
    db: Database | None = None
    jobs: JobManager | None = None
    inference: InferenceClient | ModalInferenceClient | None = None
    redis: redis.Redis | None = None
    upkeep: Upkeep | None = None

    @classmethod
    def get(cls) -> tuple[JobManager, InferenceClient | ModalInferenceClient]:
        with cls._lock:
            if cls.jobs is None or cls.inference is None:
                settings = get_settings()
                cls.name = f"{settings.worker_name or socket.gethostname()}#{os.getpid()}"
                cls.db = Database(settings.database_url)
                cls.jobs = JobManager(cls.db)
                cls.inference = connect(settings)
                cls.redis = redis.Redis.from_url(
                    settings.redis_url, socket_timeout=10, socket_connect_timeout=5
                )
                cls.upkeep = Upkeep(cls.jobs, cls.redis, settings, cls.name)
                cls.upkeep.start()
            return cls.jobs, cls.inference

    @classmethod
    def close(cls) -> None:
        with cls._lock:
            if cls.upkeep is not None:
                cls.upkeep.stop()
            if cls.inference is not None:
                cls.inference.close()
            if cls.redis is not None:
                cls.redis.close()
            if cls.db is not None:
                cls.db.dispose()
            cls.db = cls.jobs = cls.inference = cls.redis = cls.upkeep = None


@worker_ready.connect
def _open(**_: Any) -> None:
    _Process.get()


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close(**_: Any) -> None:
    _Process.close()


def _store(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A store call, retried with backoff while the database is unreachable (up to `store_retry_s`).

    A job's result is never dropped because the database restarted; if it stays down longer, the job is
    still `running` in the store and the sweeper re-queues it once its lease expires.
    """
    deadline = time.monotonic() + get_settings().store_retry_s
    delay = 0.25
    while True:
        try:
            return call(*args, **kwargs)
        except OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("store unreachable (%s), retrying in %.1f s", type(exc.orig).__name__, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def backoff_s(attempt: int) -> float:
    """Exponential backoff with full jitter."""
    settings = get_settings()
    return random.uniform(0, min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2 ** (attempt - 1)))


def _validation_error(document: Any, schema: dict[str, Any]) -> str | None:
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)(
            schema
        ).iter_errors(document)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def _document(text: Any, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The generated document and its validation error; a JSON string is decoded when that makes it valid."""
    error = _validation_error(text, schema)
    if error is not None and isinstance(text, str):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text, error
        decoded_error = _validation_error(decoded, schema)
        if decoded_error is None:
            return decoded, None
    return text, error


def run_job(job_id: str) -> str:
    """Claim, generate, validate, store. Returns the status the job ended this attempt in."""
    jobs, inference = _Process.get()
    job = _store(jobs.claim, job_id, _Process.name, get_settings().lease_s)
    if job is None:
        return "skipped"  # cancelled, finished, or another delivery holds it
    assert job.deadline_at is not None  # set by the claim
    remaining = (job.deadline_at - utcnow()).total_seconds()
    if remaining <= 0:
        _store(jobs.fail, job, "timeout", f"the job's {job.timeout_s:g} s ran out over its attempts")
        return "failed"
    try:
        reply = inference.generate(
            prompt=job.prompt,
            schema=job.schema_,
            max_tokens=job.max_tokens,
            temperature=job.temperature,
            top_p=job.top_p,
            timeout_s=remaining,
        )
    except InferenceError as exc:
        return _handle_fault(jobs, job, exc, inference.url)
    document, error = _document(reply.text, job.schema_)
    outcome = Outcome(
        result=document,
        finish_reason=reply.finish_reason,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens or reply.tokens_used,
        ttft_ms=reply.ttft_ms,
        generation_ms=reply.generation_time_ms,
        backend=reply.backend,
        endpoint=inference.url,
        validation_error=error,
    )
    if error is not None:
        _store(
            jobs.fail,
            job,
            "schema_mismatch",
            f"output does not match the schema {error}",
            endpoint=inference.url,
            result=document,
            validation_error=error,
        )
        return "failed"
    return "succeeded" if _store(jobs.succeed, job, outcome) else "discarded"  # cancelled meanwhile


def _handle_fault(jobs: JobManager, job: Job, exc: InferenceError, endpoint: str) -> str:
    log.warning("job %s attempt %d: %s (%s)", job.id, job.attempts, exc.code, exc)
    if exc.retryable and _store(jobs.requeue, job, exc.code, str(exc)):
        try:
            enqueue(job.id, job.priority, countdown=backoff_s(job.attempts))
        except Exception as broker_exc:  # the job is queued in the store: the sweeper sends it again
            log.warning("job %s: could not enqueue its retry: %s", job.id, broker_exc)
        return "queued"
    if not exc.retryable:
        _store(jobs.fail, job, exc.code, str(exc), endpoint=endpoint)
    return "failed"


@celery_app.task(name=TASK_RUN_JOB)
def run_job_task(job_id: str) -> str:
    status = run_job(job_id)
    if status in ("succeeded", "failed") and _Process.redis is not None:
        publish_finished(_Process.redis, job_id)  # wakes the clients long-polling this job
    return status
