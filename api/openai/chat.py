"""`POST /openai/v1/chat/completions`: the request becomes an ordinary irq job (visible in `/v1/jobs`, the
statistics, Flower and the dashboard); the answer is its `ChatCompletion` once it has finished, within
`IRQ_CHAT_WAIT_S`. Past that, a 504 names the job, so the client can follow it with `GET /v1/jobs/{id}`.
Failures answer with `x-should-retry: false`: irq has already retried what was worth it, and the SDK's
own retries would submit the request again as new jobs.

With `stream: true` the answer is OpenAI's server-sent events: the assistant's role at once, a comment line
every `KEEPALIVE_S` while the job runs (so that no proxy or client read times out), then the finished
document as content (or tool-call) deltas, the chunk with the finish reason, the usage chunk when
`stream_options.include_usage` asks for it, and `data: [DONE]`. irq generates a document as one job, so
the deltas come together once it has finished. A failure after the stream has begun ends it with an
`error` event (and no `[DONE]`), which OpenAI's SDK raises as an `APIError`."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from api.bodies import StrictJSONRoute
from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import ApiError, openai_error_body
from api.openai.objects import ChatCompletionRequest, answer_chunks, chat_completion, chunk
from irq.error_codes import ErrorCode
from irq.replies import ReplyKind, reply_of
from irq.store.models import Job, JobStatus
from irq.submission.chat import job_fields
from irq.submission.rules import job_request, to_new_job

router = APIRouter(tags=["openai"], route_class=StrictJSONRoute)
NO_RETRY = {"x-should-retry": "false"}
KEEPALIVE_S = 10.0
STREAMED = {
    "description": "With `stream: true`: `chat.completion.chunk` events, then `data: [DONE]`.",
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _submit(svc: Services, owner_id: int, fields: dict[str, Any]) -> Job:
    new = to_new_job(job_request(fields), svc.settings, svc.jobs.registry, None, owner=owner_id)
    svc.check_quota(owner_id, adding=1)
    job, _ = svc.jobs.submit(owner_id, new)
    svc.active.added(owner_id, 1)
    return job


def _answerable(job: Job) -> bool:
    """A job whose answer is a completion: succeeded, or cut at `max_tokens` with its text kept."""
    truncated = job.error_code == ErrorCode.output_truncated and bool(job.output_text)
    return job.status == JobStatus.succeeded or truncated


def _failure(job: Job, wait_s: float) -> ApiError:
    """The error of a job that has no completion to answer: not finished in time, failed or cancelled."""
    headers = {**NO_RETRY, "x-irq-job-id": job.id}
    if not JobStatus(job.status).terminal:
        message = (
            f"job {job.id} has not finished after {wait_s:g} s; it is still {job.status}: "
            f"follow it with GET /v1/jobs/{job.id}"
        )
        return ApiError(
            504, ErrorCode.timeout, message, headers={**headers, "Location": f"/v1/jobs/{job.id}"}
        )
    status = 409 if job.status == JobStatus.cancelled else 500
    message = f"job {job.id} {job.status}: {job.error_code}: {job.error_message}"
    return ApiError(status, job.error_code or job.status, message, headers=headers)


@router.post(
    "/chat/completions",
    responses={200: STREAMED, 504: {"description": "The job has not finished in time."}},
)
async def create_chat_completion(
    body: ChatCompletionRequest, svc: ServicesDep, who: PrincipalDep
) -> Response:
    raw = body.model_dump(exclude_unset=True)
    fields = job_fields(raw, stream_ok=True)
    job = await run_in_threadpool(_submit, svc, who.key_id, fields)
    if raw.get("stream"):
        options = raw.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return StreamingResponse(
            _stream(svc, who.key_id, job, _calls(fields), include_usage),
            media_type="text/event-stream",
            headers={"x-irq-job-id": job.id, "Cache-Control": "no-cache"},
        )
    finished = await svc.wait_finished(job.id, who.key_id, svc.settings.chat_wait_s)
    assert finished is not None  # this key's own job, just made
    if _answerable(finished):
        return JSONResponse(chat_completion(finished), headers={"x-irq-job-id": job.id})
    raise _failure(finished, svc.settings.chat_wait_s)


def _event(data: dict[str, Any] | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _calls(fields: dict[str, Any]) -> bool:
    """Whether the request forces a function call (its message then has no content)."""
    return reply_of(fields.get("schema")).kind in (ReplyKind.tool_call, ReplyKind.function_call)


async def _stream(
    svc: Services, owner_id: int, job: Job, calling: bool, include_usage: bool
) -> AsyncIterator[bytes]:
    role = {"role": "assistant", "content": None if calling else "", "refusal": None}
    yield _event(chunk(job, role, include_usage=include_usage))
    deadline = time.monotonic() + svc.settings.chat_wait_s
    finished: Job | None = job
    while True:
        left = deadline - time.monotonic()
        finished = await svc.wait_finished(job.id, owner_id, max(0.0, min(KEEPALIVE_S, left)))
        if finished is None or JobStatus(finished.status).terminal or left <= KEEPALIVE_S:
            break
        yield b": the job is still running\n\n"  # an SSE comment: every client's parser skips it
    if finished is None:  # pruned from under the stream: never within the chat's wait
        finished = job
    if not _answerable(finished):  # the stream ends with the error: no `[DONE]`
        error = _failure(finished, svc.settings.chat_wait_s)
        yield _event(openai_error_body(error.status, error.code, error.message))
        return
    for piece in answer_chunks(finished, include_usage):
        yield _event(piece)
    yield _event("[DONE]")
