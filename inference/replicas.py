"""The engines of one GPU host as replicas: `irq inference serve` with `IRQ_INFERENCE_REPLICAS=N` runs N
services of the same model on consecutive ports, each with 1/N of the GPU memory the settings give vLLM.

One vLLM engine core is a single process whose scheduler and grammar masks are CPU work at every step; with
a small model it keeps the GPU mostly idle, and N of them on one GPU deliver more (docs/performance.md). The
registry sees them as N endpoints of one queue (`irq/endpoints.py`, `replicas`), one worker process each.
"""

from __future__ import annotations

import sys

from irq.settings import Settings
from irq.supervision import supervise


def memory_share(settings: Settings) -> float:
    """The fraction of the GPU's memory each replica's engine may take (vLLM's per-instance limit)."""
    return settings.vllm_gpu_memory_utilization / settings.inference_replicas


def replica_env(settings: Settings, index: int) -> dict[str, str]:
    """The settings of the index-th replica's own `irq inference serve`."""
    return {
        "IRQ_INFERENCE_REPLICAS": "1",
        "IRQ_INFERENCE_PORT": str(settings.inference_port + index),
        "IRQ_ENGINE": settings.engine,
        "IRQ_VLLM_GPU_MEMORY_UTILIZATION": f"{memory_share(settings):.4f}",
    }


def serve_replicas(settings: Settings) -> int:
    """Run the replicas until stopped (or until one exits: then all stop, with its status)."""
    argv = [sys.executable, "-m", "cli", "inference", "serve"]
    commands = [(argv, replica_env(settings, i)) for i in range(settings.inference_replicas)]
    return supervise(commands, "irq inference serve")
