"""A fault-injecting inference service for tests: irq's own service app over the simulated engine, with
faults scripted in the prompt and every call counted.

A prompt containing `[faults: 503, 429, hang]` is answered 503 on its first call, 429 on its second, never
on its third (the request hangs), and with the simulated engine's document from then on. Actions: an HTTP
status, `hang`, `sleep=SECONDS` (then the document), a reply the engine would not make (`REPLIES`: e.g.
`deep`, a JSON text nested past any parser's depth), `truncated`: a generation cut at max_tokens, or
`nul`: one whose text holds a NUL character. `GET /calls` returns how often each prompt came,
`GET /schemas` the schema each call was given.

Run: `python -m tests.fault_service PORT [LATENCY_S]`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from inference.engines import create_engine
from inference.service import create_app
from irq.settings import Settings

FAULTS = re.compile(r"\[faults:([^\]]*)\]")
# Answers a broken or hostile endpoint could send, as the `text` of a 200 reply.
REPLIES: dict[str, object] = {
    "deep": "[" * 100_000 + "]" * 100_000,  # JSON text nested deeper than a recursive decoder goes
    "five": 5,
    "object": {"a": "x"},
    "empty": {},  # a hollow document: valid for an open object, but no content
    "two_branches": {"number": "4111", "iban": "DE89"},  # matches both branches of tests' card-or-bank oneOf
    "one_branch": {"number": "4111"},
}


def build(latency_s: float) -> FastAPI:
    # The model and backend it reports: IRQ_SERVED_MODEL (else IRQ_DEFAULT_MODEL) and
    # IRQ_STRUCTURED_OUTPUT_BACKEND of its environment; requests at once: IRQ_SIMULATED_SLOTS, else 10 000.
    slots = int(os.environ.get("IRQ_SIMULATED_SLOTS", "10000"))
    settings = Settings(simulated_latency_s=latency_s, simulated_slots=slots, engine="simulated")
    engine = create_engine(settings)
    app = create_app(engine, settings)
    calls: Counter[str] = Counter()
    schemas: defaultdict[str, list[object]] = defaultdict(list)  # what each call of a prompt was given

    @app.middleware("http")
    async def inject(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path != "/generate":
            return await call_next(request)
        body = await request.json()
        prompt = str(body.get("prompt", ""))
        calls[prompt] += 1
        schemas[prompt].append(body.get("schema"))
        found = FAULTS.search(prompt)
        script = [a.strip() for a in found.group(1).split(",") if a.strip()] if found else []
        action = script[calls[prompt] - 1] if calls[prompt] <= len(script) else ""
        if action == "hang":
            await asyncio.sleep(3600)
        elif action.startswith("sleep="):
            await asyncio.sleep(float(action.removeprefix("sleep=")))
        elif action == "truncated":  # a generation cut at max_tokens, as the service reports it
            output = {
                "text": '{"a": "xxxxxxxx',
                "finish_reason": "length",
                "prompt_tokens": 9,
                "completion_tokens": 5,
            }
            return JSONResponse(
                {"code": "output_truncated", "message": "cut", "output": output}, status_code=422
            )
        elif action == "nul":  # PostgreSQL's text columns refuse the NUL
            output = {"text": '{"a": "\x00', "finish_reason": "length", "completion_tokens": 4}
            return JSONResponse(
                {"code": "output_truncated", "message": "cut", "output": output}, status_code=422
            )
        elif action in REPLIES:
            return JSONResponse(
                {
                    "text": REPLIES[action],
                    "tokens_used": 3,
                    "generation_time_ms": 1.0,
                    "finish_reason": "stop",
                    "model": engine.model_name,
                    "backend": engine.backend,
                }
            )
        elif action.isdigit():
            return JSONResponse(
                {"code": f"injected_{action}", "message": f"injected HTTP {action}"}, status_code=int(action)
            )
        return await call_next(request)

    @app.get("/calls")
    async def get_calls() -> dict[str, int]:
        return dict(calls)

    @app.get("/schemas")
    async def get_schemas() -> dict[str, list[object]]:
        return dict(schemas)

    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    uvicorn.run(build(latency), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
