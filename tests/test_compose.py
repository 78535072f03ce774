"""compose.yaml, checked with Debian's `docker-compose config` (no container engine runs here, so the
stack itself is never started by the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from irq.endpoints import read_registry
from tests import ROOT

SERVICES = {"redis", "postgres", "migrate", "api", "worker-local", "worker-modal", "flower", "inference"}


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config"],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_declares_every_service_with_health_checks() -> None:
    run = compose_config(IRQ_FLOWER_BASIC_AUTH="ops:pw")
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    assert set(services) == SERVICES
    for name in ("redis", "postgres", "api", "inference"):
        assert "healthcheck" in services[name], name


def test_every_irq_process_is_restarted_when_it_exits() -> None:
    # The sweeper runs inside the workers: a worker that stopped must come back, or queued jobs wait.
    run = compose_config(IRQ_FLOWER_BASIC_AUTH="ops:pw")
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    for name in ("api", "inference", "worker-local", "worker-modal", "flower"):
        assert services[name].get("restart") == "unless-stopped", name
    assert services["migrate"]["restart"] == "no"  # a one-shot


def test_two_endpoints_each_with_its_worker_read_one_registry() -> None:
    run = compose_config(IRQ_FLOWER_BASIC_AUTH="ops:pw", MODAL_KEY="k", MODAL_SECRET="s")
    assert run.returncode == 0, run.stderr
    services = yaml.safe_load(run.stdout)["services"]
    registry = read_registry(ROOT / "deploy" / "endpoints.toml")
    assert registry.names == ["local", "qwen80b-guidance"]
    assert len(registry.models) == 2
    for name in ("api", "inference", "worker-local", "worker-modal", "flower", "migrate"):
        path = services[name]["environment"]["IRQ_ENDPOINTS_FILE"]
        assert any(str(v).endswith(f":{path}:ro") or path in str(v) for v in services[name]["volumes"]), name
    assert services["worker-local"]["command"] == ["worker", "--endpoint", "local"]
    assert services["worker-modal"]["command"] == ["worker", "--endpoint", "qwen80b-guidance"]
    assert services["worker-modal"]["profiles"] == ["modal"]
    # The Modal secrets reach only the worker that calls the endpoint; the registry names the variables.
    assert services["worker-modal"]["environment"]["MODAL_KEY"] == "k"
    assert "MODAL_KEY" not in services["api"]["environment"]
    assert registry.endpoint("qwen80b-guidance").headers_env == {
        "Modal-Key": "MODAL_KEY",
        "Modal-Secret": "MODAL_SECRET",
    }
    # The local endpoint is compose's own inference service.
    assert registry.endpoint("local").url == "http://inference:8001/generate"


def test_flower_is_never_composed_without_its_credentials() -> None:
    run = compose_config(IRQ_FLOWER_BASIC_AUTH="")
    assert run.returncode != 0 and "IRQ_FLOWER_BASIC_AUTH" in run.stderr
