"""`/v1/stats`: job counts by status over a time window; an admin key may see every key's."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import PrincipalDep, ServicesDep
from api.errors import COMMON_RESPONSES, ApiError, ErrorResponse
from irq.jobs import utcnow

router = APIRouter(prefix="/v1/stats", tags=["stats"], responses=COMMON_RESPONSES)


class OwnerStats(BaseModel):
    name: str
    jobs: dict[str, int]


class Stats(BaseModel):
    window_s: float
    scope: str
    jobs: dict[str, int]  # by status, over every owner in scope
    owners: list[OwnerStats]


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
    rows = svc.jobs.counts(utcnow() - timedelta(seconds=window), None if scope == "all" else who.key_id)
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
    )
