"""The endpoint registry: which inference endpoints the deployment has, the model and structured-output
backend each serves, how many requests it takes at once, and where its jobs queue.

Every process reads the same registry: the API to accept or refuse a job's `model` and `backend` and to
pick its queue, the workers to know what they serve, the statistics to split by endpoint. It is the TOML
file `IRQ_ENDPOINTS_FILE` names:

    default_model = "Qwen/Qwen3-Next-80B-A3B-Instruct-FP8"   # optional: else the first endpoint's model

    [[endpoints]]
    name = "qwen80b-guidance"
    url = "modal://irq-inference-guidance"
    model = "Qwen/Qwen3-Next-80B-A3B-Instruct-FP8"
    backend = "guidance"
    max_inflight = 256
    cost_per_hour = 3.95
    max_model_len = 8192                                    # optional: refuse what cannot fit at submit
    headers_env = { "Modal-Key" = "MODAL_KEY", "Modal-Secret" = "MODAL_SECRET" }

`headers_env` names, for each extra header, the environment variable that holds its value: secrets never
sit in the file, and only the processes that call the endpoint (its workers) need them. Without a file,
the registry is one endpoint named `default`, made of the single-endpoint settings (`IRQ_INFERENCE_URL`,
`IRQ_DEFAULT_MODEL`, `IRQ_STRUCTURED_OUTPUT_BACKEND`, `IRQ_WORKER_CONCURRENCY`, `IRQ_INFERENCE_HEADERS`,
`IRQ_GPU_COST_PER_HOUR`).

Queues: one per served model and backend. Endpoints registered with the same model and backend are replicas
of one another and share that queue, so each takes jobs as it has room for them. `replicas = N` on an entry
is the short form for the N engines of one GPU host (`irq inference serve` with `IRQ_INFERENCE_REPLICAS=N`):
the entry becomes N endpoints, NAME-1 … NAME-N, on consecutive ports from its URL's.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from irq.settings import Settings

IMPLICIT_NAME = "default"  # the endpoint of a deployment without a registry file
QUEUE_PREFIX = "irq"
# A worker publishes what its endpoint gate sees every third of a lease (`worker/upkeep.py`); a state
# older than this has no live worker behind it.
STATE_FRESH_S = 60.0


class RegistryError(ValueError):
    """The registry file is missing, unreadable, or describes an impossible deployment."""


class NotServed(LookupError):
    """No endpoint serves the model (and backend) a job asked for; the message names what is served."""


class Endpoint(BaseModel):
    """One inference endpoint: an irq inference service (or a Modal app) serving one model with one
    structured-output backend."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    url: str = Field(min_length=1, description="The generate URL, or modal://<app> for the Modal SDK.")
    model: str = Field(min_length=1, max_length=200)
    backend: str = Field(default="guidance", pattern=r"^[a-z][a-z0-9_-]{0,49}$")
    max_inflight: int = Field(default=128, ge=1, le=10_000)
    cost_per_hour: float = Field(default=0.0, ge=0)
    max_model_len: int | None = Field(
        default=None,
        ge=1,
        description="The model's context length in tokens (the engine's `max_model_len`): set, the API "
        "refuses a job whose prompt and max_tokens cannot fit it.",
    )
    headers_env: dict[str, str] = Field(default_factory=dict)
    replicas: int = Field(
        default=1, ge=1, le=16, description="Services of one host on consecutive ports from the URL's."
    )
    _headers: dict[str, SecretStr] = PrivateAttr(default_factory=dict)  # the implicit endpoint's own

    @model_validator(mode="after")
    def _replicas_have_ports(self) -> Endpoint:
        if self.replicas > 1 and (not self.url.startswith(("http://", "https://")) or not _port(self.url)):
            raise ValueError(f"endpoint {self.name!r}: replicas need an http(s) URL with a port")
        return self

    @property
    def queue(self) -> str:
        return queue_name(self.model, self.backend)

    def replica_endpoints(self) -> list[Endpoint]:
        """This endpoint as the endpoints of its replicas: NAME-1 … NAME-N, the i-th on the URL's port + i."""
        if self.replicas == 1:
            return [self]
        shared = {"replicas": 1, "cost_per_hour": self.cost_per_hour / self.replicas}  # one host's cost
        return [
            self.model_copy(
                update={**shared, "name": f"{self.name}-{i + 1}", "url": replica_url(self.url, i)}
            )
            for i in range(self.replicas)
        ]

    def headers(self) -> dict[str, str]:
        """The extra headers of every call, their values read from the environment now."""
        missing = [var for var in self.headers_env.values() if var not in os.environ]
        if missing:
            raise RegistryError(
                f"endpoint {self.name!r}: header variable(s) not set in the environment: {', '.join(missing)}"
            )
        values = {h: v.get_secret_value() for h, v in self._headers.items()}
        return values | {h: os.environ[var] for h, var in self.headers_env.items()}


