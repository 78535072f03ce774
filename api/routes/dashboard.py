"""`/dashboard`: a page with plots of latency and success rate over time, drawn in the browser with
plotly.js from `/dashboard/data`.

Its data needs an API key (the page asks for one, or takes it from its address's fragment): an admin key
sees every key's jobs, any other key its own. Aggregates only (no prompts or documents).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, ServicesDep
from api.errors import COMMON_RESPONSES
from irq.clock import utcnow
from irq.store import reads, rollups
from irq.store.db import Database
from irq.store.models import TERMINAL, JobStatus

router = APIRouter(prefix="/dashboard", tags=["dashboard"], responses=COMMON_RESPONSES)

PAGE = Path(__file__).parent.parent / "static" / "dashboard.html"
MAX_JOBS = 5000  # newest finished jobs whose latency a window plots
MAX_BUCKETS = 60
BUCKET_SIZES_S = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class LatencyGroup(BaseModel):
    endpoint: str | None
    model: str
    backend: str | None
    total_ms: list[float] = Field(description="Created → finished of each succeeded job.")


class Timeline(BaseModel):
    bucket_s: int
    starts: list[datetime] = Field(description="Start of each bucket of finish times.")
    succeeded: list[int]
    failed: list[int]
    cancelled: list[int]


class DashboardData(BaseModel):
    window_s: float
    generated_at: datetime
    finished: dict[str, int] = Field(description="Jobs finished in the window, by status.")
    truncated: bool = Field(
        description=f"More than {MAX_JOBS} jobs finished: the latency plots show the newest {MAX_JOBS}."
    )
    latency: list[LatencyGroup]
    timeline: Timeline


def bucket_size(window_s: float) -> int:
    """The smallest round bucket that cuts the window into at most MAX_BUCKETS buckets, and no smaller than
    the rollups' periods as old as the window's start (an hour past two hours, a day past two days)."""
    age = timedelta(seconds=window_s)
    smallest = max((grain for grain, horizon in rollups.GRAINS if age > horizon), default=rollups.MINUTE)
    return next(
        (b for b in BUCKET_SIZES_S if window_s / b <= MAX_BUCKETS and b >= smallest), BUCKET_SIZES_S[-1]
    )


@router.get("", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE.read_text())


@cache
def _plotly_js() -> bytes:
    return (files("plotly") / "package_data" / "plotly.min.js").read_bytes()


@router.get("/plotly.min.js", include_in_schema=False)
async def plotly_js() -> Response:
    return Response(
        _plotly_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("/data", response_model=DashboardData)
def data(
    svc: ServicesDep,
    who: PrincipalDep,
    window: Annotated[float, Query(gt=0, le=366 * 86400, description="Seconds back from now.")] = 3600,
) -> DashboardData:
    owner = None if who.is_admin else who.key_id
    return svc.aggregates.call(_data, utcnow(), window, owner)


def _data(db: Database, now: datetime, window: float, owner: int | None) -> DashboardData:
    """The dashboard's data for the window up to `now`: run in the read process."""
    since = datetime.fromtimestamp(now.timestamp() - window, UTC)
    finished = rollups.finished_in(db, since, owner, timings=False)
    rows = reads.finished_outline(db, since, MAX_JOBS, owner_id=owner)

    size = bucket_size(window)
    first = math.floor(since.timestamp() / size) * size
    n_buckets = math.floor(now.timestamp() / size) - first // size + 1
    per_bucket: dict[str, list[int]] = {status: [0] * n_buckets for status in TERMINAL}
    for start, _, status, jobs in finished.periods:
        # max()/min(): a period that began before the window, or a worker's clock a little ahead of this
        # process's, still lands in the first or last bucket
        index = int((start.timestamp() - first) // size)
        per_bucket[status][max(0, min(index, n_buckets - 1))] += jobs
    latency: dict[tuple[str, str, str | None], list[float]] = defaultdict(list)
    for _, status, model, backend, endpoint, total_ms in rows:
        if status == JobStatus.succeeded and total_ms is not None:
            latency[(endpoint or "", model, backend)].append(total_ms)
    counts: Counter[str] = Counter()
    for key, group in finished.groups.items():
        counts[key.status] += group.jobs
    return DashboardData(
        window_s=window,
        generated_at=now,
        finished=dict(counts),
        truncated=len(rows) == MAX_JOBS,
        latency=[
            LatencyGroup(endpoint=endpoint or None, model=model, backend=backend, total_ms=values)
            for (endpoint, model, backend), values in sorted(
                latency.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
            )
        ],
        timeline=Timeline(
            bucket_s=size,
            starts=[datetime.fromtimestamp(first + i * size, UTC) for i in range(n_buckets)],
            succeeded=per_bucket[JobStatus.succeeded],
            failed=per_bucket[JobStatus.failed],
            cancelled=per_bucket[JobStatus.cancelled],
        ),
    )
