"""Engines behind the inference service: `local` (transformers + llguidance on CPU), `vllm` (GPU), and
`simulated` (a fixed document after a fixed delay, for benchmarks and fault tests)."""

from __future__ import annotations

from inference.engines.base import Engine, EngineResult, GrammarFailure, PromptTooLong, SchemaRejected
from irq.settings import Settings


def create_engine(settings: Settings) -> Engine:
    """Build the engine `settings.engine` names; imports are deferred so `/health` never loads a model."""
    if settings.engine == "local":
        from inference.engines.local import LocalEngine

        return LocalEngine(settings)
    if settings.engine == "vllm":
        from inference.engines.vllm import VLLMEngine

        return VLLMEngine(settings)
    if settings.engine == "simulated":
        from inference.engines.simulated import SimulatedEngine

        return SimulatedEngine(settings)
    raise ValueError(f"unknown engine {settings.engine!r} (known: local, vllm, simulated)")


__all__ = ["Engine", "EngineResult", "GrammarFailure", "PromptTooLong", "SchemaRejected", "create_engine"]
