"""`/v1/stats`: over a time window, job counts by status and, per model and backend, success and
schema-valid rates, latency percentiles, tokens/s and an estimated GPU cost per job; an admin key may
see every key's."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ServicesDep
from api.errors import COMMON_RESPONSES, ApiError, ErrorResponse
from api.routes.endpoints import EndpointStatus, endpoint_statuses
from irq.clock import utcnow
from irq.store import reads
from irq.store.models import JobStatus

router = APIRouter(prefix="/v1/stats", tags=["stats"], responses=COMMON_RESPONSES)


class OwnerStats(BaseModel):
    name: str
    jobs: dict[str, int]


class Percentiles(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class GroupStats(BaseModel):
    """Jobs of one model and structured-output backend that finished in the window."""

    model: str
    backend: str | None
    finished: int
    succeeded: int
    success_rate: float | None = Field(description="Succeeded over finished (cancelled jobs left out).")
    schema_valid_rate: float | None = Field(
        description="Of the jobs that produced a document, the share that matched its schema."
    )
    total_ms: Percentiles
    ttft_ms: Percentiles
    tokens_per_s: Percentiles
    gpu_cost_per_job_usd: float | None = Field(
        description="Mean of generation time × the $/hour of the endpoint that ran it (the registry's "
        "`cost_per_hour`); an upper bound when the GPU batches requests. Null when no price is configured."
    )


class Stats(BaseModel):
    window_s: float
    scope: str
    jobs: dict[str, int]  # by status, over every owner in scope
    owners: list[OwnerStats]
    groups: list[GroupStats]
    endpoints: list[EndpointStatus] = Field(description="Each inference endpoint now.")


# Failures that still produced a document (or tried to): the denominator of the schema-valid rate.
_OUTPUT_FAILURES = {"schema_mismatch", "invalid_output", "output_truncated"}


def _percentiles(values: list[float]) -> Percentiles:
    if not values:
        return Percentiles(p50=None, p95=None, p99=None)
    if len(values) == 1:
        return Percentiles(p50=values[0], p95=values[0], p99=values[0])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return Percentiles(p50=cuts[49], p95=cuts[94], p99=cuts[98])


def _groups(jobs: list[reads.FinishedJob], cost_per_hour: dict[str, float]) -> list[GroupStats]:
    by_group: dict[tuple[str, str | None], list[reads.FinishedJob]] = defaultdict(list)
    for job in jobs:
        if job.status != JobStatus.cancelled:
            by_group[(job.model, job.backend)].append(job)
    groups = []
    for (model, backend), members in sorted(by_group.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        succeeded = [j for j in members if j.status == JobStatus.succeeded]
        produced = len(succeeded) + sum(j.error_code in _OUTPUT_FAILURES for j in members)
        priced = [
            j.generation_ms / 3_600_000 * cost_per_hour[j.endpoint or ""]
            for j in succeeded
            if j.generation_ms is not None and cost_per_hour.get(j.endpoint or "", 0) > 0
        ]
        groups.append(
            GroupStats(
                model=model,
                backend=backend,
                finished=len(members),
                succeeded=len(succeeded),
                success_rate=len(succeeded) / len(members),
                schema_valid_rate=len(succeeded) / produced if produced else None,
                total_ms=_percentiles([j.total_ms for j in succeeded if j.total_ms is not None]),
                ttft_ms=_percentiles([j.ttft_ms for j in succeeded if j.ttft_ms is not None]),
                tokens_per_s=_percentiles([j.tokens_per_s for j in succeeded if j.tokens_per_s is not None]),
                gpu_cost_per_job_usd=statistics.fmean(priced) if priced else None,
            )
        )
    return groups


@router.get(
    "",
    response_model=Stats,
    responses={403: {"model": ErrorResponse, "description": "`scope=all` needs an admin key."}},
)
def stats(
    svc: ServicesDep,
    who: PrincipalDep,
    window: Annotated[float, Query(gt=0, le=366 * 86400, description="Seconds back from now.")] = 86400,
    scope: Annotated[str, Query(pattern="^(own|all)$", description="`all`: every key (admin only).")] = "own",
) -> Stats:
    if scope == "all" and not who.is_admin:
        raise ApiError(403, "forbidden", "scope=all needs an admin key (`irq keys create NAME --admin`)")
    since = utcnow() - timedelta(seconds=window)
    owner = None if scope == "all" else who.key_id
    prices = {e.name: e.cost_per_hour for e in svc.jobs.registry.endpoints}
    rows = reads.counts_by_owner(svc.db, since, owner)
    totals: dict[str, int] = defaultdict(int)
    per_owner: dict[str, dict[str, int]] = defaultdict(dict)
    for name, status, n in rows:
        totals[status] += n
        per_owner[name][status] = n
    return Stats(
        window_s=window,
        scope=scope,
        jobs=dict(totals),
        owners=[OwnerStats(name=name, jobs=jobs) for name, jobs in sorted(per_owner.items())],
        groups=_groups(reads.finished_since(svc.db, since, owner), prices),
        endpoints=endpoint_statuses(svc),
    )
