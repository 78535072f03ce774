"""`POST /openai/v1/chat/completions`: the request becomes an ordinary irq job (visible in `/v1/jobs`, the
statistics, Flower and the dashboard); the answer is its `ChatCompletion` once it has finished, within
`IRQ_CHAT_WAIT_S`. Past that, a 504 names the job, so the client can follow it with `GET /v1/jobs/{id}`.
Failures answer with `x-should-retry: false`: irq has already retried what was worth it, and the SDK's
own retries would submit the request again as new jobs."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.bodies import StrictJSONRoute
from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import ApiError
from api.openai.chat_request import job_fields
from api.openai.objects import ChatCompletionRequest, chat_completion
from api.routes.jobs import check_quota, to_new_job
from api.schemas import JobRequest
from irq.store.models import Job, JobStatus

router = APIRouter(tags=["openai"], route_class=StrictJSONRoute)
NO_RETRY = {"x-should-retry": "false"}


def _submit(svc: Services, owner_id: int, body: dict[str, object]) -> Job:
    try:
        request = JobRequest.model_validate(job_fields(body))
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from None
    new = to_new_job(request, svc.settings, svc.jobs.registry, None, owner=owner_id)
    check_quota(svc, owner_id, adding=1)
    job, _ = svc.jobs.submit(owner_id, new)
    svc.active.added(owner_id, 1)
    return job


@router.post("/chat/completions", responses={504: {"description": "The job has not finished in time."}})
async def create_chat_completion(
    body: ChatCompletionRequest, svc: ServicesDep, who: PrincipalDep
) -> JSONResponse:
    job = await run_in_threadpool(_submit, svc, who.key_id, body.model_dump(exclude_unset=True))
    finished = await svc.wait_finished(job.id, who.key_id, svc.settings.chat_wait_s)
    assert finished is not None  # this key's own job, just made
    job = finished
    headers = {"x-irq-job-id": job.id}
    if job.status == JobStatus.succeeded or (job.error_code == "output_truncated" and job.output_text):
        return JSONResponse(chat_completion(job), headers=headers)
    if not JobStatus(job.status).terminal:
        message = (
            f"job {job.id} has not finished after {svc.settings.chat_wait_s:g} s; it is still {job.status}: "
            f"follow it with GET /v1/jobs/{job.id}"
        )
        raise ApiError(
            504, "timeout", message, headers={**NO_RETRY, **headers, "Location": f"/v1/jobs/{job.id}"}
        )
    status = 409 if job.status == JobStatus.cancelled else 500
    message = f"job {job.id} {job.status}: {job.error_code}: {job.error_message}"
    raise ApiError(status, job.error_code or job.status, message, headers={**NO_RETRY, **headers})
