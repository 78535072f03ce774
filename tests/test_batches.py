"""Batches over real HTTP: JSON and JSONL (OpenAI Batch API lines) uploads, counts, results, cancel,
idempotency, tenancy, and a bad line refusing the whole batch with nothing stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from sqlalchemy import func, select

from irq.ir_schema import ir_json_schema
from irq.store.models import Batch, Job
from tests.procs import wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack


@pytest.fixture
def batch_stack(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """API + worker + the simulated inference service (which answers the IR schema at once)."""
    inference: FaultService = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path)
    yield stack
    stop_stack(stack)
    inference.service.stop()


def counted(stack: Stack, model: type) -> int:
    with stack.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def openai_line(custom_id: str, text: str) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "SmolLM2-135M-Instruct",
                "messages": [
                    {"role": "system", "content": "Describe functions."},
                    {"role": "user", "content": text},
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "ir", "schema": ir_json_schema()},
                },
                "max_tokens": 512,
            },
        }
    )


def test_a_jsonl_batch_in_openai_format_runs_and_streams_its_results_in_order(batch_stack: Stack) -> None:
    upload = "\n".join(openai_line(f"req-{i}", f"A function that returns {i} squared") for i in range(12))
    with batch_stack.client() as http:
        submitted = http.post("/v1/batches", content=upload, headers={"Content-Type": "application/jsonl"})
        assert submitted.status_code == 202, submitted.text
        batch = submitted.json()
        assert batch["total"] == 12 and batch["status"] == "in_progress"
        done = wait_until(
            lambda: (b := http.get(f"/v1/batches/{batch['id']}").json())["status"] == "completed" and b,
            60,
            "the batch to complete",
        )
        assert done["counts"] == {"succeeded": 12}  # type: ignore[index]
        results = http.get(f"/v1/batches/{batch['id']}/results")
    assert results.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in results.text.splitlines()]
    assert [line["custom_id"] for line in lines] == [f"req-{i}" for i in range(12)]
    for line in lines:
        assert line["status"] == "succeeded" and line["error"] is None
        jsonschema.validate(line["result"], ir_json_schema())
        assert line["timings"]["total_ms"] > 0
    with batch_stack.db.session() as s:
        job = s.scalars(select(Job).where(Job.custom_id == "req-3")).one()
        assert job.prompt == "Describe functions.\n\nA function that returns 3 squared"
        assert job.max_tokens == 512


def test_a_json_list_batch_with_an_idempotency_key_is_created_once(api_only: Stack) -> None:
    jobs = [{"prompt": f"A function that adds {i}", "custom_id": f"add-{i}", "priority": 7} for i in range(5)]
    with api_only.client() as http:
        first = http.post("/v1/batches", json=jobs, headers={"Idempotency-Key": "upload-1"})
        again = http.post("/v1/batches", json=jobs, headers={"Idempotency-Key": "upload-1"})
        listed = http.get("/v1/jobs", params={"batch_id": first.json()["id"]}).json()["jobs"]
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert counted(api_only, Job) == 5 and api_only.queue_length() == 5
    assert {job["priority"] for job in listed} == {7}


@pytest.mark.parametrize(
    ("upload", "words"),
    [
        ('{"prompt": "ok"}\n{"prompt": ""}\n', "job 2: prompt"),
        ('{"prompt": "ok"}\nnot json\n', "line 2 is not JSON"),
        (
            '[{"prompt": "ok"}, {"prompt": "x", "schema": {"type": "strnig"}}]',
            "job 2: not a valid JSON Schema",
        ),
        ('[{"prompt": "ok"}, {"prompt": "x", "temperature": 7}]', "job 2: temperature"),
        ("[]", "no jobs"),
        ('[{"prompt": "ok", "custom_id": 5}]', "custom_id"),
    ],
    ids=["empty-prompt", "not-json-line", "invalid-schema", "temperature", "empty", "custom-id-type"],
)
def test_one_bad_job_refuses_the_batch_and_nothing_is_stored(
    api_only: Stack, upload: str, words: str
) -> None:
    with api_only.client() as http:
        r = http.post("/v1/batches", content=upload, headers={"Content-Type": "application/jsonl"})
    assert 400 <= r.status_code < 500, r.text
    assert words.lower() in r.json()["error"]["message"].lower()
    assert counted(api_only, Job) == 0 and counted(api_only, Batch) == 0
    assert api_only.queue_length() == 0


def test_cancel_a_batch_and_another_key_cannot_see_it(api_only: Stack) -> None:
    with api_only.client() as alice, api_only.client(api_only.other_key) as bob:
        batch = alice.post("/v1/batches", json=[{"prompt": f"job {i}"} for i in range(4)]).json()
        assert bob.get(f"/v1/batches/{batch['id']}").status_code == 404
        assert bob.post(f"/v1/batches/{batch['id']}/cancel").status_code == 404
        assert bob.get(f"/v1/batches/{batch['id']}/results").status_code == 404
        cancelled = alice.post(f"/v1/batches/{batch['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"] == {"cancelled": 4}


def test_the_batch_command_follows_a_file_to_its_results_and_resumes_without_resubmitting(
    batch_stack: Stack, tmp_path: Path
) -> None:
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text(
        "\n".join(openai_line(f"line-{i}", f"A function that doubles {i}") for i in range(6)) + "\n"
    )
    out = tmp_path / "results.jsonl"
    command = [sys.executable, "-m", "cli", "batch", "submit", str(jobs_file), "--wait", "--out", str(out)]
    env = {**os.environ, "IRQ_API_KEY": batch_stack.key}

    def run() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*command, "--api", batch_stack.api], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    first = run()
    assert "submitted" in first.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"line-{i}" for i in range(6)]
    assert {line["status"] for line in lines} == {"succeeded"}

    again = run()  # the same file: the same batch, followed again, nothing submitted twice
    assert "resumed" in again.stderr
    assert counted(batch_stack, Job) == 6 and counted(batch_stack, Batch) == 1
    assert out.read_text().splitlines() == [json.dumps(line, ensure_ascii=False) for line in lines]
