"""The local engine and the inference service with the real SmolLM2 model on CPU: schema-valid JSON out."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from inference.abort import Abort, Aborted
from inference.engines.base import SchemaRejected
from inference.engines.local import LocalEngine
from inference.http_client import HttpInferenceClient
from inference.protocol import GenerateRequest
from irq.endpoints import implicit_registry
from irq.settings import Settings
from tests.procs import Service, free_port, wait_until

# One worker runs them all (`--dist loadgroup`), so that the model is loaded once, by the module's fixtures.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("local-engine")]

SCHEMAS = Path(__file__).resolve().parent / "data" / "jsonschemabench"

# One schema per source set, with a prompt the 135M model answers in well under 100 tokens at temperature 0.
BENCH_CASES = [
    pytest.param(
        "Glaiveai2K__create_calendar_event_1cc9b5e0.json",
        "Create a calendar event 'Team meeting' on 2024-05-01 from 10:00 to 11:00 UTC in Room 4.",
        id="glaive-calendar-event",
    ),
    pytest.param(
        "Github_easy__o58916.json",
        "Contact: Jane Doe, CTO, jane@example.com, phone +1 555 0100.",
        id="github-person",
    ),
    pytest.param(
        "Kubernetes__kb_923_Normalized.json",
        "The deployment is scaled to 3 replicas, selected by app=web.",
        id="kubernetes-scale-status",
    ),
]
UNSUPPORTED_SCHEMA = {"type": "string", "format": "topic"}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text())
    return schema


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def engine(model_cache: Path) -> LocalEngine:
    """Loaded once from the GGUF; this also writes the float-model cache the service then starts from."""
    engine = LocalEngine(Settings(model_cache_dir=model_cache))
    asyncio.run(engine.load())
    return engine


@pytest.mark.parametrize(("schema_file", "prompt"), BENCH_CASES)
def test_generates_schema_valid_json(engine: LocalEngine, schema_file: str, prompt: str) -> None:
    schema = load_schema(schema_file)
    request = GenerateRequest(prompt=prompt, schema=schema, max_tokens=1024, temperature=0.0, top_p=1.0)
    result = asyncio.run(engine.generate(request))

    assert result.finish_reason == "stop", result.text
    jsonschema.validate(json.loads(result.text), schema)
    assert result.completion_tokens > 0 and result.prompt_tokens > 0
    assert 0 < result.ttft_ms <= result.generation_time_ms
    assert result.backend == "guidance"


def test_first_load_leaves_a_complete_cache(engine: LocalEngine, model_cache: Path) -> None:
    assert (engine.cache_path / "config.json").is_file()
    assert engine.cache_path.parent == model_cache
    assert [p.name for p in model_cache.iterdir()] == [engine.cache_path.name]  # no half-written temp folder


def test_unsupported_schema_is_rejected(engine: LocalEngine) -> None:
    with pytest.raises(SchemaRejected, match="Unknown format"):
        asyncio.run(
            engine.generate(
                GenerateRequest(
                    prompt="anything", schema=UNSUPPORTED_SCHEMA, max_tokens=16, temperature=0.0, top_p=1.0
                )
            )
        )


@pytest.fixture(scope="module")
def service_url(
    engine: LocalEngine, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`irq inference serve` in its own process, loading from the cache that `engine` wrote."""
    port = free_port()
    env = {"IRQ_ENGINE": "local", "IRQ_MODEL_CACHE_DIR": str(model_cache), "IRQ_INFERENCE_PORT": str(port)}
    service = Service("inference", ["inference", "serve"], env, tmp_path_factory.mktemp("logs"))
    url = f"http://127.0.0.1:{port}"
    try:
        service.wait_ready(f"{url}/health", timeout_s=60)
        yield url
    finally:
        service.stop()


def test_service_health_is_cold_until_the_first_generate(service_url: str) -> None:
    started = time.monotonic()
    response = httpx.get(f"{service_url}/health", timeout=5.0)

    assert time.monotonic() - started < 2.0
    assert response.status_code == 200
    assert response.json() == {
        "status": "cold",
        "model": "SmolLM2-135M-Instruct",
        "gpu": "none (cpu)",
        "backend": "guidance",
        "running": 0,
        "max_model_len": None,  # known once the model is loaded
    }


