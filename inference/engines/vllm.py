"""The vLLM engine: one `AsyncLLM` on a GPU, its output held to the schema by vLLM's structured outputs.

vLLM batches the requests of every coroutine that calls `generate` (continuous batching), so one engine
serves the whole service. vLLM is imported only when the engine loads: the module imports without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.engines.base import Engine, EngineResult, GrammarFailure, PromptTooLong, SchemaRejected
from inference.protocol import GenerateRequest
from inference.repetition import REPETITION, LoopWatch
from irq import prompting
from irq.settings import Settings, get_settings

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.outputs import RequestOutput
    from vllm.sampling_params import SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)

FINISHED = ("stop", "length", REPETITION)
START_LOCK = Path(tempfile.gettempdir()) / "irq-vllm-engine-start.lock"
WARMUP_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}}


@contextlib.contextmanager
def one_start_at_a_time(path: Path = START_LOCK) -> Iterator[None]:
    """Held while an engine starts, so that the engines of one host (replicas: inference/replicas.py) start
    one after the other: vLLM sizes its KV cache from the GPU memory it measures while it starts, which
    another engine's start would disturb. A POSIX record lock (`lockf`), not `flock`: vLLM forks its engine
    core while this is held, and a forked child would keep a `flock` lock for its whole life."""
    with path.open("a") as lock:
        fcntl.lockf(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(lock, fcntl.LOCK_UN)


class EngineRequestFailed(RuntimeError):
    """vLLM ended an accepted request without finishing it (`abort`, `error`): a fault, worth a retry."""


def structured_outputs_config(backend: str) -> dict[str, Any]:
    """vLLM's structured-output settings for `backend`: compact JSON wherever vLLM allows it.

    As in the local engine (irq.schema_check.GRAMMAR_OPTIONS): free whitespace lets a small model spend its
    tokens on newlines and indentation until max_tokens. Only for guidance: vLLM refuses the option with
    `auto`, and with xgrammar 0.2.1 every request failed on the H100 ("grammar rejected tokens [0]").
    See docs/gpu.md.
    """
    return {"backend": backend, "disable_any_whitespace": backend == "guidance"}


def engine_args(
    settings: Settings, *, attention_backend: str | None = None, tensor_parallel_size: int = 1
) -> AsyncEngineArgs:
    """The engine arguments irq's settings describe; `attention_backend` e.g. "FLASHINFER" (None: auto)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=settings.vllm_model,
        # An instance, not a dict: unlike `LLM`, `EngineArgs` does not convert this field.
        structured_outputs_config=StructuredOutputsConfig(
            **structured_outputs_config(settings.structured_output_backend)
        ),
        max_model_len=settings.vllm_max_model_len,
        gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        max_num_seqs=settings.vllm_max_num_seqs,
        # 0: vLLM's default (2048 tokens a step for AsyncLLM, 8192 in vLLM's OpenAI server).
        max_num_batched_tokens=settings.vllm_max_num_batched_tokens or None,
        enable_chunked_prefill=settings.vllm_enable_chunked_prefill,
        tensor_parallel_size=tensor_parallel_size,
        # vLLM 0.26 has no VLLM_ATTENTION_BACKEND variable: the backend is an engine argument.
        attention_backend=attention_backend,  # a name: create_engine_config converts it to the enum
    )


