"""The Modal app as it would deploy: read off the real modal objects, in a process with no Modal credentials.

Each case imports inference/modal_app.py in a fresh interpreter whose HOME has no Modal config, whose token
variables are unset and whose Modal server address refuses connections, so any network use at import fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from inference.errors import PermanentInferenceError, RetryableInferenceError
from inference.modal_client import (
    ModalInferenceClient,
    modal_app_name,
    parse_result,
)
from inference.protocol import GenerateRequest

pytest.importorskip("modal")

ROOT = Path(__file__).resolve().parents[1]

# Printed by the child: what modal itself holds for the app, the class and its methods.
DESCRIBE = """
import json
import inference.modal_app as m
from modal._utils.async_utils import synchronizer
from modal_proto import api_pb2

cls = synchronizer._translate_in(m.Inference)
spec = cls._class_service_function._spec
methods = {
    name: {
        "web": api_pb2.WebhookType.Name(hook.type) if (hook := partial.params.webhook_config) else "",
        "label": hook.requested_suffix if hook else "",
    }
    for name, partial in cls._method_partials.items()
}
print(json.dumps({
    "app": m.app.name,
    "app_name": m.APP_NAME,
    "gpu": spec.gpus,
    "volumes": sorted(str(path) for path in spec.volumes),
    "methods": methods,
    "packages": m.PACKAGES,
    "env": m.ENV,
    "max_inputs": m.MAX_INPUTS,
    "scaledown_s": m.SCALEDOWN_S,
    "min_containers": m.MIN_CONTAINERS,
    "timeout_s": m.TIMEOUT_S,
    "tensor_parallel_size": m.TENSOR_PARALLEL_SIZE,
}))
"""


def describe(tmp_path: Path, **env: str) -> dict[str, Any]:
    """Import the app in a credential-less interpreter and return what modal holds for it."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "IRQ_"))}
    child_env.update(
        HOME=str(tmp_path),
        PYTHONPATH=str(ROOT),
        MODAL_SERVER_URL="http://127.0.0.1:9",  # nothing listens there: a network call would fail
        **env,
    )
    # cwd away from the checkout, so that no .env file there changes the settings.
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", DESCRIBE],
        cwd=tmp_path,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return describe(tmp_path_factory.mktemp("home"))


def test_the_app_imports_without_credentials_and_runs_on_one_h100(default_app: dict[str, Any]) -> None:
    assert default_app["gpu"] == "H100"
    assert default_app["tensor_parallel_size"] == 1
    assert default_app["volumes"] == ["/cache"]


def test_the_image_pins_vllm_flashinfer_and_the_llguidance_range_irq_checks_with(
    default_app: dict[str, Any],
) -> None:
    packages = default_app["packages"]
    assert "vllm==0.26.0" in packages
    assert "flashinfer-python==0.6.14" in packages
    assert "llguidance>=1.7,<1.8" in packages
    for runtime in ("fastapi", "httpx", "jsonschema", "pydantic-settings"):
        assert runtime in packages


def test_caches_live_on_the_volume_and_flashinfer_samples(default_app: dict[str, Any]) -> None:
    env = default_app["env"]
    for key in ("HF_HOME", "VLLM_CACHE_ROOT", "FLASHINFER_WORKSPACE_BASE"):
        assert env[key].startswith("/cache/")
    assert env["VLLM_USE_FLASHINFER_SAMPLER"] == "1"


def test_one_container_takes_many_inputs_so_that_vllm_can_batch(default_app: dict[str, Any]) -> None:
    assert default_app["max_inputs"] == 256
    assert (default_app["scaledown_s"], default_app["min_containers"], default_app["timeout_s"]) == (
        300,
        0,
        3600,
    )


def test_the_service_app_and_the_sdk_method_are_both_exposed(default_app: dict[str, Any]) -> None:
    methods = default_app["methods"]
    assert methods["web_app"] == {"web": "WEBHOOK_TYPE_ASGI_APP", "label": "irq-inference-guidance"}
    assert methods["generate"]["web"] == ""


def test_the_default_deployment_is_the_guidance_backend_on_qwen3_next(default_app: dict[str, Any]) -> None:
    assert default_app["app"] == default_app["app_name"] == "irq-inference-guidance"
    assert default_app["env"]["IRQ_STRUCTURED_OUTPUT_BACKEND"] == "guidance"
    assert default_app["env"]["IRQ_VLLM_MODEL"] == "Qwen/Qwen3-Next-80B-A3B-Instruct-FP8"


@pytest.mark.parametrize("backend", ["xgrammar", "auto"])
def test_each_backend_deploys_as_its_own_app(tmp_path: Path, backend: str) -> None:
    described = describe(tmp_path, IRQ_STRUCTURED_OUTPUT_BACKEND=backend)
    assert described["app"] == f"irq-inference-{backend}"
    assert described["env"]["IRQ_STRUCTURED_OUTPUT_BACKEND"] == backend


def test_deployment_knobs_come_from_the_environment(tmp_path: Path) -> None:
    described = describe(
        tmp_path,
        IRQ_MODAL_GPU="H100:2",
        IRQ_MODAL_MAX_INPUTS="64",
        IRQ_MODAL_SCALEDOWN_S="60",
        IRQ_MODAL_MIN_CONTAINERS="1",
        IRQ_MODAL_TIMEOUT_S="900",
        IRQ_VLLM_MODEL="Qwen/Qwen3-30B-A3B-Instruct-2507-FP8",
    )
    assert described["gpu"] == "H100:2"
    assert described["tensor_parallel_size"] == 2
    assert (described["max_inputs"], described["scaledown_s"]) == (64, 60)
    assert (described["min_containers"], described["timeout_s"]) == (1, 900)
    assert described["env"]["IRQ_VLLM_MODEL"] == "Qwen/Qwen3-30B-A3B-Instruct-2507-FP8"


