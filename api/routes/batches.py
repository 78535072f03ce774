"""`/v1/batches`: many jobs in one request (a JSON list, or JSONL whose lines may be in the OpenAI Batch
API format), their counts by status, their results as JSONL, and cancel."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from api.bodies import StrictJSONRoute, loads
from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import COMMON_RESPONSES, ApiError, ErrorResponse, not_found
from api.openai.chat_request import job_fields
from api.routes.jobs import check_quota, to_new_job
from api.schemas import JobRequest, JobView, custom_id_problem
from irq.endpoints import Registry
from irq.error_codes import ErrorCode
from irq.settings import Settings
from irq.store.models import TERMINAL, Batch, JobStatus
from irq.submission import NewJob

router = APIRouter(
    prefix="/v1/batches", tags=["batches"], responses=COMMON_RESPONSES, route_class=StrictJSONRoute
)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such batch for this API key."},
    410: {
        "model": ErrorResponse,
        "description": "Deleted: past the retention time.",
    },
}
_UPLOAD = {
    "requestBody": {
        "required": True,
        "description": "A JSON array of job requests (each may add `custom_id`), or JSONL: one job request "
        "per line, or one OpenAI Batch API line (`custom_id`, `method`, `url`, `body` with `messages` and "
        "`response_format: {type: json_schema, json_schema: {schema}}`).",
        "content": {
            "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
            "application/jsonl": {"schema": {"type": "string"}},
        },
    }
}


class BatchView(BaseModel):
    id: str
    status: str  # in_progress | completed | cancelled
    total: int
    counts: dict[str, int]  # jobs by status
    created_at: datetime
    cancelled_at: datetime | None


def _view(batch: Batch, counts: dict[str, int]) -> BatchView:
    if batch.cancelled_at is not None:
        status = "cancelled"
    elif sum(n for s, n in counts.items() if JobStatus(s) in TERMINAL) == batch.total:
        status = "completed"
    else:
        status = "in_progress"
    return BatchView(
        id=batch.id,
        status=status,
        total=batch.total,
        counts=counts,
        created_at=batch.created_at,
        cancelled_at=batch.cancelled_at,
    )


def _items(body: bytes) -> list[Any]:
    """The uploaded items: a JSON array, or one JSON value per non-empty line."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ApiError(400, ErrorCode.invalid_json, "the batch is not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            items = loads(text)
        except (ValueError, RecursionError) as exc:
            raise ApiError(422, ErrorCode.invalid_request, f"the batch is not a JSON array: {exc}") from None
        return list(items)
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(loads(line))
            except (ValueError, RecursionError) as exc:
                raise ApiError(422, ErrorCode.invalid_request, f"line {number} is not JSON: {exc}") from None
    return items


def parse_batch(
    body: bytes,
    settings: Settings,
    registry: Registry,
    owner: int | None = None,
    route: dict[str, str] | None = None,
) -> list[NewJob]:
    """Every item checked as a single submit would be; the first bad one refuses the whole batch. `route`
    (`model`, `backend`) replaces every item's own."""
    items = _items(body)
    if not items:
        raise ApiError(422, ErrorCode.invalid_request, "the batch has no jobs")
    if len(items) > settings.max_batch_jobs:
        raise ApiError(413, ErrorCode.batch_too_large, f"{len(items)} jobs; the limit is {settings.max_batch_jobs}")
    news = []
    for number, item in enumerate(items, start=1):
        try:
            if not isinstance(item, dict):
                raise ValueError("a job must be a JSON object")
            custom_id = item.get("custom_id")
            if custom_id is not None and (problem := custom_id_problem(custom_id)):
                raise ValueError(problem)
            if "body" in item and ("method" in item or "url" in item or "custom_id" in item):
                # irq's own API: a line without `response_format` gets irq's default schema, not text.
                fields = job_fields(item.get("body"), plain_text=False)
            else:
                fields = {k: v for k, v in item.items() if k != "custom_id"}
            fields.update(route or {})
            new = to_new_job(JobRequest.model_validate(fields), settings, registry, None, owner=owner)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise ApiError(422, ErrorCode.invalid_request, f"job {number}: {problems}") from None
        except ValueError as exc:
            raise ApiError(422, ErrorCode.invalid_request, f"job {number}: {exc}") from None
        except ApiError as exc:
            raise ApiError(
                exc.status, exc.code, f"job {number}: {exc.message}", headers=exc.headers
            ) from None
        news.append(dataclasses.replace(new, custom_id=custom_id))
    return news


