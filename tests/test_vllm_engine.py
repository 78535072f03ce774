"""The vLLM engine's request building and result mapping, against vLLM's own classes where vLLM is installed.

Cases that take the `vllm` fixture skip where vLLM cannot be imported (CPU machines); on the GPU host
(scripts/gpu/README.md) they run against vLLM 0.26 itself. With IRQ_TEST_VLLM_MODEL set to a model folder,
the engine also generates on the GPU, rejects a schema its backend refuses and carries on.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import httpx
import jsonschema
import pytest

from cli.procs import Service, free_port
from inference.engines.base import GrammarFailure, PromptTooLong, SchemaRejected
from inference.engines.vllm import (
    WARMUP_SCHEMA,
    Collected,
    EngineRequestFailed,
    VLLMEngine,
    chosen_backend,
    to_engine_result,
)
from inference.protocol import GenerateRequest
from irq.endpoints import implicit_registry
from irq.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
UNKNOWN_FORMAT = {"type": "object", "properties": {"t": {"type": "string", "format": "topic"}}}


@pytest.fixture(scope="module")
def vllm() -> ModuleType:
    module: ModuleType = pytest.importorskip("vllm")
    return module


def delta(text: str, tokens: list[int], finish: str | None = None, prompt: int = 7) -> Any:
    """A RequestOutput-shaped delta, for the cases that need no vLLM."""
    completion = SimpleNamespace(text=text, token_ids=tokens, finish_reason=finish)
    return SimpleNamespace(outputs=[completion], prompt_token_ids=list(range(prompt)))


def request(
    prompt: str, schema: dict[str, Any], max_tokens: int, temperature: float, top_p: float
) -> GenerateRequest:
    """The engine's request, from its values in the order the cases give them."""
    return GenerateRequest(
        prompt=prompt, schema=schema, max_tokens=max_tokens, temperature=temperature, top_p=top_p
    )


def collect(*outputs: Any) -> Collected:
    collected = Collected()
    for at_ms, output in enumerate(outputs, start=1):
        collected.add(output, float(at_ms * 10))
    return collected


# Without vLLM


