"""`/v1/stats`: over a time window, job counts by status and, per model and backend, success and
schema-valid rates, latency percentiles, tokens/s and an estimated GPU cost per job; an admin key may
see every key's. Finished jobs come from the rollups (`irq/store/rollups.py`: they outlive retention), the
jobs still queued or running from the jobs table."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ServicesDep
from api.errors import COMMON_RESPONSES, ApiError, ErrorResponse
from api.routes.endpoints import EndpointStatus, endpoint_statuses
from irq.clock import utcnow
from irq.error_codes import ErrorCode
from irq.store import reads, rollups
from irq.store.db import Database
from irq.store.models import JobStatus

router = APIRouter(prefix="/v1/stats", tags=["stats"], responses=COMMON_RESPONSES)


class OwnerStats(BaseModel):
    name: str
    jobs: dict[str, int]


class Percentiles(BaseModel):
    """Read from the rollups' histograms: within ±2.2% of the exact values."""

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
    total_ms: Percentiles = Field(description="Created → finished, of the jobs that succeeded.")
    queue_wait_ms: Percentiles = Field(description="Last enqueue → a worker started it.")
    engine_wait_ms: Percentiles = Field(description="Accepted by the inference service → first scheduled.")
    ttft_ms: Percentiles
    tokens_per_s: Percentiles
    gpu_cost_per_job_usd: float | None = Field(
        description="Mean of generation time × the $/hour of the endpoint that ran it (the registry's "
        "`cost_per_hour`); an upper bound when the GPU batches requests. Null when no price is configured."
    )


class Stats(BaseModel):
    window_s: float
    scope: str
    jobs: dict[str, int] = Field(
        description="By status, over every owner in scope: the jobs that finished in the window, and those "
        "created in it that are queued or running now."
    )
    owners: list[OwnerStats]
    groups: list[GroupStats]
    endpoints: list[EndpointStatus] = Field(description="Each inference endpoint now.")


# Failures that still produced a document (or tried to): the denominator of the schema-valid rate.
_OUTPUT_FAILURES = {ErrorCode.schema_mismatch, ErrorCode.invalid_output, ErrorCode.output_truncated}
_PERCENTILES = ("total_ms", "queue_wait_ms", "engine_wait_ms", "ttft_ms", "tokens_per_s")


def _percentiles(timing: rollups.Timing) -> Percentiles:
    return Percentiles(p50=timing.quantile(0.50), p95=timing.quantile(0.95), p99=timing.quantile(0.99))


def _groups(finished: rollups.Finished, cost_per_hour: dict[str, float]) -> list[GroupStats]:
    by_group: dict[tuple[str, str], list[tuple[rollups.GroupKey, rollups.Group]]] = defaultdict(list)
    for key, group in finished.groups.items():
        if key.status != JobStatus.cancelled:
            by_group[(key.model, key.backend)].append((key, group))
    out = []
    for (model, backend), members in sorted(by_group.items()):
        done = sum(g.jobs for _, g in members)
        won = [(k, g) for k, g in members if k.status == JobStatus.succeeded]
        succeeded = sum(g.jobs for _, g in won)
        produced = succeeded + sum(g.jobs for k, g in members if k.error_code in _OUTPUT_FAILURES)
        timings = {column: rollups.Timing() for column in rollups.TIMINGS}
        cost, priced = 0.0, 0
        for key, group in won:
            for column, timing in timings.items():
                timing.merge(group.timing(column))
            price = cost_per_hour.get(key.endpoint, 0.0)
            if price > 0:
                generation = group.timing("generation_ms")
                cost += generation.total / 3_600_000 * price
                priced += generation.n
        out.append(
            GroupStats(
                model=model,
                backend=backend or None,
                finished=done,
                succeeded=succeeded,
                success_rate=succeeded / done,
                schema_valid_rate=succeeded / produced if produced else None,
                **{column: _percentiles(timings[column]) for column in _PERCENTILES},
                gpu_cost_per_job_usd=cost / priced if priced else None,
            )
        )
    return out


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
        message = "scope=all needs an admin key (`irq keys create NAME --admin`)"
        raise ApiError(403, ErrorCode.forbidden, message)
    since = utcnow() - timedelta(seconds=window)
    owner = None if scope == "all" else who.key_id
    prices = {e.name: e.cost_per_hour for e in svc.jobs.registry.endpoints}
    stats = svc.aggregates.call(_stats, since, owner, prices, window, scope)
    stats.endpoints = endpoint_statuses(svc)
    return stats


def _stats(
    db: Database, since: datetime, owner: int | None, prices: dict[str, float], window_s: float, scope: str
) -> Stats:
    """The window's stats but for the endpoints (what Redis says of them now): run in the read process."""
    finished = rollups.finished_in(db, since, owner, histograms=_PERCENTILES)
    counts: dict[tuple[int, str], int] = defaultdict(int)
    for key, group in finished.groups.items():
        counts[(key.owner_id, key.status)] += group.jobs
    for owner_id, status, n in reads.active_counts(db, since, owner):
        counts[(owner_id, status)] += n
    names = reads.key_names(db, {owner_id for owner_id, _ in counts})
    totals: dict[str, int] = defaultdict(int)
    per_owner: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (owner_id, status), n in counts.items():
        totals[status] += n
        per_owner[names.get(owner_id, str(owner_id))][status] += n
    return Stats(
        window_s=window_s,
        scope=scope,
        jobs=dict(totals),
        owners=[OwnerStats(name=name, jobs=dict(jobs)) for name, jobs in sorted(per_owner.items())],
        groups=_groups(finished, prices),
        endpoints=[],
    )
