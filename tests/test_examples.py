"""The sample files under examples/, sent the way docs/api.md shows: each is accepted whole, as the jobs it
says, with its schema checked as any submit's is (an API with no worker, so the jobs stay queued)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from irq.settings import Settings
from irq.store.jobs import JobStore
from irq.store.models import Job
from irq.submission import schema_hash
from tests import ROOT
from tests.support import Stack

EXAMPLES = ROOT / "examples"
SCHEMA: dict[str, Any] = json.loads((EXAMPLES / "schema.json").read_text())


def stored(stack: Stack, batch_id: str) -> dict[str | None, Job]:
    """The batch's jobs as the store reads them back (each with its schema, stored once by hash)."""
    return {job.custom_id: job for job in JobStore(stack.db).batch_jobs(batch_id)}


def irq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args, "--api", stack.api],
        env={**os.environ, "IRQ_API_KEY": stack.key},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_sample_schema_passes_the_submit_time_check() -> None:
    from irq.schema_check import check_schema

    settings = Settings()
    check_schema(
        SCHEMA,
        max_bytes=settings.max_schema_bytes,
        max_depth=settings.max_schema_depth,
        timeout_s=settings.schema_compile_timeout_s,
    )  # raises SchemaProblem where it would be refused


def test_a_job_with_the_sample_schema_is_queued(api_only: Stack) -> None:
    with api_only.client() as http:
        answer = http.post(
            "/v1/jobs", json={"prompt": "Write unit tests for clamp(x, low, high)", "schema": SCHEMA}
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "queued"
    assert answer.json()["schema_hash"] == schema_hash(SCHEMA)

    shown = json.loads(
        irq(api_only, "submit", "Write unit tests for is_even(n)", "--schema", "examples/schema.json").stdout
    )
    assert shown["status"] == "queued" and shown["schema_hash"] == schema_hash(SCHEMA)


def test_the_sample_openai_batch_file_is_three_jobs(api_only: Stack) -> None:
    with api_only.client() as http:
        answer = http.post(
            "/v1/batches",
            content=(EXAMPLES / "batch.jsonl").read_bytes(),
            headers={"Content-Type": "application/jsonl"},
        )
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    assert (batch["total"], batch["counts"]) == (3, {"queued": 3})
    jobs = stored(api_only, batch["id"])
    assert set(jobs) == {"max-of-list", "slugify", "tests-for-clamp"}
    assert jobs["tests-for-clamp"].schema_ == SCHEMA  # the line's response_format schema
    assert jobs["max-of-list"].prompt.endswith("Create a function that returns the maximum of a list")
    assert jobs["max-of-list"].max_tokens == 1024


def test_the_sample_json_array_is_two_jobs_and_the_batch_command_sends_it(api_only: Stack) -> None:
    with api_only.client() as http:
        answer = http.post("/v1/batches", content=(EXAMPLES / "jobs.json").read_bytes())
    assert answer.status_code == 202, answer.text
    batch = answer.json()
    assert (batch["total"], batch["counts"]) == (2, {"queued": 2})
    jobs = stored(api_only, batch["id"])
    assert set(jobs) == {"parse-duration", "tests-for-is-leap-year"}
    assert jobs["tests-for-is-leap-year"].schema_ == SCHEMA and jobs["parse-duration"].priority == 7

    shown = json.loads(irq(api_only, "batch", "submit", "examples/jobs.json").stdout)
    assert (shown["total"], shown["counts"]) == (2, {"queued": 2})


def test_the_sample_openai_sdk_batch_file_is_accepted_by_the_openai_api(
    api_only: Stack, tmp_path: object
) -> None:
    import openai

    client = openai.OpenAI(base_url=api_only.api + "/openai/v1", api_key=api_only.key, max_retries=0)
    uploaded = client.files.create(file=(EXAMPLES / "openai-batch.jsonl").open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")  # fmt: skip
    assert batch.status == "in_progress" and batch.request_counts is not None
    assert batch.request_counts.total == 2
    jobs = stored(api_only, batch.id)
    assert set(jobs) == {"clamp", "max-of-list"} and {j.max_tokens for j in jobs.values()} == {96}
