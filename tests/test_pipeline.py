"""End to end over real HTTP: API → store → Redis → Celery worker → inference service (real model) → store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import pytest

from irq.ir_schema import ir_json_schema
from tests.support import Stack

pytestmark = pytest.mark.slow

SMALL_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "arity": {"type": "integer"}},
    "required": ["name", "arity"],
    "additionalProperties": False,
}


def test_a_job_goes_queued_running_succeeded_with_a_schema_valid_ir_document(pipeline: Stack) -> None:
    with pipeline.client() as http:
        submitted = http.post(
            "/v1/jobs", json={"prompt": "Create a function that returns the maximum of a list"}
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        statuses = [submitted.json()["status"]]
        deadline = time.monotonic() + 240
        while statuses[-1] not in ("succeeded", "failed") and time.monotonic() < deadline:
            status = http.get(f"/v1/jobs/{job_id}").json()["status"]
            if status != statuses[-1]:
                statuses.append(status)
            time.sleep(0.05)
        job = http.get(f"/v1/jobs/{job_id}").json()

    assert statuses == ["queued", "running", "succeeded"], job
    jsonschema.validate(job["result"], ir_json_schema())
    assert job["finish_reason"] == "stop" and job["validation_error"] is None and job["error"] is None
    assert job["attempts"] == 1 and job["worker"] is None  # the worker's host and pid: admin keys only
    assert job["endpoint"] == "default"  # the registry name of the endpoint it ran on
    assert job["usage"]["prompt_tokens"] > 0 and job["usage"]["completion_tokens"] > 0
    t = job["timings"]
    created, started, finished = (
        datetime.fromisoformat(t[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished
    assert t["ttft_ms"] > 0 and t["generation_ms"] >= t["ttft_ms"]
    assert t["queue_wait_ms"] >= 0
    assert t["queue_wait_ms"] + t["generation_ms"] <= t["total_ms"]
    assert abs(t["total_ms"] - (finished - created).total_seconds() * 1000) < 1
    assert t["tokens_per_s"] == pytest.approx(job["usage"]["completion_tokens"] / (t["generation_ms"] / 1000))


def test_long_poll_returns_as_soon_as_a_job_with_its_own_schema_finishes(pipeline: Stack) -> None:
    schema = SMALL_SCHEMA
    with pipeline.client() as http:
        job_id = http.post(
            "/v1/jobs",
            json={"prompt": "A function that adds two numbers", "schema": schema, "temperature": 0},
        ).json()["id"]
        started = time.monotonic()
        job = http.get(f"/v1/jobs/{job_id}", params={"wait": 55}, timeout=70).json()
        waited = time.monotonic() - started
    assert job["status"] == "succeeded", job
    jsonschema.validate(job["result"], schema)
    assert waited < 50  # it answered when the job finished, not at the end of the wait


def test_the_cli_submits_waits_and_shows_status(pipeline: Stack, tmp_path: Path) -> None:
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(SMALL_SCHEMA))
    env = {**os.environ, "IRQ_API_KEY": pipeline.key}
    irq = [sys.executable, "-m", "cli"]
    submitted = subprocess.run(
        [
            *irq,
            "submit",
            "A function that adds two numbers",
            "--schema",
            str(schema_file),
            "--wait",
            "--api",
            pipeline.api,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["status"] == "succeeded"
    jsonschema.validate(job["result"], SMALL_SCHEMA)
    shown = subprocess.run(
        [*irq, "status", job["id"], "--api", pipeline.api],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(shown.stdout)["result"] == job["result"]