def test_service_generates_schema_valid_json(service_url: str) -> None:
    body = {"prompt": "What is 2 + 3?", "schema": ANSWER_SCHEMA, "max_tokens": 64, "temperature": 0.0}
    response = httpx.post(f"{service_url}/generate", json=body, timeout=120.0)

    assert response.status_code == 200, response.text
    answer = response.json()
    jsonschema.validate(answer["text"], ANSWER_SCHEMA)
    assert answer["finish_reason"] == "stop"
    assert answer["tokens_used"] == answer["completion_tokens"] > 0
    assert answer["backend"] == "guidance"
    health = httpx.get(f"{service_url}/health", timeout=5.0).json()
    assert health["status"] == "ok" and health["max_model_len"] == 8192


def test_service_refuses_a_prompt_that_cannot_fit_the_context(service_url: str) -> None:
    body = {"prompt": "What is 2 + 3?", "schema": ANSWER_SCHEMA, "max_tokens": 8192}
    response = httpx.post(f"{service_url}/generate", json=body, timeout=120.0)

    assert response.status_code == 422
    assert response.json()["code"] == "prompt_too_long"
    assert "max_tokens is 8192" in response.json()["message"] and "8192" in response.json()["message"]


def test_service_reports_a_document_cut_short_by_max_tokens(service_url: str) -> None:
    body = {"prompt": "What is 2 + 3?", "schema": ANSWER_SCHEMA, "max_tokens": 2, "temperature": 0.0}
    response = httpx.post(f"{service_url}/generate", json=body, timeout=120.0)

    assert response.status_code == 422
    assert response.json()["code"] == "output_truncated"


def test_service_rejects_an_unsupported_schema(service_url: str) -> None:
    body = {"prompt": "anything", "schema": UNSUPPORTED_SCHEMA}
    response = httpx.post(f"{service_url}/generate", json=body, timeout=120.0)

    assert response.status_code == 422
    assert response.json()["code"] == "schema_unsupported"
    assert "Unknown format" in response.json()["message"]


def test_service_rejects_an_invalid_request(service_url: str) -> None:
    response = httpx.post(f"{service_url}/generate", json={"prompt": ""}, timeout=10.0)

    assert response.status_code == 422
    assert response.json()["code"] == "invalid_request"


def test_an_aborted_request_stops_the_local_engine_at_once(service_url: str) -> None:
    """A cancelled job's request, dropped by the worker's client: the engine stops decoding it (it would
    run for minutes), so the service reports nothing running and the next request does not wait for it."""
    settings = Settings(inference_url=f"{service_url}/generate")
    client = HttpInferenceClient(implicit_registry(settings).endpoints[0], settings)
    long = GenerateRequest(
        prompt="List two hundred city names.",
        schema={"type": "array", "items": {"type": "string"}, "minItems": 200},
        max_tokens=2000,
        temperature=0.0,
        top_p=1.0,
    )
    abort, outcome = Abort(), []

    def worker_thread() -> None:
        try:
            client.generate(long, timeout_s=600, abort=abort)
        except Exception as exc:
            outcome.append(exc)

    def running() -> int:
        return int(httpx.get(f"{service_url}/health", timeout=10).json()["running"])

    httpx.post(f"{service_url}/warmup", timeout=300)
    thread = threading.Thread(target=worker_thread)
    try:
        thread.start()
        wait_until(lambda: running() == 1, 60, "the generation to start")
        abort.set()
        thread.join(5)
        assert len(outcome) == 1 and isinstance(outcome[0], Aborted)
        # Within one forward pass of the model (a chunk of the prompt, or one token): well under a second on
        # an idle machine, seconds on a busy one.
        wait_until(lambda: running() == 0, 20, "the engine to stop decoding")
        short = GenerateRequest(prompt="What is 2 + 3?", schema=ANSWER_SCHEMA, max_tokens=64, temperature=0.0)
        reply = client.generate(short, timeout_s=120)
        assert reply.finish_reason == "stop"
        assert (reply.engine_wait_ms or 0.0) < 1500.0
    finally:
        abort.set()
        thread.join(30)
        client.close()
