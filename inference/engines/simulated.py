"""The simulated engine: a fixed, schema-valid IR document after a fixed delay, with a bounded number of
requests generated at once (the rest wait, as they would in vLLM's queue).

It stands in for a GPU where one cannot run: queue-overhead and saturation benchmarks, and fault tests.
It answers the default IR schema, and any schema its IR document is valid under (the IR schema bounded to
a job's budget, say), with that document; the plain-text schema of OpenAI chat requests (`irq/replies.py`)
with a fixed sentence; any other schema is refused as unsupported.
"""

from __future__ import annotations

import asyncio
import json
import time
from functools import lru_cache
from typing import Any

import jsonschema

from inference.engines.base import Engine, EngineResult, SchemaRejected
from inference.protocol import GenerateRequest
from irq.ir_schema import IRDocument, ir_json_schema
from irq.replies import TEXT_SCHEMA
from irq.schema_check.options import X_GUIDANCE
from irq.settings import Settings

DOCUMENT = IRDocument.model_validate(
    {
        "intent": {"summary": "Return the largest number of a non-empty list."},
        "signature": {
            "name": "max_of",
            "parameters": [{"name": "values", "type": "list[float]", "description": "The numbers."}],
            "returns": {"type": "float", "description": "The largest of them."},
        },
        "effects": [],
        "preconditions": ["values is not empty"],
        "postconditions": ["the result is an element of values"],
        "examples": [{"input": "max_of([3, 1, 2])", "output": "3"}],
    }
)
TEXT = "The simulated engine's reply: the largest number of a non-empty list is its maximum."


@lru_cache(maxsize=256)
def _answers(schema_json: str) -> bool:
    """Whether the simulated document is an answer to the schema (its `x-guidance` options aside)."""
    schema: dict[str, Any] = {k: v for k, v in json.loads(schema_json).items() if k != X_GUIDANCE}
    if schema == ir_json_schema():
        return True
    try:
        return bool(jsonschema.validators.validator_for(schema)(schema).is_valid(DOCUMENT.model_dump()))
    except jsonschema.exceptions.SchemaError:
        return False


class SimulatedEngine(Engine):
    """Stands in for `IRQ_DEFAULT_MODEL` served with `IRQ_STRUCTURED_OUTPUT_BACKEND` (or the model
    `IRQ_SERVED_MODEL` names)."""

    gpu = "none"

    def __init__(self, settings: Settings) -> None:
        self.model_name = settings.served_model or settings.default_model
        self.backend = settings.structured_output_backend
        self.latency_s = settings.simulated_latency_s
        self._slots = asyncio.Semaphore(settings.simulated_slots)
        self._answers = {"ir": DOCUMENT.model_dump_json(), "text": json.dumps(TEXT)}

    @property
    def loaded(self) -> bool:
        return True

    async def load(self) -> None:
        return None

    async def generate(self, request: GenerateRequest) -> EngineResult:
        schema = {k: v for k, v in request.schema_.items() if k != X_GUIDANCE}
        if schema == TEXT_SCHEMA:
            text = self._answers["text"]
        elif _answers(json.dumps(schema, sort_keys=True)):
            text = self._answers["ir"]
        else:
            raise SchemaRejected(
                "the simulated engine answers only the IR schema (or one its document fits) and plain text"
            )
        accepted = time.perf_counter()
        async with self._slots:
            started = time.perf_counter()
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
        return EngineResult(
            text=text,
            finish_reason="stop",
            prompt_tokens=len(request.prompt) // 4,
            completion_tokens=len(text) // 4,
            ttft_ms=min(elapsed_ms, 1.0),
            generation_time_ms=elapsed_ms,
            backend=self.backend,
            engine_wait_ms=(started - accepted) * 1000.0,
        )


__all__ = ["DOCUMENT", "TEXT", "SimulatedEngine"]