def build_sampling_params(request: GenerateRequest) -> SamplingParams:
    """One request's sampling parameters: the schema as vLLM's JSON constraint, outputs streamed as deltas."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    return SamplingParams(
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        structured_outputs=StructuredOutputsParams(json=request.schema_),
        # Deltas, so that the first one marks the first token and no step copies the whole output.
        output_kind=RequestOutputKind.DELTA,
    )


def chosen_backend(params: SamplingParams, configured: str) -> str:
    """The backend vLLM resolved for this request at submit (`auto`: per request), else `configured`."""
    structured = params.structured_outputs
    resolved = getattr(structured, "_backend", None) if structured is not None else None
    return str(resolved) if resolved else configured


def prompt_token_ids(tokenizer: Any, prompt: str, schema: dict[str, Any]) -> list[int]:
    """The chat-templated prompt as token ids; the template already holds the special tokens it needs."""
    text = tokenizer.apply_chat_template(
        prompting.messages(prompt, schema), tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass
class Collected:
    """A request's delta outputs gathered into one, with the times (ms after `accepted`, a `time.monotonic()`
    reading) of its first scheduling by vLLM and of its first token."""

    accepted: float = 0.0
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    finish_reason: str | None = None
    ttft_ms: float | None = None
    scheduled_ms: float | None = None
    started: bool = False

    def add(self, output: RequestOutput, elapsed_ms: float) -> None:
        self.started = True
        # vLLM's per-request stats: `scheduled_ts` is the engine core's time.monotonic() at its first
        # scheduling (one clock for every process of the host); 0 until then, absent with stats off.
        scheduled_ts = getattr(getattr(output, "metrics", None), "scheduled_ts", 0.0) or 0.0
        if self.scheduled_ms is None and scheduled_ts > 0:
            self.scheduled_ms = max(0.0, (scheduled_ts - self.accepted) * 1000)
        completion = output.outputs[0]
        if completion.token_ids and self.ttft_ms is None:
            self.ttft_ms = elapsed_ms
        self.text += completion.text
        self.token_ids.extend(completion.token_ids)
        if output.prompt_token_ids is not None:
            self.prompt_tokens = len(output.prompt_token_ids)
        if completion.finish_reason is not None:
            self.finish_reason = str(completion.finish_reason)


def to_engine_result(collected: Collected, elapsed_ms: float, backend: str) -> EngineResult:
    """The engine's answer for a finished request, `elapsed_ms` after it was accepted; its time in vLLM's
    waiting queue is the engine wait, and its time to first token and generation time count from its first
    scheduling. `EngineRequestFailed` when vLLM did not finish it."""
    if collected.finish_reason == "error" and not collected.token_ids:
        # An accepted request ends in "error" before its first token when the engine cannot compile its
        # grammar (vLLM's scheduler fails only that request); the same schema would fail again.
        raise SchemaRejected(f"vLLM's {backend} backend could not compile a grammar for this schema")
    if collected.finish_reason == "stop" and not collected.text.strip():
        # No JSON document is empty: the guidance backend logs a matcher error (a grammar past the parser's
        # limits) and lets only end-of-sequence through, so the request stops at once.
        raise SchemaRejected(
            f"vLLM's {backend} backend stopped before any output: the schema's grammar is past its limits"
        )
    if collected.finish_reason == "error":
        # After tokens, vLLM ends a request in "error" when its grammar refused a token the grammar's own
        # mask let through ("grammar rejected tokens … Terminating request", logged with llguidance's
        # "LLMatcher error: Parser Error: …"): the same schema and prompt meet it again.
        raise GrammarFailure(
            f"vLLM's {backend} backend refused a generated token after {len(collected.token_ids)} tokens "
            "(its log says why: LLMatcher error)"
        )
    if collected.finish_reason not in FINISHED:
        raise EngineRequestFailed(
            f"vLLM ended the request with finish_reason={collected.finish_reason!r} "
            f"after {len(collected.token_ids)} tokens"
        )
    wait_ms = min(collected.scheduled_ms or 0.0, elapsed_ms)
    first_token_ms = collected.ttft_ms if collected.ttft_ms is not None else elapsed_ms
    return EngineResult(
        text=collected.text,
        finish_reason=collected.finish_reason,
        prompt_tokens=collected.prompt_tokens,
        completion_tokens=len(collected.token_ids),
        ttft_ms=max(0.0, first_token_ms - wait_ms),
        generation_time_ms=elapsed_ms - wait_ms,
        backend=backend,
        engine_wait_ms=wait_ms,
    )


class VLLMEngine(Engine):
    """`settings.vllm_model` under vLLM's AsyncLLM, loaded once, shared by every request."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        attention_backend: str | None = None,
        tensor_parallel_size: int = 1,
    ) -> None:
        self._settings = settings or get_settings()
        self._attention_backend = attention_backend or self._settings.vllm_attention_backend or None
        self._tensor_parallel_size = tensor_parallel_size
        self._llm: AsyncLLM | None = None
        self._tokenizer: Any = None
        self._load_lock = asyncio.Lock()
        self._engine_backend = ""  # the backend that compiles every grammar, known after the first request
        self.model_name = self._settings.reported_model(self._settings.vllm_model)
        self.backend = self._settings.structured_output_backend
        self.gpu = ""  # known once loaded: reading it earlier would start CUDA in /health

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    @property
    def max_model_len(self) -> int | None:
        """The context length in tokens: vLLM's once loaded, else `IRQ_VLLM_MAX_MODEL_LEN`."""
        config = getattr(self._llm, "model_config", None)
        length = getattr(config, "max_model_len", None) or self._settings.vllm_max_model_len
        return int(length) if length else None

    async def load(self) -> None:
        async with self._load_lock:
            if self._llm is None:
                # In a thread: the engine starts in minutes, and /health must answer meanwhile. AsyncLLM,
                # built with no running loop there, binds to this (the serving) loop on its first request.
                llm, tokenizer = await asyncio.to_thread(self._start)
                try:
                    self._engine_backend = await self._first_request(llm, tokenizer)
                except BaseException:
                    llm.shutdown()  # a half-started engine would hold the GPU until the process ends
                    raise
                self._llm, self._tokenizer = llm, tokenizer

    def _start(self) -> tuple[AsyncLLM, Any]:
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        args = engine_args(
            self._settings,
            attention_backend=self._attention_backend,
            tensor_parallel_size=self._tensor_parallel_size,
        )
        with one_start_at_a_time():
            llm = AsyncLLM.from_engine_args(args)
        # NVML, not torch.cuda: this process needs no CUDA context of its own (the model runs in vLLM's).
        self.gpu = str(current_platform.get_device_name())
        logger.info("started %s on %s in %.1f s", self.model_name, self.gpu, time.perf_counter() - started)
        return llm, llm.get_tokenizer()

    async def _first_request(self, llm: AsyncLLM, tokenizer: Any) -> str:
        """Send the engine's first structured request, with a schema any backend takes; return its backend.

        vLLM 0.26 builds one structured-output backend per engine, from the first structured request it
        sees (StructuredOutputManager.grammar_init), and compiles every later grammar with it, whatever
        `auto` resolves for that later request. Sending the first one here makes that backend known
        (`auto` picks xgrammar for this schema), and warms the engine up before real requests arrive.
        """
        warmup = GenerateRequest(
            prompt="Warm up.", schema=WARMUP_SCHEMA, max_tokens=8, temperature=0.0, top_p=1.0
        )
        params = build_sampling_params(warmup)
        ids = prompt_token_ids(tokenizer, warmup.prompt, warmup.schema_)
        async for _ in llm.generate(
            {"prompt_token_ids": ids}, params, request_id=f"warmup-{uuid.uuid4().hex}"
        ):
            pass
        return chosen_backend(params, self.backend)

    def shutdown(self) -> None:
        """Stop vLLM's engine process and free the GPU."""
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    async def generate(self, request: GenerateRequest) -> EngineResult:
        await self.load()
        assert self._llm is not None
        accepted = time.monotonic()
        ids = prompt_token_ids(self._tokenizer, request.prompt, request.schema_)
        context = self.max_model_len
        if context is not None and len(ids) + request.max_tokens > context:
            raise PromptTooLong(len(ids), request.max_tokens, context)
        params = build_sampling_params(request)
        collected = Collected(accepted=accepted)
        request_id = uuid.uuid4().hex
        stream = self._llm.generate({"prompt_token_ids": ids}, params, request_id=request_id)
        watch = LoopWatch() if request.stop_loops else None
        try:
            async for output in stream:
                collected.add(output, (time.monotonic() - accepted) * 1000)
                if collected.finish_reason is None and watch is not None and watch.stuck(collected.token_ids):
                    # Caught in a loop: the rest of its budget would buy nothing (inference/repetition.py).
                    await self._abort(request_id)
                    collected.finish_reason = REPETITION
                    break
        except asyncio.CancelledError:
            await self._abort(request_id)
            raise
        except ValueError as exc:
            if collected.started:
                raise
            # vLLM validates the request (schema included) at submit and raises ValueError for this request
            # alone; the engine and the other requests carry on.
            raise SchemaRejected(str(exc)) from exc
        elapsed_ms = (time.monotonic() - accepted) * 1000
        return to_engine_result(collected, elapsed_ms, self._backend_used(params))

    async def _abort(self, request_id: str) -> None:
        """Stop generating a request nobody waits for any more (its client went away), so that its GPU time
        goes to the others. vLLM's own generator aborts it too when it sees the cancellation; this makes
        sure of it wherever the cancellation lands (an abort of a request vLLM no longer has does nothing)."""
        if self._llm is None:
            return
        try:
            await self._llm.abort(request_id)
        except Exception as exc:  # an engine that died meanwhile has nothing left to abort
            logger.warning("could not abort request %s: %s", request_id, exc)

    def _backend_used(self, params: SamplingParams) -> str:
        resolved = chosen_backend(params, self.backend)
        if self._engine_backend and resolved != self._engine_backend:
            # Only with `auto`: vLLM picked another backend for this schema, but the engine's compiled it.
            logger.info(
                "auto resolved %s for a request; %s compiled its grammar", resolved, self._engine_backend
            )
        return self._engine_backend or resolved
