"""The job task: one Celery message carries one job id; everything else is read from the store."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
from typing import Any

import jsonschema
from celery import Task
from celery.signals import worker_process_shutdown, worker_shutdown

from inference.client import InferenceClient, InferenceError, connect
from inference.modal_client import ModalInferenceClient
from irq.jobs import JobManager, Outcome, utcnow
from irq.settings import get_settings
from irq.store.db import Database
from irq.store.models import Job
from worker.celery_app import TASK_RUN_JOB, celery_app, enqueue

log = logging.getLogger("irq.worker")


class _Process:
    """The store and the inference client, created once per worker process and closed when it stops.

    Created on first use under a lock: the threads pool runs tasks in the worker's own process,
    where Celery's per-child signal never fires.
    """

    _lock = threading.Lock()
    db: Database | None = None
    jobs: JobManager | None = None
    inference: InferenceClient | ModalInferenceClient | None = None

    @classmethod
    def get(cls) -> tuple[JobManager, InferenceClient | ModalInferenceClient]:
        with cls._lock:
            if cls.jobs is None or cls.inference is None:
                settings = get_settings()
                cls.db = Database(settings.database_url)
                cls.jobs = JobManager(cls.db)
                cls.inference = connect(settings)
            return cls.jobs, cls.inference

    @classmethod
    def close(cls) -> None:
        with cls._lock:
            if cls.inference is not None:
                cls.inference.close()
            if cls.db is not None:
                cls.db.dispose()
            cls.db = cls.jobs = cls.inference = None


@worker_process_shutdown.connect
@worker_shutdown.connect
def _close(**_: Any) -> None:
    _Process.close()


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


def run_job(job_id: str, worker_name: str) -> str:
    """Claim, generate, validate, store. Returns the status the job ended this attempt in."""
    jobs, inference = _Process.get()
    job = jobs.claim(job_id, worker_name)
    if job is None:
        return "skipped"  # cancelled, finished, or another delivery holds it
    remaining = (job.deadline_at - utcnow()).total_seconds()
    if remaining <= 0:
        jobs.fail(job, "timeout", f"deadline of {job.timeout_s:g} s passed before the job started")
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
        jobs.fail(
            job,
            "schema_mismatch",
            f"output does not match the schema {error}",
            endpoint=inference.url,
            result=document,
            validation_error=error,
        )
        return "failed"
    jobs.succeed(job, outcome)
    return "succeeded"


def _handle_fault(jobs: JobManager, job: Job, exc: InferenceError, endpoint: str) -> str:
    log.warning("job %s attempt %d: %s (%s)", job.id, job.attempts, exc.code, exc)
    if exc.retryable and jobs.requeue(job, exc.code, str(exc)):
        enqueue(job.id, job.priority, countdown=backoff_s(job.attempts))
        return "queued"
    if not exc.retryable:
        jobs.fail(job, exc.code, str(exc), endpoint=endpoint)
    return "failed"


@celery_app.task(bind=True, name=TASK_RUN_JOB)
def run_job_task(self: Task, job_id: str) -> str:
    worker_name = get_settings().worker_name or self.request.hostname or socket.gethostname()
    return run_job(job_id, worker_name)
