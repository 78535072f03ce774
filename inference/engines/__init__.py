"""Engines behind the inference service: `local` (transformers + llguidance on CPU)."""

from __future__ import annotations

from inference.engines.base import Engine, EngineResult, SchemaRejected


def create_engine(name: str) -> Engine:
    """Build the engine a deployment names; imports are deferred so `/health` never loads a model."""
    if name == "local":
        from inference.engines.local import LocalEngine

        return LocalEngine()
    raise ValueError(f"unknown engine {name!r} (known: local)")


__all__ = ["Engine", "EngineResult", "SchemaRejected", "create_engine"]