def test_the_engine_module_imports_and_answers_health_without_vllm() -> None:
    code = (
        "import sys; sys.modules['vllm'] = None\n"  # any `import vllm` now fails
        "from inference.engines.vllm import VLLMEngine\n"
        "from irq.settings import Settings\n"
        "e = VLLMEngine(Settings(vllm_model='m', structured_output_backend='xgrammar'))\n"
        "print(e.loaded, repr(e.gpu), e.model_name, e.backend)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["False", "''", "m", "xgrammar"]


def test_deltas_add_up_to_the_document_with_the_first_token_time() -> None:
    collected = collect(delta("", []), delta('{"name": ', [1, 2]), delta('"x"}', [3], finish="stop"))
    result = to_engine_result(collected, elapsed_ms=55.0, backend="guidance")
    assert json.loads(result.text) == {"name": "x"}
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    assert result.ttft_ms == 20.0  # the second delta carried the first token
    assert (result.finish_reason, result.generation_time_ms, result.backend) == ("stop", 55.0, "guidance")


def test_the_time_in_vllms_waiting_queue_is_the_engine_wait_and_not_generation() -> None:
    # vLLM's stats stamp the first scheduling with the engine core's time.monotonic(): 30 ms after accepted.
    collected = Collected(accepted=100.0)
    scheduled = SimpleNamespace(scheduled_ts=100.030)
    for at_ms, output in ((35.0, delta("", [])), (40.0, delta('{"name": "x"}', [1, 2], "stop"))):
        output.metrics = scheduled
        collected.add(output, at_ms)
    result = to_engine_result(collected, 50.0, "guidance")
    assert result.engine_wait_ms == pytest.approx(30.0)
    assert result.ttft_ms == pytest.approx(10.0)  # first token 40 ms after accepted, 10 after scheduled
    assert result.generation_time_ms == pytest.approx(20.0)
    assert result.engine_wait_ms + result.generation_time_ms == pytest.approx(50.0)


def test_a_document_cut_by_max_tokens_is_reported_as_length() -> None:
    result = to_engine_result(collect(delta('{"name": "xx', [1, 2], "length")), 9.0, "xgrammar")
    assert (result.finish_reason, result.completion_tokens) == ("length", 2)


def test_a_grammar_the_engine_could_not_compile_is_a_rejected_schema() -> None:
    with pytest.raises(SchemaRejected, match="xgrammar"):
        to_engine_result(collect(delta("", [], "error")), 1.0, "xgrammar")


def test_an_aborted_request_is_a_fault_not_a_document() -> None:
    with pytest.raises(EngineRequestFailed, match="abort"):
        to_engine_result(collect(delta("{", [1], "abort")), 1.0, "guidance")


def test_a_token_the_grammar_refused_mid_generation_is_a_grammar_failure() -> None:
    """vLLM ends a request in "error" after tokens when llguidance refused a token its own mask allowed
    ("LLMatcher error: Parser Error: token … doesn't satisfy the grammar"): no transient fault."""
    with pytest.raises(GrammarFailure, match="after 30 tokens"):
        to_engine_result(collect(delta('{"name": "a", "data', list(range(30)), "error")), 1.0, "guidance")


def test_a_prompt_past_the_models_context_is_refused_with_its_sizes() -> None:
    class FakeLLM:
        model_config = SimpleNamespace(max_model_len=64)

        async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
            raise AssertionError("a prompt that cannot fit is never sent")
            yield  # an async generator, as vLLM's

    tokenizer = SimpleNamespace(apply_chat_template=lambda *a, **k: "p", encode=lambda *a, **k: [1] * 60)
    engine = VLLMEngine(Settings(vllm_model="m", structured_output_backend="guidance"))
    fake: Any = FakeLLM()
    engine._llm, engine._tokenizer = fake, tokenizer
    assert engine.max_model_len == 64
    with pytest.raises(
        PromptTooLong, match="prompt is 60 tokens and max_tokens is 16: 76 tokens, over .* 64"
    ):
        asyncio.run(engine.generate(request("p", SCHEMA, 16, 0.0, 1.0)))


def test_the_backend_is_the_one_vllm_resolved_else_the_configured_one() -> None:
    resolved: Any = SimpleNamespace(structured_outputs=SimpleNamespace(_backend="xgrammar"))
    unresolved: Any = SimpleNamespace(structured_outputs=SimpleNamespace(_backend=None))
    assert chosen_backend(resolved, "auto") == "xgrammar"
    assert chosen_backend(unresolved, "auto") == "auto"


def test_a_submit_time_value_error_rejects_only_that_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM raises ValueError from generate() at submit; the engine answers SchemaRejected and serves on."""

    def params(request: GenerateRequest) -> Any:
        return SimpleNamespace(structured_outputs=SimpleNamespace(json=request.schema_, _backend=None))

    class FakeLLM:
        async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
            # `==`, not `is`: the request holds a copy of the schema it was built with.
            if params.structured_outputs.json == UNKNOWN_FORMAT:
                raise ValueError("Grammar error: Unknown format: topic")
            params.structured_outputs._backend = "guidance"
            yield delta('{"name": "a"}', [1, 2, 3], "stop")

    monkeypatch.setattr("inference.engines.vllm.build_sampling_params", params)
    tokenizer = SimpleNamespace(apply_chat_template=lambda *a, **k: "p", encode=lambda *a, **k: [1, 2])
    engine = VLLMEngine(Settings(vllm_model="m", structured_output_backend="guidance"))
    fake: Any = FakeLLM()
    engine._llm, engine._tokenizer = fake, tokenizer

    async def both() -> Any:
        return await asyncio.gather(
            engine.generate(request("p", UNKNOWN_FORMAT, 16, 0.0, 1.0)),
            engine.generate(request("p", SCHEMA, 16, 0.0, 1.0)),
            return_exceptions=True,
        )

    rejected, served = asyncio.run(both())
    assert isinstance(rejected, SchemaRejected) and "Unknown format" in str(rejected)
    assert served.text == '{"name": "a"}' and served.backend == "guidance"


def test_a_cancelled_request_is_aborted_in_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service cancels `generate` when its client goes away (a cancelled job): the engine aborts the
    request by the id it gave vLLM, so that the GPU stops generating it."""
    started, aborted = asyncio.Event(), []

    class FakeLLM:
        async def generate(self, prompt: Any, params: Any, request_id: str) -> Any:
            self.request_id = request_id
            yield delta("{", [1])
            started.set()
            await asyncio.sleep(3600)  # a long generation
            yield delta("}", [2], "stop")

        async def abort(self, request_id: str) -> None:
            aborted.append(request_id)

    params = SimpleNamespace(structured_outputs=SimpleNamespace(json=SCHEMA, _backend=None))
    monkeypatch.setattr("inference.engines.vllm.build_sampling_params", lambda request: params)
    tokenizer = SimpleNamespace(apply_chat_template=lambda *a, **k: "p", encode=lambda *a, **k: [1, 2])
    engine = VLLMEngine(Settings(vllm_model="m", structured_output_backend="guidance"))
    fake: Any = FakeLLM()
    engine._llm, engine._tokenizer = fake, tokenizer

    async def cancel_while_generating() -> None:
        task = asyncio.ensure_future(engine.generate(request("p", SCHEMA, 16, 0.0, 1.0)))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_generating())
    assert aborted == [fake.request_id]


