"""A GPU host's engines as replicas, set by one setting: `IRQ_INFERENCE_REPLICAS=N` makes
`irq inference serve` run N services of the model on consecutive ports (each with 1/N of the GPU memory
vLLM is given), and makes the implicit endpoint N endpoints of one queue, so that `irq worker` serves each
with a process of its own and every engine takes jobs as it has room for them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import cli.procs
from inference.replicas import memory_share, replica_env
from irq.endpoints import Endpoint, Registry, RegistryError, implicit_registry, read_registry
from irq.settings import Settings
from tests.procs import Service, wait_until
from tests.support import Stack, start_stack, stop_stack, write_registry

pytestmark = pytest.mark.timeout(300)

REPLICAS = 2


def test_an_entry_with_replicas_is_one_endpoint_per_engine(tmp_path: Path) -> None:
    path = write_registry(
        tmp_path / "endpoints.toml",
        dict(name="gpu", url="http://10.0.0.5:8101/generate", model="m", replicas=3, cost_per_hour=3.0),
        dict(name="modal", url="modal://irq-inference-guidance", model="m"),
    )
    registry = read_registry(path)
    assert registry.names == ["gpu-1", "gpu-2", "gpu-3", "modal"]
    assert [e.url for e in registry.endpoints[:3]] == [
        "http://10.0.0.5:8101/generate",
        "http://10.0.0.5:8102/generate",
        "http://10.0.0.5:8103/generate",
    ]
    # One queue for the model, and the host's cost shared among its engines, not counted three times.
    assert registry.queues == ["irq:m:guidance"]
    assert sum(e.cost_per_hour for e in registry.endpoints) == pytest.approx(3.0)


def test_replicas_need_a_port_to_count_from() -> None:
    with pytest.raises(ValueError, match="replicas need an http"):
        Registry(endpoints=[Endpoint(name="m", url="modal://app", model="m", replicas=2)])
    with pytest.raises(ValueError, match="replicas need an http"):
        Endpoint(name="m", url="http://host/generate", model="m", replicas=2)
    assert issubclass(RegistryError, ValueError)


def test_one_setting_sizes_the_implicit_endpoint_and_each_engines_memory() -> None:
    settings = Settings(
        inference_replicas=3,
        inference_url="http://127.0.0.1:8001/generate",
        inference_port=8001,
        vllm_gpu_memory_utilization=0.9,
        engine="vllm",
    )
    registry = implicit_registry(settings)
    assert registry.names == ["default-1", "default-2", "default-3"]
    assert memory_share(settings) == pytest.approx(0.3)
    envs = [replica_env(settings, i) for i in range(3)]
    assert [e["IRQ_INFERENCE_PORT"] for e in envs] == ["8001", "8002", "8003"]
    assert {e["IRQ_VLLM_GPU_MEMORY_UTILIZATION"] for e in envs} == {"0.3000"}
    assert {e["IRQ_INFERENCE_REPLICAS"] for e in envs} == {"1"}


def _free_ports(count: int) -> int:
    """The first of `count` consecutive free ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + count < 65536 and all(_free(first + i) for i in range(1, count)):
            return first
    raise RuntimeError("no run of free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[Service, int]]:
    """`irq inference serve` with the simulated engine as REPLICAS replicas."""
    port = _free_ports(REPLICAS)
    env = {
        "IRQ_ENGINE": "simulated",
        "IRQ_DEFAULT_MODEL": "sim",
        "IRQ_INFERENCE_PORT": str(port),
        "IRQ_INFERENCE_REPLICAS": str(REPLICAS),
        "IRQ_SIMULATED_LATENCY_S": "0.3",
        "IRQ_SIMULATED_SLOTS": "4",
    }
    service = Service("engines", ["inference", "serve"], env, tmp_path)
    for i in range(REPLICAS):
        service.wait_ready(f"http://127.0.0.1:{port + i}/health")
    yield service, port
    service.stop()


@pytest.fixture
def host(sqlite_url: str, redis_url: str, tmp_path: Path, engines: tuple[Service, int]) -> Iterator[Stack]:
    _, port = engines
    env = {
        "IRQ_INFERENCE_REPLICAS": str(REPLICAS),
        "IRQ_DEFAULT_MODEL": "sim",
        "IRQ_WORKER_CONCURRENCY": "4",
        "IRQ_RATE_LIMIT_PER_S": "0",
    }
    stack = start_stack(sqlite_url, redis_url, f"http://127.0.0.1:{port}/generate", tmp_path, env=env)
    stack.wait_workers(REPLICAS)
    yield stack
    stop_stack(stack)


def test_every_engine_of_the_host_takes_jobs(host: Stack, engines: tuple[Service, int]) -> None:
    lines = "".join(json.dumps({"prompt": f"job {i}"}) + "\n" for i in range(48))
    with host.client() as http:
        batch = http.post("/v1/batches", content=lines).json()
        wait_until(
            lambda: http.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed",
            120,
            "the batch to finish",
            interval_s=0.3,
        )
        rows = http.get(f"/v1/batches/{batch['id']}/results").text.splitlines()
        jobs = [http.get(f"/v1/jobs/{json.loads(line)['id']}").json() for line in rows]
    assert Counter(j["status"] for j in jobs) == {"succeeded": 48}, jobs[0]["error"]
    by_endpoint = Counter(j["endpoint"] for j in jobs)
    assert set(by_endpoint) == {"default-1", "default-2"}, by_endpoint
    assert min(by_endpoint.values()) >= 8, by_endpoint


def _closed(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    except httpx.TransportError:
        return True
    return False


def test_a_stop_signal_to_the_host_service_stops_every_engine(engines: tuple[Service, int]) -> None:
    service, port = engines
    os.kill(service.proc.pid, signal.SIGTERM)  # the parent alone, as a process manager would
    wait_until(lambda: all(_closed(port + i) for i in range(REPLICAS)), 30, "every engine to stop")
    assert service.proc.wait(timeout=30) == 0


def test_an_engine_that_dies_takes_the_host_service_down_with_a_failure_status(
    engines: tuple[Service, int],
) -> None:
    service, port = engines
    children = [int(pid) for pid in cli.procs.children(service.proc.pid)]
    assert len(children) == REPLICAS
    os.kill(children[0], signal.SIGKILL)
    # A host serving fewer engines than its registry says would hold jobs for the dead one's endpoint:
    # the whole service ends, non-zero, for its process manager to restart.
    assert service.proc.wait(timeout=60) != 0
    wait_until(lambda: all(_closed(port + i) for i in range(REPLICAS)), 30, "every engine to stop")


def test_an_engine_core_forked_during_a_start_does_not_hold_back_the_next_start(tmp_path: Path) -> None:
    # vLLM forks its engine core while the start lock is held; the child lives as long as the engine.
    from inference.engines.vllm import one_start_at_a_time

    lock = tmp_path / "start.lock"
    with one_start_at_a_time(lock):
        core = os.fork()
        if core == 0:  # the "engine core": outlives the start
            time.sleep(30)
            os._exit(0)
    try:
        script = (
            "import pathlib, sys; from inference.engines.vllm import one_start_at_a_time\n"
            f"with one_start_at_a_time(pathlib.Path({str(lock)!r})): print('started')"
        )
        other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
        assert other.stdout.strip() == "started", other.stderr
    finally:
        os.kill(core, signal.SIGKILL)
        os.waitpid(core, 0)
