"""Liveness (`/healthz`) and readiness (`/readyz`: the store and the broker answer; each inference
endpoint's state is shown, and does not make the API unready: the jobs of an endpoint that is down wait
in its queue)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ServicesDep
from api.routes.endpoints import endpoint_statuses
from irq.store import reads

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The store or the broker is unreachable."}})
def readyz(svc: ServicesDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        reads.ping(svc.db)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        svc.broker.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unreachable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    endpoints = {}
    if ready:
        for e in endpoint_statuses(svc):
            endpoints[e.name] = e.state + (f": {e.reason}" if e.reason else "")
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks, "endpoints": endpoints},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "5"},
    )
