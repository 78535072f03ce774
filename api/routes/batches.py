"""`/v1/batches`: many jobs in one request (a JSON list, or JSONL whose lines may be in the OpenAI Batch
API format), their counts by status, their results as JSONL, and cancel."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from api.bodies import StrictJSONRoute
from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import COMMON_RESPONSES, ErrorResponse, not_found
from api.schemas import JobView
from irq.store.models import TERMINAL, Batch, JobStatus
from irq.submission import NewJob
from irq.submission.lines import Lines, read_upload

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
    lines = Lines(svc.settings, svc.jobs.registry, who.key_id, route)
    # In a thread: each job's schema check may wait for a check process.
    news = await run_in_threadpool(read_upload, await request.body(), lines)
    return await run_in_threadpool(_submit, svc, who.key_id, news, idempotency_key)


def _submit(svc: Services, owner_id: int, news: list[NewJob], idempotency_key: str | None) -> JSONResponse:
    svc.check_quota(owner_id, adding=len(news))
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
