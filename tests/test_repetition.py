"""A generation caught in a loop is stopped early and answered as a cut document, so that the retry policy
runs it again under the bounded schema instead of the engine spending the rest of its budget on the loop."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from inference.engines.base import Engine, EngineResult
from inference.protocol import GenerateRequest
from inference.repetition import MAX_PERIOD, MIN_REPEATS, MIN_SPAN, REPETITION, LoopWatch, looping
from inference.service import create_app


def test_a_unit_repeated_over_the_span_is_a_loop() -> None:
    assert looping([9] * MIN_SPAN)
    assert looping([1, 2, 3] + list(range(10)) * MIN_REPEATS)
    assert looping([7] + list(range(MAX_PERIOD)) * MIN_REPEATS)


def test_varied_output_and_short_runs_are_not_loops() -> None:
    assert not looping([9] * (MIN_SPAN - 1))
    assert not looping(list(range(10)) * (MIN_REPEATS - 1))
    assert not looping(list(range(MAX_PERIOD + 1)) * MIN_REPEATS)  # a unit too long to count
    assert not looping(list(range(500)))


def test_the_watch_sees_a_loop_as_it_forms() -> None:
    watch, tokens = LoopWatch(), list(range(100))
    stuck_at = None
    for _ in range(200):
        tokens.append(42)
        if watch.stuck(tokens):
            stuck_at = len(tokens)
            break
    assert stuck_at is not None
    assert stuck_at - 100 <= MIN_SPAN + 16  # found within one check of the loop's minimum span


class LoopingEngine(Engine):
    """An engine whose generation went round in a loop until it was stopped."""

    model_name, gpu, backend = "loop", "none", "guidance"

    @property
    def loaded(self) -> bool:
        return True

    async def load(self) -> None:
        return None

    async def generate(self, request: GenerateRequest) -> EngineResult:
        return EngineResult('{"name": "' + "la" * 40, REPETITION, 10, 80, 1.0, 5.0, "guidance")


def test_the_service_answers_a_stopped_loop_as_a_cut_document() -> None:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(engine=LoopingEngine()))
        async with httpx.AsyncClient(transport=transport, base_url="http://inference") as http:
            body: dict[str, Any] = {"prompt": "a name", "schema": {"type": "object"}, "max_tokens": 512}
            return await http.post("/generate", json=body)

    answer = asyncio.run(post())
    assert answer.status_code == 422
    error = answer.json()
    # output_truncated: the retry policy's cue for a bounded second attempt.
    assert error["code"] == "output_truncated"
    assert "repeated itself" in error["message"]
    assert error["output"]["finish_reason"] == REPETITION
