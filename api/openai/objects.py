"""The objects of the OpenAI-compatible API as OpenAI defines them (file, batch, chat completion, the
lines of a batch's output and error files), made from irq's stored jobs, batches and files; and the checks
of the texts a client names them by or has stored with them."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, overload

from pydantic import BaseModel, Field, StrictBool

from api.errors import ApiError
from irq.error_codes import ErrorCode
from irq.replies import Reply, ReplyKind, reply_of
from irq.store.models import Batch, Job, JobStatus, OpenAIBatch, StoredFile
from irq.submission.rules import storable_text

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
        raise ApiError(400, ErrorCode.invalid_request, f"`{param}` {exc}", param=param) from None


def checked_cursor(after: str | None, is_valid: Callable[[str], bool]) -> str | None:
    """A list's `after`: None, or an id of the list's kind; else 400 (a NUL would reach the database)."""
    if after is not None and not is_valid(after):
        message = "`after` is not an id of this list: pass the last id of the previous page as given"
        raise ApiError(400, ErrorCode.invalid_request, message, param="after")
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


@dataclass(frozen=True)
class Answer:
    """What a finished job answers, in OpenAI's terms: the message's content or its one call, and why the
    generation stopped."""

    content: str | None
    call: Reply | None  # a forced tool call or legacy function call; `arguments` is `content`
    finish_reason: str

    @property
    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if self.call is None:
            message["content"] = self.content
        elif self.call.kind == ReplyKind.function_call:
            message["function_call"] = {"name": self.call.name, "arguments": self.content}
        else:
            message["tool_calls"] = [self.tool_call(self.content or "")]
        return message

    def tool_call(self, arguments: str, call_id: str = "") -> dict[str, Any]:
        assert self.call is not None
        function = {"name": self.call.name, "arguments": arguments}
        return {"id": call_id, "type": "function", "function": function}


def _partial_string(text: str) -> str:
    """The value of a JSON string cut short (`"Hello, wor`): what was generated of plain text."""
    for end in range(len(text), max(len(text) - 7, 0), -1):  # a cut escape is at most `\\uXXX` long
        try:
            value = json.loads(text[:end] + '"')
        except ValueError:
            continue
        if isinstance(value, str):
            return value
    return text.removeprefix('"')


def answer(job: Job) -> Answer:
    """The answer of a succeeded job, or of one cut at `max_tokens` (its text, with finish_reason `length`,
    as OpenAI answers a truncated completion), shaped as its request asked (`irq/replies.py`)."""
    reply = reply_of(job.schema_)
    cut = job.status != JobStatus.succeeded
    content: str | None
    if reply.kind == ReplyKind.text:
        text = _partial_string(job.output_text or "") if cut else job.result
        content = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    else:
        content = job.output_text if cut else json.dumps(job.result, ensure_ascii=False)
    calling = reply.kind in (ReplyKind.tool_call, ReplyKind.function_call)
    if job.finish_reason == "length":
        finish = "length"
    else:
        finish = {ReplyKind.tool_call: "tool_calls", ReplyKind.function_call: "function_call"}.get(
            reply.kind, "stop"
        )
    return Answer(content, reply if calling else None, finish)


def _usage(job: Job) -> dict[str, int]:
    prompt_tokens, completion_tokens = job.prompt_tokens or 0, job.completion_tokens or 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def call_id(job: Job) -> str:
    return f"call_{job.id}"


def chat_completion(job: Job) -> dict[str, Any]:
    """A `ChatCompletion` of a succeeded job, or of one cut at `max_tokens` (see `answer`)."""
    made = answer(job)
    message = made.message
    for call in message.get("tool_calls", []):
        call["id"] = call_id(job)
    return {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion",
        "created": int((job.finished_at or job.created_at).timestamp()),
        "model": job.model,
        "choices": [{"index": 0, "message": message, "finish_reason": made.finish_reason, "logprobs": None}],
        "usage": _usage(job),
        "system_fingerprint": job.backend,
    }


STREAM_PIECE_CHARS = 256  # a finished document is streamed in deltas of at most this many characters


def chunk(job: Job, delta: dict[str, Any] | None, finish_reason: str | None = None,
          usage: dict[str, int] | None = None, include_usage: bool = False) -> dict[str, Any]:  # fmt: skip
    """A `ChatCompletionChunk` of the job's stream: one delta, or (`delta` None) the usage-only last one."""
    body: dict[str, Any] = {
        "id": f"chatcmpl-{job.id}",
        "object": "chat.completion.chunk",
        "created": int(job.created_at.timestamp()),
        "model": job.model,
        "system_fingerprint": job.backend,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if include_usage:  # as OpenAI streams with `stream_options.include_usage`: null until the last chunk
        body["usage"] = usage
    return body


def answer_chunks(job: Job, include_usage: bool) -> list[dict[str, Any]]:
    """The chunks that follow the first (the assistant's role) once the job has finished: the content, or
    the call, in deltas, the chunk with the finish reason, and the usage when asked for."""
    made = answer(job)
    text = made.content or ""
    pieces = [text[i : i + STREAM_PIECE_CHARS] for i in range(0, len(text), STREAM_PIECE_CHARS)]
    deltas: list[dict[str, Any]]
    if made.call is None:
        deltas = [{"content": piece} for piece in pieces]
    elif made.call.kind == ReplyKind.function_call:
        deltas = [{"function_call": {"name": made.call.name, "arguments": ""}}]
        deltas += [{"function_call": {"arguments": piece}} for piece in pieces]
    else:
        deltas = [{"tool_calls": [{"index": 0, **made.tool_call("", call_id(job))}]}]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]} for piece in pieces]
    chunks = [chunk(job, d, include_usage=include_usage) for d in deltas]
    chunks.append(chunk(job, {}, made.finish_reason, include_usage=include_usage))
    if include_usage:
        chunks.append(chunk(job, None, usage=_usage(job), include_usage=True))
    return chunks


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
    `irq.submission.chat.job_fields`, which names what it refuses."""

    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    response_format: dict[str, Any] | None = Field(
        default=None, description="`json_schema` or `json_object`; `text` or unset: plain text."
    )
    tools: list[dict[str, Any]] | None = Field(
        default=None, description="Functions; one is called only where `tool_choice` forces it."
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None,
        description='`{"type": "function", "function": {"name": ...}}` (or `required` with one tool): a '
        "call generated under the function's `parameters`; `auto`, `none` or unset: no call.",
    )
    stream: StrictBool | None = Field(default=None, description="Server-sent `chat.completion.chunk` events.")
    stream_options: dict[str, Any] | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None

    model_config = {"extra": "allow"}