# Against vLLM's classes


def test_sampling_params_carry_the_schema_as_vllms_json_constraint(vllm: ModuleType) -> None:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    from inference.engines.vllm import build_sampling_params

    params = build_sampling_params(request("p", SCHEMA, max_tokens=64, temperature=0.3, top_p=0.95))
    assert isinstance(params, SamplingParams)
    assert isinstance(params.structured_outputs, StructuredOutputsParams)
    assert params.structured_outputs.json == SCHEMA
    assert (params.max_tokens, params.temperature, params.top_p) == (64, 0.3, 0.95)
    assert params.output_kind == RequestOutputKind.DELTA
    assert params.structured_outputs._backend is None  # set by vLLM at submit


def test_engine_args_carry_the_settings(vllm: ModuleType) -> None:
    from vllm.config import AttentionConfig, StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    from inference.engines.vllm import engine_args

    settings = Settings(
        vllm_model="/tmp/hf",
        structured_output_backend="xgrammar",
        vllm_max_model_len=4096,
        vllm_gpu_memory_utilization=0.5,
        vllm_max_num_seqs=64,
    )
    args = engine_args(settings, attention_backend="FLASHINFER", tensor_parallel_size=2)
    assert isinstance(args, AsyncEngineArgs)
    assert isinstance(args.structured_outputs_config, StructuredOutputsConfig)
    assert args.structured_outputs_config.backend == "xgrammar"
    assert (args.model, args.max_model_len, args.max_num_seqs) == ("/tmp/hf", 4096, 64)
    assert (args.gpu_memory_utilization, args.tensor_parallel_size) == (0.5, 2)
    # The conversion create_engine_config applies to the name.
    assert AttentionConfig.validate_backend_before(args.attention_backend) == AttentionBackendEnum.FLASHINFER


def test_vllms_request_outputs_map_to_the_engine_result(vllm: ModuleType) -> None:
    from vllm.outputs import CompletionOutput, RequestOutput

    def output(text: str, tokens: list[int], finish: str | None) -> RequestOutput:
        completion = CompletionOutput(
            index=0, text=text, token_ids=tokens, cumulative_logprob=None, logprobs=None, finish_reason=finish
        )
        return RequestOutput("r", None, [1, 2, 3], None, [completion], finished=finish is not None)

    collected = collect(output('{"name"', [10, 11], None), output(': "a"}', [12, 13], "stop"))
    result = to_engine_result(collected, 30.0, "guidance")
    assert json.loads(result.text) == {"name": "a"}
    assert (result.prompt_tokens, result.completion_tokens, result.ttft_ms) == (3, 4, 10.0)


# On the GPU, with a real model


@pytest.fixture(scope="module")
def gpu_engine(vllm: ModuleType) -> Iterator[SimpleNamespace]:
    model = os.environ.get("IRQ_TEST_VLLM_MODEL")
    if not model:
        pytest.skip("set IRQ_TEST_VLLM_MODEL to a model folder to run the engine on the GPU")
    settings = Settings(
        vllm_model=model,
        structured_output_backend=os.environ.get("IRQ_STRUCTURED_OUTPUT_BACKEND", "guidance"),
        vllm_max_model_len=4096,
        vllm_gpu_memory_utilization=0.4,
        vllm_max_num_seqs=64,
    )
    loop = asyncio.new_event_loop()
    engine = VLLMEngine(settings)
    loop.run_until_complete(engine.load())
    yield SimpleNamespace(engine=engine, loop=loop)
    engine.shutdown()
    loop.run_until_complete(asyncio.sleep(0.1))  # vLLM's output task takes its cancellation before the close
    loop.close()


