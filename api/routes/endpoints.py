"""What the deployment serves: `GET /v1/models` (OpenAI's list shape, with each model's backends and
endpoints), and each endpoint's state as `/readyz`, `/metrics` and `/v1/stats` show it: up or down as its
workers last saw it, jobs waiting in its queue, jobs running on it."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import PrincipalDep, Services, ServicesDep
from api.errors import COMMON_RESPONSES
from irq.endpoints import EndpointState
from irq.store import reads

router = APIRouter(prefix="/v1", tags=["models"], responses=COMMON_RESPONSES)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="When this API process read the registry (Unix seconds).")
    owned_by: str = "irq"
    backends: list[str] = Field(description="Structured-output backends it is served with; the first is "
                                "the default.")  # fmt: skip
    endpoints: list[str]
    default: bool = Field(description="The model of jobs that name none.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class EndpointStatus(BaseModel):
    name: str
    model: str
    backend: str
    state: Literal["up", "down", "no_worker"] = Field(
        description="As its workers last saw it; `no_worker`: no worker has reported on it for a minute."
    )
    reason: str = Field(description="Why it is down.")
    max_inflight: int
    running: int = Field(description="Jobs running on it now.")
    queued: int | None = Field(
        description="Messages waiting in its queue (shared with its replicas); null when Redis is down."
    )


_LOADED_AT = int(time.time())


@router.get("/models", response_model=ModelList)
def list_models(svc: ServicesDep, who: PrincipalDep) -> ModelList:
    registry = svc.jobs.registry
    return ModelList(
        data=[
            ModelCard(
                id=model,
                created=_LOADED_AT,
                backends=backends,
                endpoints=[e.name for e in registry.endpoints if e.model == model],
                default=model == registry.model,
            )
            for model, backends in registry.models.items()
        ]
    )


def endpoint_statuses(svc: Services) -> list[EndpointStatus]:
    """Every endpoint of the registry with its state, queue depth and jobs running on it."""
    running = reads.running_by_endpoint(svc.reads_db)
    try:
        depths: dict[str, int] | None = svc.broker.queue_depths()
        states = svc.broker.endpoint_states()
    except Exception:  # Redis down: no queue depths, and no states
        depths, states = None, {}
    statuses = []
    for e in svc.jobs.registry.endpoints:
        state = EndpointState.of(states.get(e.name))
        statuses.append(
            EndpointStatus(
                name=e.name,
                model=e.model,
                backend=e.backend,
                state=state.state,
                reason=state.reason,
                max_inflight=e.max_inflight,
                running=running.get(e.name, 0),
                queued=None if depths is None else depths.get(e.queue, 0),
            )
        )
    return statuses
