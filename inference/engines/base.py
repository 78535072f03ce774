"""The interface every inference engine implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from inference.protocol import GenerateRequest


class SchemaRejected(ValueError):
    """The engine's structured-output backend cannot compile this schema (a permanent error)."""


class GrammarFailure(RuntimeError):
    """The structured-output backend refused, mid-generation, a token its own mask had let through
    (llguidance's `Parser Error: token … doesn't satisfy the grammar`, which vLLM logs as `LLMatcher
    error` and ends the request with `finish_reason="error"`). The same schema and prompt meet it again:
    a permanent error, not a transient one."""


class PromptTooLong(ValueError):
    """The prompt as the engine builds it (instructions, the schema's outline, the user's text) and
    `max_tokens` do not fit the model's context (a permanent error)."""

    def __init__(self, prompt_tokens: int, max_tokens: int, context: int) -> None:
        super().__init__(
            f"the prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: "
            f"{prompt_tokens + max_tokens} tokens, over the model's context length of {context}"
        )


@dataclass
class EngineResult:
    text: str  # the generated JSON text
    finish_reason: str  # "stop" when the grammar completed, "length" when max_tokens cut it
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    generation_time_ms: float  # from the engine's start of work on it (engine_wait_ms left out)
    backend: str
    engine_wait_ms: float = 0.0  # accepted by the engine → first scheduled (its lock, vLLM's waiting queue)


class Engine(abc.ABC):
    """Loads a model once and generates JSON constrained to a schema; safe to call from many coroutines."""

    model_name: str
    gpu: str
    backend: str

    @property
    @abc.abstractmethod
    def loaded(self) -> bool: ...

    @property
    def max_model_len(self) -> int | None:
        """The model's context length in tokens (prompt and completion), when known."""
        return None

    @abc.abstractmethod
    async def load(self) -> None:
        """Load the model (idempotent); may take minutes on a cold start."""

    def shutdown(self) -> None:  # noqa: B027 (most engines hold nothing a process exit does not free)
        """Free what the engine holds outside this process (vLLM's engine core and its GPU memory)."""

    @abc.abstractmethod
    async def generate(self, request: GenerateRequest) -> EngineResult:
        """Generate a document matching the request's schema; `SchemaRejected` for one the backend refuses."""