@router.post(
    "",
    status_code=202,
    response_model=BatchView,
    openapi_extra=_UPLOAD,
    responses={200: {"description": "The batch this Idempotency-Key already created."}},
)
async def submit_batch(
    request: Request,
    svc: ServicesDep,
    who: PrincipalDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    model: Annotated[
        str | None,
        Query(max_length=200, description="Run every job with this model (a line's own is replaced)."),
    ] = None,
    backend: Annotated[
        str | None,
        Query(max_length=50, description="Run every job with this backend (a line's own is replaced)."),
    ] = None,
) -> JSONResponse:
    route = {k: v for k, v in (("model", model), ("backend", backend)) if v is not None}
    # In a thread: each job's schema check may wait for a check process.
    news = await run_in_threadpool(
        parse_batch, await request.body(), svc.settings, svc.jobs.registry, who.key_id, route
    )
    return await run_in_threadpool(_submit, svc, who.key_id, news, idempotency_key)


def _submit(svc: Services, owner_id: int, news: list[NewJob], idempotency_key: str | None) -> JSONResponse:
    check_quota(svc, owner_id, adding=len(news))
    batch, created = svc.jobs.submit_batch(owner_id, news, idempotency_key)  # its errors: api/errors.py
    if created:
        svc.active.added(owner_id, len(news))
    view = _view(batch, svc.store.batch_counts(batch.id))
    headers = {"Location": f"/v1/batches/{batch.id}"}
    return JSONResponse(view.model_dump(mode="json"), status_code=202 if created else 200, headers=headers)


def _owned_batch(svc: Services, batch_id: str, owner_id: int) -> Batch:
    batch = svc.store.get_batch(batch_id, owner_id)
    if batch is None:
        raise not_found("batch", batch_id, svc.settings)
    return batch


@router.get("/{batch_id}", response_model=BatchView, responses=_NOT_FOUND)
def get_batch(batch_id: str, svc: ServicesDep, who: PrincipalDep) -> BatchView:
    batch = _owned_batch(svc, batch_id, who.key_id)
    return _view(batch, svc.store.batch_counts(batch.id))


@router.get(
    "/{batch_id}/results",
    responses={
        200: {
            "description": "JSONL, one line per job in submitted order.",
            "content": {"application/jsonl": {}},
        },
        **_NOT_FOUND,
    },
)
def batch_results(batch_id: str, svc: ServicesDep, who: PrincipalDep) -> StreamingResponse:
    batch = _owned_batch(svc, batch_id, who.key_id)

    def lines() -> Iterator[bytes]:
        for job in svc.store.batch_jobs(batch.id):
            view = JobView.of(job, who.is_admin).model_dump(mode="json")
            line = {"custom_id": job.custom_id, **{k: view[k] for k in RESULT_FIELDS}}
            yield (json.dumps(line, ensure_ascii=False) + "\n").encode()

    return StreamingResponse(lines(), media_type="application/jsonl")


RESULT_FIELDS = (
    "id",
    "status",
    "result",
    "output_text",
    "error",
    "validation_error",
    "finish_reason",
    "usage",
    "timings",
)


@router.post("/{batch_id}/cancel", response_model=BatchView, responses=_NOT_FOUND)
def cancel_batch(batch_id: str, svc: ServicesDep, who: PrincipalDep) -> BatchView:
    batch = _owned_batch(svc, batch_id, who.key_id)
    svc.jobs.cancel_batch(batch)
    batch = _owned_batch(svc, batch_id, who.key_id)
    return _view(batch, svc.store.batch_counts(batch.id))
