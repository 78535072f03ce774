"""`/v1/jobs`: submit, poll (with long-poll), list with cursor pagination, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from api.bodies import StrictJSONRoute
from api.deps import PrincipalDep, ServicesDep
from api.errors import COMMON_RESPONSES, ApiError, ErrorResponse, not_found
from api.schemas import JobPage, JobView
from irq.clock import is_id
from irq.error_codes import ErrorCode
from irq.store.models import JobStatus
from irq.submission.rules import JobRequest, to_new_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON_RESPONSES, route_class=StrictJSONRoute)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such job for this API key."},
    410: {
        "model": ErrorResponse,
        "description": "Deleted: past the retention time.",
    },
}


@router.post(
    "",
    status_code=202,
    response_model=JobView,
    responses={200: {"description": "The job this Idempotency-Key already created."}},
)
def submit_job(
    body: JobRequest,
    svc: ServicesDep,
    who: PrincipalDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> JobView:
    # A refusal (`SubmissionError`), BrokerUnavailable: answered by api/errors.py.
    new = to_new_job(body, svc.settings, svc.jobs.registry, idempotency_key, owner=who.key_id)
    svc.check_quota(who.key_id, adding=1)
    job, created = svc.jobs.submit(who.key_id, new)
    if created:
        svc.active.added(who.key_id, 1)
    else:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobView.of(job, who.is_admin)


@router.get("/{job_id}", response_model=JobView, responses=_NOT_FOUND)
async def get_job(
    job_id: str,
    svc: ServicesDep,
    who: PrincipalDep,
    wait: Annotated[float, Query(ge=0, description="Long-poll: seconds to wait for a terminal status.")] = 0,
) -> JobView:
    job = await svc.wait_finished(job_id, who.key_id, min(wait, svc.settings.max_wait_s))
    if job is None:
        raise not_found("job", job_id, svc.settings)
    return JobView.of(job, who.is_admin)


@router.get("", response_model=JobPage)
def list_jobs(
    svc: ServicesDep,
    who: PrincipalDep,
    status: JobStatus | None = None,
    batch_id: str | None = None,
    cursor: str | None = Query(default=None, description="`next_cursor` of the previous page."),
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobPage:
    for name, value in (("cursor", cursor), ("batch_id", batch_id)):
        if value is not None and not is_id(value):
            raise ApiError(
                422, ErrorCode.invalid_request, f"{name} is not an id (pass a job's `next_cursor` as given)"
            )
    jobs = svc.store.page(who.key_id, status=status, batch_id=batch_id, before=cursor, limit=limit + 1)
    page = jobs[:limit]
    return JobPage(
        jobs=[JobView.of(j, who.is_admin) for j in page],
        next_cursor=page[-1].id if len(jobs) > limit else None,
    )


@router.post("/{job_id}/cancel", response_model=JobView, responses=_NOT_FOUND)
def cancel_job(job_id: str, svc: ServicesDep, who: PrincipalDep) -> JobView:
    job = svc.jobs.cancel(job_id, who.key_id)
    if job is None:
        raise not_found("job", job_id, svc.settings)
    return JobView.of(job, who.is_admin)
