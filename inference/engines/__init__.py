"""Engines behind the inference service: `local` (transformers + llguidance on CPU), `vllm` (GPU), and
`simulated` (a fixed document after a fixed delay, for benchmarks and fault tests)."""

from __future__ import annotations

from inference.engines.base import Engine, EngineResult, SchemaRejected
from irq.settings import Settings


def create_engine(settings: Settings) -> Engine:
    """Build the engine `settings.engine` names, reporting `IRQ_SERVED_MODEL` as its model when set;
    imports are deferred so `/health` never loads a model."""
    engine: Engine
    if settings.engine == "local":
        from inference.engines.local import LocalEngine

        engine = LocalEngine(settings)
    elif settings.engine == "vllm":
        from inference.engines.vllm import VLLMEngine

        engine = VLLMEngine(settings)
    elif settings.engine == "simulated":
        from inference.engines.simulated import SimulatedEngine

        engine = SimulatedEngine(settings)
    else:
        raise ValueError(f"unknown engine {settings.engine!r} (known: local, vllm, simulated)")
    if settings.served_model:
        engine.model_name = settings.served_model
    return engine


__all__ = ["Engine", "EngineResult", "SchemaRejected", "create_engine"]