def _port(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def replica_url(url: str, index: int) -> str:
    """`url` with its port moved up by `index`: where the index-th replica of a host's services listens."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{netloc}:{(parts.port or 0) + index}"))


def queue_name(model: str, backend: str) -> str:
    """The Celery queue of the jobs for one model and backend."""
    return f"{QUEUE_PREFIX}:{model}:{backend}"


@dataclass(frozen=True)
class Route:
    """Where a job goes: the model and backend it runs with, and their queue."""

    model: str
    backend: str

    @property
    def queue(self) -> str:
        return queue_name(self.model, self.backend)


@dataclass(frozen=True)
class EndpointState:
    """An endpoint as its workers last saw it: `up`, `down` (since when, and why), or `no_worker` (no worker
    has reported on it for `STATE_FRESH_S`)."""

    state: Literal["up", "down", "no_worker"]
    since: float = 0.0  # Unix seconds
    reason: str = ""

    @classmethod
    def of(cls, published: Mapping[str, object] | None, now: float | None = None) -> EndpointState:
        """The state from what a worker published (`worker/gate.py`), judged at `now`."""
        now = time.time() if now is None else now
        if not published or now - float(str(published.get("at", 0))) >= STATE_FRESH_S:
            return cls("no_worker")
        if published.get("up"):
            return cls("up", float(str(published.get("since", 0))))
        return cls("down", float(str(published.get("since", 0))), str(published.get("reason", "")))


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    default_model: str | None = None
    endpoints: list[Endpoint] = Field(min_length=1)

    @field_validator("endpoints")
    @classmethod
    def _each_replica(cls, endpoints: list[Endpoint]) -> list[Endpoint]:
        return [replica for e in endpoints for replica in e.replica_endpoints()]

    @model_validator(mode="after")
    def _consistent(self) -> Registry:
        names = [e.name for e in self.endpoints]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"endpoint names must be unique: {', '.join(twice)}")
        if self.default_model is not None and self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is served by no endpoint")
        return self

    @cached_property
    def models(self) -> dict[str, list[str]]:
        """Each served model and its backends, in registry order (the first backend is the model's
        default)."""
        served: dict[str, list[str]] = {}
        for e in self.endpoints:
            backends = served.setdefault(e.model, [])
            if e.backend not in backends:
                backends.append(e.backend)
        return served

    @property
    def model(self) -> str:
        """The model of jobs that name none."""
        return self.default_model or self.endpoints[0].model

    def route(self, model: str | None, backend: str | None) -> Route:
        """The route of a job asking for `model` and `backend` (None: the defaults); `NotServed` else."""
        model = model or self.model
        backends = self.models.get(model)
        if backends is None or (backend is not None and backend not in backends):
            asked = f"model {model!r}" + (f" with backend {backend!r}" if backend else "")
            raise NotServed(f"no endpoint serves {asked}; served: {self.describe()}")
        return Route(model, backend or backends[0])

    def context_length(self, route: Route) -> int | None:
        """The smallest context length the route's endpoints declare (a job may run on any of them)."""
        known = [e.max_model_len for e in self.serving(route) if e.max_model_len is not None]
        return min(known, default=None)

    def describe(self) -> str:
        return "; ".join(f"{m} ({', '.join(b)})" for m, b in self.models.items())

    def endpoint(self, name: str) -> Endpoint:
        for e in self.endpoints:
            if e.name == name:
                return e
        raise RegistryError(f"no endpoint {name!r} in the registry (it has {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.endpoints]

    def serving(self, route: Route) -> list[Endpoint]:
        return [e for e in self.endpoints if (e.model, e.backend) == (route.model, route.backend)]

    @property
    def queues(self) -> list[str]:
        return list(dict.fromkeys(e.queue for e in self.endpoints))

    @property
    def routes(self) -> list[Route]:
        return list(dict.fromkeys(Route(e.model, e.backend) for e in self.endpoints))

    def selected(self, names: Sequence[str]) -> list[Endpoint]:
        """The endpoints named (all of them for none)."""
        return [self.endpoint(n) for n in names] if names else list(self.endpoints)


def read_registry(path: Path) -> Registry:
    """The registry file at `path`."""
    try:
        return Registry.model_validate(tomllib.loads(path.read_text()))
    except OSError as exc:
        raise RegistryError(f"cannot read the endpoint registry {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise RegistryError(f"endpoint registry {path}: {exc}") from None


def implicit_registry(settings: Settings) -> Registry:
    """The one endpoint of a deployment configured by the single-endpoint settings."""
    endpoint = Endpoint(
        name=IMPLICIT_NAME,
        url=settings.inference_url,
        model=settings.default_model,
        backend=settings.structured_output_backend,
        max_inflight=settings.worker_concurrency,
        cost_per_hour=settings.gpu_cost_per_hour,
        replicas=settings.inference_replicas,
    )
    endpoint._headers = dict(settings.inference_headers)
    return Registry(endpoints=[endpoint])


def load_registry(settings: Settings) -> Registry:
    """The deployment's registry: `IRQ_ENDPOINTS_FILE`, or the implicit one endpoint."""
    if settings.endpoints_file is None:
        return implicit_registry(settings)
    return read_registry(settings.endpoints_file)
