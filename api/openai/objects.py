"""The objects of the OpenAI-compatible API as OpenAI defines them (file, batch, chat completion, the
lines of a batch's output and error files), made from irq's stored jobs, batches and files; and the checks
of the texts a client names them by or has stored with them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, overload

from pydantic import BaseModel, Field

from api.errors import ApiError
from api.schemas import storable_text
from irq.store.models import Batch, Job, JobStatus, OpenAIBatch, StoredFile

OUTPUT_FILE = "file-batch-output-"  # + the batch id: the output file, made from the batch's jobs
ERROR_FILE = "file-batch-errors-"


@overload
def checked_text(value: str, param: str) -> str: ...
@overload
def checked_text(value: None, param: str) -> None: ...
def checked_text(value: str | None, param: str) -> str | None:
    """`value` if the store can keep and compare it (no NUL, no lone surrogate); else 400 naming `param`."""
    if value is None:
        return None
    try:
        return storable_text(value)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"`{param}` {exc}", param=param) from None


def checked_cursor(after: str | None, is_valid: Callable[[str], bool]) -> str | None:
    """A list's `after`: None, or an id of the list's kind; else 400 (a NUL would reach the database)."""
    if after is not None and not is_valid(after):
        message = "`after` is not an id of this list: pass the last id of the previous page as given"
        raise ApiError(400, "invalid_request", message, param="after")
    return after


def _ts(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None

    @classmethod
    def of(cls, f: StoredFile) -> FileObject:
        return cls(id=f.id, bytes=f.bytes, created_at=int(f.created_at.timestamp()), filename=f.filename,
                   purpose=f.purpose)  # fmt: skip


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class BatchError(BaseModel):
    code: str
    line: int | None = None
    message: str
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]


class BatchObject(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: RequestCounts
    metadata: dict[str, str] | None = None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


def batch_object(
    ob: OpenAIBatch, batch: Batch | None, counts: dict[str, int], last_finished: datetime | None
) -> BatchObject:
    """The batch as OpenAI shows it, from its record, its irq batch and its jobs' counts by status."""
    total = batch.total if batch is not None else 0
    succeeded = counts.get(JobStatus.succeeded, 0)
    failed = counts.get(JobStatus.failed, 0) + counts.get(JobStatus.cancelled, 0)
    active = counts.get(JobStatus.queued, 0) + counts.get(JobStatus.running, 0)
    status: BatchStatus
    if ob.failed_at is not None:
        status = "failed"
    elif batch is not None and batch.cancelled_at is not None:
        status = "cancelling" if active else "cancelled"
    elif ob.expired_at is not None:
        status = "expired"
    else:
        status = "in_progress" if active else "completed"
    done = status in ("completed", "cancelled", "expired")
    return BatchObject(
        id=ob.id,
        endpoint=ob.endpoint,
        errors=BatchErrors(data=[BatchError.model_validate(e) for e in ob.errors]) if ob.errors else None,
        input_file_id=ob.input_file_id,
        completion_window=ob.completion_window,
        status=status,
        output_file_id=OUTPUT_FILE + ob.id if done and succeeded else None,
        error_file_id=ERROR_FILE + ob.id if done and failed else None,
        created_at=int(ob.created_at.timestamp()),
        in_progress_at=None if ob.failed_at else _ts(ob.created_at),
        expires_at=_ts(ob.expires_at),
        finalizing_at=_ts(last_finished) if status == "completed" else None,
        completed_at=_ts(last_finished) if status == "completed" else None,
        failed_at=_ts(ob.failed_at),
        expired_at=_ts(ob.expired_at),
        cancelling_at=_ts(batch.cancelled_at) if batch is not None else None,
        cancelled_at=(_ts(last_finished or batch.cancelled_at) if status == "cancelled" and batch else None),
        request_counts=RequestCounts(total=total, completed=succeeded, failed=failed),
        metadata=ob.metadata_,
    )


def chat_completion(job: Job) -> dict[str, Any]:
    """A `ChatCompletion` of a succeeded job (its document as the message's content), or of one cut at
    `max_tokens` (its text, with finish_reason `length`, as OpenAI answers a truncated completion)."""
    content = (
        json.dumps(job.result, ensure_ascii=False) if job.status == JobStatus.succeeded else job.output_text
    )
    finish = "length" if job.finish_reason == "length" else "stop"
    prompt_tokens, completion_tokens = job.prompt_tokens or 0, job.completion_tokens or 0
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": int((job.finished_at or job.created_at).timestamp()),
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": job.backend,
    }


def output_line(job: Job) -> str:
    """The job's line of its batch's output file (succeeded) or error file (failed or cancelled)."""
    line: dict[str, Any] = {"id": f"batch_req_{job.id}", "custom_id": job.custom_id}
    if job.status == JobStatus.succeeded:
        line["response"] = {"status_code": 200, "request_id": job.id, "body": chat_completion(job)}
        line["error"] = None
    else:
        line["response"] = None
        line["error"] = {"code": job.error_code or job.status, "message": job.error_message or ""}
    return json.dumps(line, ensure_ascii=False) + "\n"


class ChatCompletionRequest(BaseModel):
    """`POST /chat/completions`, as the OpenAPI document shows it; the body is checked by
    `api.openai.chat_request.job_fields`, which names what it refuses."""

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    response_format: dict[str, Any] | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None

    model_config = {"extra": "allow"}