def test_method_results_mirror_the_service_answers() -> None:
    from inference.modal_app import method_result

    body = {"text": {"a": 1}, "tokens_used": 3, "generation_time_ms": 5.0, "finish_reason": "stop"}
    assert method_result(200, body) == body
    rejected = {"code": "schema_unsupported", "message": "Unknown format: topic"}
    assert method_result(422, rejected) == {"status_code": 422, "error": rejected}
    assert method_result(502, "Bad Gateway")["error"]["code"] == "engine_error"


def test_the_modal_client_types_the_method_results_like_the_http_client() -> None:
    ok = parse_result(
        {"ir_json": {"a": 1}, "tokens_used": 3, "generation_time_ms": 5.0, "finish_reason": "stop"}
    )
    assert ok.text == {"a": 1}
    with pytest.raises(PermanentInferenceError) as permanent:
        parse_result({"status_code": 422, "error": {"code": "schema_unsupported", "message": "no"}})
    assert permanent.value.code == "schema_unsupported"
    with pytest.raises(RetryableInferenceError) as retryable:
        parse_result({"status_code": 500, "error": {"code": "engine_error", "message": "boom"}})
    assert retryable.value.code == "engine_error"
    with pytest.raises(RetryableInferenceError):
        parse_result({"text": 1})


def test_modal_faults_are_retryable() -> None:
    import modal.exception

    from inference.modal_client import typed_fault

    assert typed_fault(TimeoutError(), 30).code == "inference_timeout"
    assert typed_fault(modal.exception.FunctionTimeoutError("late"), 30).code == "inference_timeout"
    assert typed_fault(modal.exception.NotFoundError("no app"), 30).code == "inference_unreachable"
    assert typed_fault(RuntimeError("boom"), 30).code == "inference_remote_error"


def test_the_modal_client_names_the_app_of_its_backend() -> None:
    from irq.endpoints import Endpoint

    client = ModalInferenceClient(Endpoint(name="x", url="modal://", model="m", backend="xgrammar"))
    assert client.app_name == modal_app_name("xgrammar") == "irq-inference-xgrammar"
    assert client.url == "modal://irq-inference-xgrammar/Inference.generate"
    client.close()
    named = ModalInferenceClient(Endpoint(name="a", url="modal://irq-inference-auto", model="m", backend="x"))
    assert named.app_name == "irq-inference-auto"


class FakeCall:
    """A FunctionCall that answers `result`, or raises it; remembers whether it was cancelled."""

    def __init__(self, result: object) -> None:
        self.result, self.cancelled, self.timeout = result, False, 0.0

    def get(self, timeout: float) -> object:
        self.timeout = timeout
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def cancel(self) -> None:
        self.cancelled = True


def client_answering(result: object) -> tuple[ModalInferenceClient, FakeCall]:
    from types import SimpleNamespace

    from irq.endpoints import Endpoint

    call = FakeCall(result)
    client = ModalInferenceClient(Endpoint(name="m", url="modal://irq-inference-guidance", model="m"))
    client._instance = SimpleNamespace(generate=SimpleNamespace(spawn=lambda body: call))
    return client, call


def generate(client: ModalInferenceClient) -> object:
    request = GenerateRequest(prompt="p", schema={}, max_tokens=8, temperature=0.0, top_p=1.0)
    return client.generate(request, timeout_s=30)


def test_a_call_past_its_timeout_is_cancelled_and_retried_later() -> None:
    client, call = client_answering(TimeoutError())
    with pytest.raises(RetryableInferenceError) as fault:
        generate(client)
    assert fault.value.code == "inference_timeout" and call.cancelled and call.timeout == 30


def test_a_refused_schema_through_the_sdk_is_permanent() -> None:
    client, call = client_answering(
        {"status_code": 422, "error": {"code": "schema_unsupported", "message": "x"}}
    )
    with pytest.raises(PermanentInferenceError):
        generate(client)
    assert not call.cancelled


class BlockingCall:
    """A FunctionCall still running: `get` waits until the call is cancelled, then raises as the SDK does
    for a cancelled input."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def get(self, timeout: float) -> object:
        if self.cancelled.wait(timeout):
            raise RuntimeError("the input was cancelled")
        raise TimeoutError()

    def cancel(self) -> None:
        self.cancelled.set()


def test_an_aborted_call_is_cancelled_and_its_thread_freed() -> None:
    """A job cancelled meanwhile: the worker's abort cancels the Modal call (which cancels the request in
    the container, and the engine's generation) and the waiting thread returns at once."""
    from types import SimpleNamespace

    from inference.abort import Abort, Aborted
    from irq.endpoints import Endpoint

    call, spawned = BlockingCall(), threading.Event()

    def spawn(body: object) -> BlockingCall:
        spawned.set()
        return call

    client = ModalInferenceClient(Endpoint(name="m", url="modal://irq-inference-guidance", model="m"))
    client._instance = SimpleNamespace(generate=SimpleNamespace(spawn=spawn))
    abort, outcome = Abort(), []

    def wait() -> None:
        request = GenerateRequest(prompt="p", schema={}, max_tokens=8, temperature=0.0, top_p=1.0)
        try:
            client.generate(request, timeout_s=600, abort=abort)
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    assert spawned.wait(10)
    abort.set()
    thread.join(10)
    assert call.cancelled.is_set() and len(outcome) == 1 and isinstance(outcome[0], Aborted)
