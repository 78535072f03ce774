"""`/v1/jobs`: submit, poll (with long-poll), list with cursor pagination, cancel."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response

from api.bodies import StrictJSONRoute
from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import COMMON_RESPONSES, ApiError, ErrorResponse, not_found
from api.schemas import JobPage, JobRequest, JobView
from inference.prompting import least_prompt_tokens, prompt_chars
from irq.clock import is_id
from irq.endpoints import NotServed, Registry, Route
from irq.error_codes import ErrorCode
from irq.ir_schema import ir_json_schema
from irq.schema_check import GuidanceOptions, SchemaProblem, check_schema
from irq.settings import Settings
from irq.store.models import JobStatus
from irq.submission import NewJob

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=COMMON_RESPONSES, route_class=StrictJSONRoute)

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such job for this API key."},
    410: {
        "model": ErrorResponse,
        "description": "Deleted: past the retention time.",
    },
}


# The status of each schema problem that is no 422; `retry_after_s` comes with the 503s.
_SCHEMA_PROBLEM_STATUS = {ErrorCode.schema_too_large: 413, ErrorCode.checks_busy: 503, ErrorCode.checks_unavailable: 503}


def to_new_job(
    body: JobRequest,
    settings: Settings,
    registry: Registry,
    idempotency_key: str | None,
    owner: int | None = None,
) -> NewJob:
    """Check a request against the endpoints served, the service's limits and the schema compiler; raise
    4xx `ApiError`s (503 when no schema-check process was free for `owner`, the submitting key)."""
    try:
        route = registry.route(body.model, body.backend)
    except NotServed as exc:
        raise ApiError(422, ErrorCode.model_not_served, str(exc)) from None
    if len(body.prompt) > settings.max_prompt_chars:
        raise ApiError(
            413,
            ErrorCode.prompt_too_large,
            f"prompt is {len(body.prompt)} characters; the limit is {settings.max_prompt_chars}",
        )
    max_tokens = body.max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_max_tokens:
        raise ApiError(422, ErrorCode.invalid_request, f"max_tokens must be at most {settings.max_max_tokens}")
    timeout = body.timeout or settings.default_timeout_s
    if timeout > settings.max_timeout_s:
        raise ApiError(422, ErrorCode.invalid_request, f"timeout must be at most {settings.max_timeout_s:g} s")
    schema = body.schema_ if body.schema_ is not None else ir_json_schema()
    if body.schema_ is not None:
        try:
            check_schema(
                schema,
                max_bytes=settings.max_schema_bytes,
                max_depth=settings.max_schema_depth,
                timeout_s=settings.schema_compile_timeout_s,
                owner=owner,
                options=GuidanceOptions.of(settings),
                processes=settings.schema_check_processes,
                wait_s=settings.schema_check_wait_s,
            )
        except SchemaProblem as exc:
            retry = {"Retry-After": f"{math.ceil(exc.retry_after_s)}"} if exc.retry_after_s else None
            status = _SCHEMA_PROBLEM_STATUS.get(exc.code, 422)
            raise ApiError(status, exc.code, str(exc), headers=retry) from None
    check_context(body.prompt, schema, max_tokens, route, registry)
    return NewJob(
        prompt=body.prompt,
        schema=schema,
        model=route.model,
        backend=route.backend,
        max_tokens=max_tokens,
        temperature=settings.default_temperature if body.temperature is None else body.temperature,
        top_p=settings.default_top_p if body.top_p is None else body.top_p,
        priority=body.priority,
        timeout_s=timeout,
        max_attempts=settings.max_attempts,
        retry_truncated=settings.retry_truncated if body.retry_truncated is None else body.retry_truncated,
        idempotency_key=idempotency_key,
    )


def check_context(
    prompt: str, schema: dict[str, Any], max_tokens: int, route: Route, registry: Registry
) -> None:
    """422 `prompt_too_long` when the prompt as the engine builds it (instructions, the schema's outline,
    the prompt) and `max_tokens` surely exceed the context length the route's endpoints declare."""
    context = registry.context_length(route)
    if context is None:
        return
    least = least_prompt_tokens(prompt, schema)
    if least + max_tokens > context:
        raise ApiError(
            422,
            ErrorCode.prompt_too_long,
            f"the prompt as the model gets it (instructions, the schema's field outline and the prompt: "
            f"{prompt_chars(prompt, schema)} characters, at least {least} tokens) and max_tokens {max_tokens}"
            f" exceed the context length of {route.model}, {context} tokens",
        )


def check_quota(svc: Services, owner_id: int, adding: int) -> None:
    """429 when `adding` more jobs would take the key over its queued + running quota."""
    quota = svc.settings.max_inflight_jobs
    if quota and svc.active.would_exceed(owner_id, adding, quota):
        raise ApiError(
            429,
            ErrorCode.quota_exceeded,
            f"this API key may have {quota} jobs queued or running; submit more as they finish",
            headers={"Retry-After": "5"},
        )


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
    new = to_new_job(body, svc.settings, svc.jobs.registry, idempotency_key, owner=who.key_id)
    check_quota(svc, who.key_id, adding=1)
    job, created = svc.jobs.submit(who.key_id, new)  # BrokerUnavailable, IdempotencyKeyReused: api/errors.py
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
