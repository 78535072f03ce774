"""compose.yaml, checked with Debian's `docker-compose config` (no container engine runs here, so the
stack itself is never started by the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from irq.procs import ROOT

SERVICES = {"redis", "postgres", "migrate", "api", "worker", "flower", "inference"}


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
    assert services["worker"]["environment"]["IRQ_INFERENCE_URL"] == "http://inference:8001/generate"


def test_one_variable_points_the_workers_at_a_modal_endpoint() -> None:
    url = "https://example--irq-guidance-generate.modal.run"
    run = compose_config(IRQ_FLOWER_BASIC_AUTH="ops:pw", IRQ_INFERENCE_URL=url)
    assert run.returncode == 0, run.stderr
    assert yaml.safe_load(run.stdout)["services"]["worker"]["environment"]["IRQ_INFERENCE_URL"] == url


def test_flower_is_never_composed_without_its_credentials() -> None:
    run = compose_config(IRQ_FLOWER_BASIC_AUTH="")
    assert run.returncode != 0 and "IRQ_FLOWER_BASIC_AUTH" in run.stderr
