"""Helpers of the system tests: a stack of real irq processes over one store and one Redis database, with
what a test reaches it with, and the scripted fault service (`tests.fault_service`) that stands in for an
inference engine. The fixtures that start them are in `tests/conftest.py`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

import cli.stack
from cli.stack import StackEnv
from irq.broker import queue_keys
from irq.endpoints import load_registry
from irq.store.models import TERMINAL
from tests import ROOT
from tests.procs import Service, free_port, wait_until


class Stack(cli.stack.Stack):
    """An API process (and optionally a worker) over one store and one Redis database, with what a test
    reaches them with: the API's URL, the store, a Redis client and two users' keys."""

    def __init__(self, config: StackEnv, log_dir: Path) -> None:
        super().__init__(config, log_dir)
        self.api = self.api_url
        self.db, keys = self.prepare_store("alice", "bob")
        self.key, self.other_key = keys
        self.redis = redis.Redis.from_url(self.settings.redis_url)
        self.queues = load_registry(self.settings).queues

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30
        )

    def queue_length(self) -> int:
        return sum(int(self.redis.llen(key)) for q in self.queues for key in queue_keys(q))

    def wait_for(self, http: httpx.Client, job_id: str, timeout_s: float) -> dict:  # type: ignore[type-arg]
        def finished() -> dict | None:  # type: ignore[type-arg]
            job = http.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
            return job if job["status"] in TERMINAL else None

        return wait_until(finished, timeout_s, f"job {job_id} to finish")  # type: ignore[return-value]

    def stop(self) -> None:
        super().stop()
        self.redis.close()
        self.db.dispose()


def start_stack(
    database_url: str,
    redis_url: str,
    inference_url: str | None,
    log_dir: Path,
    env: dict[str, str] | None = None,
    worker: bool | None = None,
) -> Stack:
    """API (and a worker unless `worker` is False; by default one when there is an inference URL)."""
    config = StackEnv(
        database_url=database_url,
        redis_url=redis_url,
        api_port=free_port(),
        inference_url=inference_url or "http://127.0.0.1:9/generate",
        extra={"IRQ_WORKER_NAME": "test-worker", "IRQ_FILES_DIR": str(log_dir / "files"), **(env or {})},
    )
    stack = Stack(config, log_dir)
    try:
        api = stack.start_api(wait=False)
        if worker if worker is not None else inference_url is not None:
            stack.start_worker()
        stack.wait_api(api)
    except BaseException:
        stack.stop()
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    stack.stop()


@dataclass
class FaultService:
    """`tests.fault_service`: the simulated engine behind irq's service app, with scripted faults."""

    base: str
    service: Service

    @property
    def url(self) -> str:
        return self.base + "/generate"

    def calls(self) -> dict[str, int]:
        return dict(httpx.get(self.base + "/calls", timeout=10).json())

    def schemas(self) -> dict[str, list[Any]]:
        """The schema each call of a prompt was given, in call order."""
        return dict(httpx.get(self.base + "/schemas", timeout=10).json())


def write_registry(path: Path, *endpoints: dict[str, object], default_model: str | None = None) -> Path:
    """An endpoint registry file (TOML) of `endpoints`, each a table of `irq.endpoints.Endpoint` fields."""
    lines = [f"default_model = {json.dumps(default_model)}", ""] if default_model else []
    for endpoint in endpoints:
        lines += ["[[endpoints]]", *(f"{k} = {json.dumps(v)}" for k, v in endpoint.items()), ""]
    path.write_text("\n".join(lines))
    return path


def start_fault_service(
    log_dir: Path,
    latency_s: float = 0.0,
    env: dict[str, str] | None = None,
    port: int | None = None,
    name: str = "fault-inference",
) -> FaultService:
    """`tests.fault_service` on `port` (a free one by default), with `env` (e.g. `IRQ_SERVED_MODEL`)."""
    port = port or free_port()
    args = [str(port), str(latency_s)]
    svc = Service(name, args, env or {}, log_dir, module="tests.fault_service", cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    svc.wait_ready(base + "/health")
    return FaultService(base=base, service=svc)