def test_the_engine_generates_schema_valid_json_on_the_gpu(gpu_engine: Any) -> None:
    from irq.ir_schema import ir_json_schema

    engine, loop = gpu_engine.engine, gpu_engine.loop
    schema = ir_json_schema()
    result = loop.run_until_complete(
        engine.generate(request("Write a function that reverses a string.", schema, 512, 0.3, 0.95))
    )
    assert engine.loaded and engine.gpu
    assert result.finish_reason in ("stop", "length") and result.completion_tokens > 0
    assert 0 < result.ttft_ms <= result.generation_time_ms
    assert result.backend in ("guidance", "xgrammar")
    if result.finish_reason == "stop":
        jsonschema.validate(json.loads(result.text), schema)


def test_a_refused_schema_leaves_the_engine_serving_on_the_gpu(gpu_engine: Any) -> None:
    engine, loop = gpu_engine.engine, gpu_engine.loop

    async def both() -> Any:
        return await asyncio.gather(
            engine.generate(request("A topic.", UNKNOWN_FORMAT, 64, 0.0, 1.0)),
            engine.generate(request("Name: Ada.", SCHEMA, 64, 0.0, 1.0)),
            return_exceptions=True,
        )

    rejected, served = loop.run_until_complete(both())
    assert isinstance(rejected, SchemaRejected), rejected
    assert not isinstance(served, BaseException), served
    assert served.finish_reason == "length" or json.loads(served.text)
    warm = loop.run_until_complete(engine.generate(request("Name: Bo.", WARMUP_SCHEMA, 32, 0.0, 1.0)))
    assert warm.completion_tokens > 0


# The model name the service reports, which every worker checks against the job's


def test_the_reported_model_of_a_model_folder_is_the_deployments_model_unless_a_registry_names_models(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "smollm2"
    folder.mkdir()
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    registry = tmp_path / "endpoints.toml"
    # No registry: the one endpoint's model (IRQ_DEFAULT_MODEL), which every job asks for; a hub name stays
    # itself unless IRQ_DEFAULT_MODEL was given.
    assert Settings(vllm_model=str(folder)).reported_model(str(folder)) == Settings().default_model
    assert Settings().reported_model(hub) == hub
    assert Settings(default_model="smol").reported_model(hub) == "smol"
    assert Settings(served_model="named").reported_model(str(folder)) == "named"
    # A registry names each endpoint's model: a folder is reported as given, so an entry naming another
    # model still fails its jobs model_mismatch until IRQ_SERVED_MODEL names the entry's model.
    assert Settings(endpoints_file=registry).reported_model(str(folder)) == str(folder)
    assert Settings(endpoints_file=registry, default_model="smol").reported_model(hub) == hub
    assert Settings(endpoints_file=registry, served_model=hub).reported_model(str(folder)) == hub


def test_a_vllm_service_on_a_model_folder_without_a_registry_reports_the_model_its_jobs_ask_for(
    tmp_path: Path,
) -> None:
    """`irq inference serve` with IRQ_ENGINE=vllm and IRQ_VLLM_MODEL a folder, nothing else set: its answers
    carry the model of the deployment's one endpoint, so its jobs do not fail model_mismatch. (The service
    answers /health before its engine loads, so this runs without vLLM.)"""
    folder = tmp_path / "model"
    folder.mkdir()
    port = free_port()
    env = {"IRQ_ENGINE": "vllm", "IRQ_VLLM_MODEL": str(folder), "IRQ_INFERENCE_PORT": str(port)}
    env |= {"IRQ_SERVED_MODEL": "", "IRQ_ENDPOINTS_FILE": ""}
    service = Service("inference", ["inference", "serve"], env, tmp_path)
    try:
        service.wait_ready(f"http://127.0.0.1:{port}/health", 120)
        health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()
    finally:
        service.stop()
    # What a worker of the same deployment (no registry, no model settings) expects of every job's answer.
    expected = implicit_registry(Settings(endpoints_file=None, served_model="")).model
    assert (health["status"], health["model"]) == ("cold", expected)
