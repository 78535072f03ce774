"""The official `openai` SDK against irq's OpenAI-compatible API (`/openai/v1`), unchanged: files, batches,
chat completions and models, with an irq key as its API key, over real HTTP to a real API and worker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel
from sqlalchemy import text

from inference.engines.simulated import TEXT
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(600)


def sdk(stack: Stack, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api + "/openai/v1", api_key=key or stack.key, max_retries=0)


def line(custom_id: str, prompt: str, **body: Any) -> str:
    request = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": prompt}], **body}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
    )


def batch_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / f"batch-{time.monotonic_ns()}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_batch(client: openai.OpenAI, batch_id: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired") or time.monotonic() > deadline:
            return batch
        time.sleep(0.5)


@pytest.fixture
def simulated(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Stack, FaultService]]:
    """The API and a worker over the simulated engine (fault service)."""
    service = start_fault_service(tmp_path, latency_s=0.0)
    env = {"IRQ_RATE_LIMIT_PER_S": "0"}
    stack = start_stack(sqlite_url, redis_url, service.url, tmp_path, env=env)
    yield stack, service
    stop_stack(stack)
    service.service.stop()


def test_a_batch_round_trip_through_the_sdk(simulated: tuple[Stack, FaultService], tmp_path: Path) -> None:
    stack, service = simulated
    client = sdk(stack)
    ids = [f"request-{i}" for i in range(40)]
    path = batch_file(tmp_path, [line(c, f"A function that returns {i}") for i, c in enumerate(ids)])
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    assert (uploaded.object, uploaded.bytes, uploaded.purpose) == ("file", path.stat().st_size, "batch")
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    assert uploaded.id in {f.id for f in client.files.list()}

    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
        metadata={"run": "sdk-test"},
    )  # fmt: skip
    assert created.request_counts is not None
    assert created.status == "in_progress" and created.request_counts.total == 40
    batch = wait_batch(client, created.id, 120)
    assert batch.status == "completed", batch
    assert (batch.request_counts.completed, batch.request_counts.failed) == (40, 0)
    assert batch.metadata == {"run": "sdk-test"} and batch.error_file_id is None
    assert batch.completed_at is not None and batch.completed_at >= batch.created_at
    assert created.id in {b.id for b in client.batches.list()}

    output = client.files.content(batch.output_file_id).text.splitlines()
    results = [json.loads(x) for x in output]
    assert sorted(r["custom_id"] for r in results) == sorted(ids)  # every request back, once
    for r in results:
        assert r["error"] is None and r["response"]["status_code"] == 200
        completion = openai.types.chat.ChatCompletion.model_validate(r["response"]["body"])
        # No `response_format`: plain text, as OpenAI answers.
        assert completion.choices[0].message.content == TEXT
        assert completion.choices[0].finish_reason == "stop" and completion.usage is not None
    # The requests ran as ordinary irq jobs of the batch of the same id.
    with stack.client() as http:
        assert http.get(f"/v1/batches/{created.id}").json()["counts"] == {"succeeded": 40}
    assert len(service.calls()) == 40

    assert client.files.delete(uploaded.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_file_with_a_bad_line_fails_the_batch_naming_the_line(
    simulated: tuple[Stack, FaultService], tmp_path: Path
) -> None:
    stack, _ = simulated
    client = sdk(stack)
    lines = [line("a", "fine"), line("b", "streams", stream=True), line("c", "fine"), line("a", "again")]
    uploaded = client.files.create(file=batch_file(tmp_path, lines).open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")  # fmt: skip
    assert batch.status == "failed" and batch.failed_at is not None
    assert batch.errors is not None
    found = [(e.line, e.param, e.code) for e in batch.errors.data or []]
    assert found == [(2, "stream", "unsupported_parameter"), (4, "custom_id", "duplicate_custom_id")]
    with stack.db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0  # nothing was queued
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert refused.value.param == "endpoint"


def test_a_batch_cancelled_mid_run_and_another_keys_batch(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    service = start_fault_service(tmp_path, latency_s=0.5)
    env = {"IRQ_WORKER_CONCURRENCY": "2"}
    stack = start_stack(sqlite_url, redis_url, service.url, tmp_path, env=env)
    try:
        client = sdk(stack)
        path = batch_file(tmp_path, [line(f"r{i}", f"A function that returns {i}") for i in range(30)])
        uploaded = client.files.create(file=path.open("rb"), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")  # fmt: skip
        while client.batches.retrieve(batch.id).request_counts.completed < 2:  # type: ignore[union-attr]
            time.sleep(0.2)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
        final = wait_batch(client, batch.id, 60)
        assert final.status == "cancelled"
        counts = final.request_counts
        assert counts.total == 30 and counts.completed >= 2 and counts.completed + counts.failed == 30
        errors = [json.loads(x) for x in client.files.content(final.error_file_id).text.splitlines()]
        assert len(errors) == counts.failed and {e["error"]["code"] for e in errors} == {"cancelled"}
        done = [json.loads(x) for x in client.files.content(final.output_file_id).text.splitlines()]
        assert len(done) == counts.completed
        assert len({r["custom_id"] for r in errors + done}) == 30

        other = sdk(stack, stack.other_key)
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            other.files.content(final.output_file_id or "")
        assert other.batches.list().data == [] and other.files.list().data == []
        with pytest.raises(openai.AuthenticationError):
            sdk(stack, "irq_not-a-key").batches.list()
    finally:
        stop_stack(stack)
        service.service.stop()


def test_ten_thousand_lines_on_the_simulated_engine(
    simulated: tuple[Stack, FaultService], tmp_path: Path
) -> None:
    stack, _ = simulated
    client = sdk(stack)
    n = 10_000
    path = batch_file(
        tmp_path, [line(f"r{i}", f"A function that returns {i}", max_tokens=512) for i in range(n)]
    )
    uploaded = client.files.create(file=path.open("rb"), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")  # fmt: skip
    final = wait_batch(client, batch.id, 480)
    assert final.status == "completed", final.request_counts
    assert (final.request_counts.total, final.request_counts.completed) == (n, n)
    got = [json.loads(x)["custom_id"] for x in client.files.content(final.output_file_id).text.splitlines()]
    assert len(got) == n and set(got) == {f"r{i}" for i in range(n)}


class Clamp(BaseModel):
    function: str
    low: int
    high: int


def test_chat_completions_on_the_local_engine(
    sqlite_url: str, redis_url: str, inference_url: str, tmp_path: Path
) -> None:
    stack = start_stack(sqlite_url, redis_url, inference_url, tmp_path, env={"IRQ_WORKER_CONCURRENCY": "2"})
    try:
        client = sdk(stack)
        (model,) = [m.id for m in client.models.list()]
        properties = {"name": {"type": "string", "maxLength": 20}, "arity": {"type": "integer"}}
        schema = {"type": "object", "properties": properties, "required": ["name", "arity"],
                  "additionalProperties": False}  # fmt: skip
        answer = client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": "Describe the function."},
                {"role": "user", "content": "clamp(x, low, high)"},
            ],  # fmt: skip
            response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": schema}},
            max_tokens=64,
        )
        assert answer.object == "chat.completion" and answer.model == model
        jsonschema.validate(json.loads(answer.choices[0].message.content or ""), schema)
        assert answer.usage is not None and answer.usage.completion_tokens > 0

        parsed = client.chat.completions.parse(
            model=model, messages=[{"role": "user", "content": "clamp between 0 and 10"}],
            response_format=Clamp, max_tokens=64,
        )  # fmt: skip
        assert isinstance(parsed.choices[0].message.parsed, Clamp)

        async def asynchronous() -> str:
            async with openai.AsyncOpenAI(base_url=stack.api + "/openai/v1", api_key=stack.key) as aclient:
                reply = await aclient.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "max of a list"}],
                    response_format={"type": "json_object"}, max_tokens=48,
                )  # fmt: skip
                return reply.choices[0].message.content or ""

        assert isinstance(json.loads(asyncio.run(asynchronous())), dict)

        # Plain text, generated under a JSON string's grammar, and streamed.
        hello = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=12, stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in hello if chunk.choices)
        assert text.strip() and not text.startswith('"')

        for refused, param in (({"n": 2}, "n"), ({"logprobs": True}, "logprobs")):
            with pytest.raises(openai.BadRequestError) as bad:
                client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "p"}], **refused
                )
            assert bad.value.param == param
        with pytest.raises(openai.BadRequestError) as unknown:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "p"}])
        assert unknown.value.code == "model_not_served"
        # Each request ran as an ordinary irq job of this key.
        with stack.client() as http:
            assert len(http.get("/v1/jobs").json()["jobs"]) == 4
    finally:
        stop_stack(stack)
