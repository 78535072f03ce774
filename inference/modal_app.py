"""The Modal deployment of the inference service: vLLM on an H100, one app per structured-output backend.

`IRQ_STRUCTURED_OUTPUT_BACKEND=guidance modal deploy inference/modal_app.py` deploys `irq-inference-guidance`
(likewise xgrammar and auto, side by side): the same FastAPI service as `irq inference serve` (POST /generate,
GET /health, POST /warmup) at one web URL, and `Inference.generate` for workers calling through the Modal
SDK (inference/modal_client.py). Importing this module declares the app only: no credentials, no network.
"""

from __future__ import annotations

import os
from typing import Any

import modal

from inference.modal_client import CLASS_NAME, modal_app_name
from irq.error_codes import ErrorCode
from irq.settings import Settings

SETTINGS = Settings()
BACKEND = SETTINGS.structured_output_backend
APP_NAME = modal_app_name(BACKEND)

# The CUDA devel image, not debian_slim: FlashInfer compiles its attention and sampling kernels with nvcc
# on first use (no prebuilt flashinfer-cubin 0.6.14 on PyPI), and CUDA 13 matches vLLM 0.26's torch 2.11.
BASE_IMAGE = "nvidia/cuda:13.0.2-devel-ubuntu24.04"
PYTHON_VERSION = "3.12"
# vLLM 0.26.0 pins torch 2.11.0 (CUDA 13) and flashinfer-python 0.6.14; llguidance is the range vLLM
# requires, the same one irq's API checks schemas with.
PACKAGES = [
    "vllm==0.26.0",
    "flashinfer-python==0.6.14",
    "llguidance>=1.7,<1.8",
    "fastapi",
    "httpx",
    "jsonschema",
    "pydantic-settings",
    "uvicorn",
]
ATTENTION_BACKEND = "FLASHINFER"  # vLLM 0.26 takes it as an engine argument, not an environment variable
CACHE_DIR = "/cache"
CACHE_VOLUME_NAME = "irq-inference-cache"


def _env_int(name: str, default: int) -> int:
    """Deployment knobs for Modal itself; irq's own settings come from `Settings`."""
    return int(os.environ.get(name) or default)


GPU = os.environ.get("IRQ_MODAL_GPU") or "H100"  # "H100:2" or "H200" for models over ~70 GB
TENSOR_PARALLEL_SIZE = int(GPU.split(":")[1]) if ":" in GPU else 1
SCALEDOWN_S = _env_int("IRQ_MODAL_SCALEDOWN_S", 300)
MIN_CONTAINERS = _env_int("IRQ_MODAL_MIN_CONTAINERS", 0)
TIMEOUT_S = _env_int("IRQ_MODAL_TIMEOUT_S", 3600)
MAX_INPUTS = _env_int("IRQ_MODAL_MAX_INPUTS", 256)
# The web endpoint answers only requests with a workspace proxy-auth token (Modal-Key/Modal-Secret headers).
REQUIRES_PROXY_AUTH = os.environ.get("IRQ_MODAL_PROXY_AUTH", "1") != "0"

ENV = {
    # Weights and compile caches live on the volume, so only the first container of all pays for them.
    "HF_HOME": f"{CACHE_DIR}/hf",
    "VLLM_CACHE_ROOT": f"{CACHE_DIR}/vllm",
    "FLASHINFER_WORKSPACE_BASE": f"{CACHE_DIR}/flashinfer",
    "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
    "VLLM_USE_FLASHINFER_SAMPLER": "1",
    "CUDA_HOME": "/usr/local/cuda",
    # The container reads the same settings the deployer had.
    "IRQ_VLLM_MODEL": SETTINGS.vllm_model,
    "IRQ_SERVED_MODEL": SETTINGS.served_model,
    "IRQ_STRUCTURED_OUTPUT_BACKEND": BACKEND,
    "IRQ_VLLM_MAX_MODEL_LEN": str(SETTINGS.vllm_max_model_len),
    "IRQ_VLLM_GPU_MEMORY_UTILIZATION": str(SETTINGS.vllm_gpu_memory_utilization),
    "IRQ_VLLM_MAX_NUM_SEQS": str(SETTINGS.vllm_max_num_seqs),
}

image = (
    modal.Image.from_registry(BASE_IMAGE, add_python=PYTHON_VERSION)
    .pip_install(*PACKAGES)
    .env(ENV)
    .add_local_python_source("irq", "inference")
)
cache_volume = modal.Volume.from_name(CACHE_VOLUME_NAME, create_if_missing=True)
app = modal.App(APP_NAME)


def method_result(status_code: int, body: Any) -> dict[str, Any]:
    """What `Inference.generate` returns for the service's answer: the body, or the error and its status."""
    if status_code == 200 and isinstance(body, dict):
        return body
    error = body if isinstance(body, dict) else {"code": ErrorCode.engine_error, "message": str(body)[:500]}
    return {"status_code": status_code, "error": error}


@app.cls(
    image=image,
    gpu=GPU,
    volumes={CACHE_DIR: cache_volume},
    scaledown_window=SCALEDOWN_S,
    min_containers=MIN_CONTAINERS,
    timeout=TIMEOUT_S,
)
@modal.concurrent(max_inputs=MAX_INPUTS)  # many requests in one container, so that vLLM can batch them
class Inference:
    """One vLLM engine per container, loaded once, behind the service app and `generate`."""

    @modal.enter()
    async def start(self) -> None:
        import httpx

        from inference.engines.vllm import VLLMEngine
        from inference.service import create_app

        settings = Settings()
        self.engine = VLLMEngine(
            settings, attention_backend=ATTENTION_BACKEND, tensor_parallel_size=TENSOR_PARALLEL_SIZE
        )
        self.web = create_app(engine=self.engine, settings=settings)
        # `generate` goes through the very same app, so both doors answer alike.
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.web), base_url="http://inference", timeout=None
        )
        await self.engine.load()
        # Keep the weights and compile caches this container fetched and built for the next ones.
        await cache_volume.commit.aio()  # type: ignore[no-untyped-call]

    @modal.exit()
    async def stop(self) -> None:
        await self.http.aclose()
        self.engine.shutdown()

    @modal.asgi_app(label=APP_NAME, requires_proxy_auth=REQUIRES_PROXY_AUTH)
    def web_app(self) -> Any:
        return self.web

    @modal.method()
    async def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /generate through the SDK: the same body in; the same body out, or `{status_code, error}`."""
        response = await self.http.post("/generate", json=body)
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text
        return method_result(response.status_code, answer)


__all__ = ["CLASS_NAME", "Inference", "app"]
