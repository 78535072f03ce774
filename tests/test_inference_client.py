"""The worker's inference client against a real HTTP server that answers with each kind of fault."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import cli.stack
from cli.stack import StackEnv
from inference.errors import InferenceError, PermanentInferenceError, RetryableInferenceError
from inference.http_client import HttpInferenceClient
from inference.protocol import GenerateRequest
from irq.endpoints import implicit_registry
from irq.ir_schema import ir_json_schema
from irq.settings import Settings
from tests.procs import free_port, wait_until

DOCUMENT = {"name": "max_of"}


def fault_app() -> FastAPI:
    """`/generate/<mode>` answers the way a real endpoint does in that situation."""
    app = FastAPI()
    ok = {"tokens_used": 3, "generation_time_ms": 12.5, "finish_reason": "stop"}
    answers = {
        "ok": JSONResponse({"text": DOCUMENT, **ok, "completion_tokens": 3, "backend": "guidance"}),
        "legacy": JSONResponse({"ir_json": DOCUMENT, **ok}),
        "503": JSONResponse({"code": "overloaded", "message": "try later"}, status_code=503),
        "429": JSONResponse({"detail": "rate limited"}, status_code=429),
        "422": JSONResponse(
            {"code": "schema_unsupported", "message": "Unknown format: topic"}, status_code=422
        ),
        "garbage": JSONResponse(["not", "a", "response"]),
    }

    @app.post("/generate/{mode}")
    def generate(mode: str) -> JSONResponse:
        if mode == "hang":
            time.sleep(3)
        return answers.get(mode, answers["ok"])

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(fault_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started, 10, "the fault server")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)


def call(url: str, timeout_s: float = 10) -> object:
    settings = Settings(inference_url=url)
    client = HttpInferenceClient(implicit_registry(settings).endpoints[0], settings)
    try:
        request = GenerateRequest(prompt="p", schema={"type": "object"}, max_tokens=8, temperature=0, top_p=1)
        return client.generate(request, timeout_s=timeout_s)
    finally:
        client.close()


def test_reads_the_text_key_and_the_older_ir_json_key(server: str) -> None:
    for mode in ("ok", "legacy"):
        reply = call(f"{server}/generate/{mode}")
        assert reply.text == DOCUMENT and reply.finish_reason == "stop"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mode", "error", "code"),
    [
        ("503", RetryableInferenceError, "overloaded"),
        ("429", RetryableInferenceError, "inference_http_429"),
        ("garbage", RetryableInferenceError, "inference_bad_response"),
        ("422", PermanentInferenceError, "schema_unsupported"),
    ],
)
def test_http_faults_are_typed_for_the_retry_policy(
    server: str, mode: str, error: type[InferenceError], code: str
) -> None:
    with pytest.raises(error) as caught:
        call(f"{server}/generate/{mode}")
    assert caught.value.code == code


def test_timeouts_and_refused_connections_are_retryable(server: str) -> None:
    with pytest.raises(RetryableInferenceError) as hung:
        call(f"{server}/generate/hang", timeout_s=0.5)
    assert hung.value.code == "inference_timeout"
    with pytest.raises(RetryableInferenceError) as refused:
        call(f"http://127.0.0.1:{free_port()}/generate")
    assert refused.value.code == "inference_unreachable"


def test_a_request_its_client_abandons_stops_generating(tmp_path: Path) -> None:
    """A worker that gives up on a request (its job's deadline) closes the connection: the service cancels
    the generation instead of letting it hold an engine slot to the end."""
    port = free_port()
    env = StackEnv(inference_port=port, engine="simulated", extra={"IRQ_SIMULATED_LATENCY_S": "30"})
    system = cli.stack.Stack(env, tmp_path)
    try:
        system.start_inference()
        base = system.inference_base
        body = {"prompt": "p", "schema": ir_json_schema(), "max_tokens": 64}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(base + "/generate", json=body, timeout=httpx.Timeout(10, read=1.0))
        assert wait_until(
            lambda: httpx.get(base + "/health").json()["running"] == 0, 5, "the generation to stop"
        )
    finally:
        system.stop()
