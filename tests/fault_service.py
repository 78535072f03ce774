"""A fault-injecting inference service for tests: irq's own service app over the simulated engine, with
faults scripted in the prompt and every call counted.

A prompt containing `[faults: 503, 429, hang]` is answered 503 on its first call, 429 on its second, never
on its third (the request hangs), and with the simulated engine's document from then on. Actions: an HTTP
status, `hang`, `sleep=SECONDS` (then the document), a reply the engine would not make (`REPLIES`: e.g.
`deep`, a JSON text nested past any parser's depth), `truncated`: a generation cut at max_tokens, or
`nul`: one whose text holds a NUL character. A prompt containing `[reply: NAME]` is answered on every call
(once its faults are spent) with the document `DOCUMENTS[NAME]`, whatever its schema: the documents a model
would make under the schemas of clients' requests, which the simulated engine does not answer.
`GET /calls` returns how often each prompt came, `GET /schemas` the schema each call was given.

Run: `python -m tests.fault_service PORT [LATENCY_S]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from inference.engines import create_engine
from inference.service import create_app
from irq.settings import Settings

FAULTS = re.compile(r"\[faults:([^\]]*)\]")
REPLY = re.compile(r"\[reply:\s*([\w-]+)\s*\]")
# Answers a broken or hostile endpoint could send, as the `text` of a 200 reply.
REPLIES: dict[str, object] = {
    "deep": "[" * 100_000 + "]" * 100_000,  # JSON text nested deeper than a recursive decoder goes
    "five": 5,
    "object": {"a": "x"},
    "empty": {},  # a hollow document: valid for an open object, but no content
    "two_branches": {"number": "4111", "iban": "DE89"},  # matches both branches of tests' card-or-bank oneOf
    "one_branch": {"number": "4111"},
}
CLAMP: dict[str, Any] = {"function": "clamp", "low": 0, "high": 10}
# Documents for the schemas clients send: a function's arguments, or plain text (a JSON string).
DOCUMENTS: dict[str, object] = {
    "clamp": CLAMP,  # the arguments of a `Clamp(function, low, high)` tool
    "clamp-markdown": "Here it is:\n```json\n" + json.dumps(CLAMP) + "\n```",  # JSON in a text answer
    "hello": "Hello! I am irq's simulated model.",
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
    stop_loops: defaultdict[str, list[object]] = defaultdict(list)  # and whether it was to stop a loop

    @app.middleware("http")
    async def inject(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path != "/generate":
            return await call_next(request)
        body = await request.json()
        prompt = str(body.get("prompt", ""))
        calls[prompt] += 1
        schemas[prompt].append(body.get("schema"))
        stop_loops[prompt].append(body.get("stop_loops"))
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
        elif not action and (reply := REPLY.search(prompt)):
            return JSONResponse(
                {
                    "text": DOCUMENTS[reply.group(1)],
                    "tokens_used": 7,
                    "generation_time_ms": 1.0,
                    "finish_reason": "stop",
                    "prompt_tokens": len(prompt) // 4,
                    "completion_tokens": 7,
                    "model": engine.model_name,
                    "backend": engine.backend,
                }
            )
        return await call_next(request)

    @app.get("/calls")
    async def get_calls() -> dict[str, int]:
        return dict(calls)

    @app.get("/schemas")
    async def get_schemas() -> dict[str, list[object]]:
        return dict(schemas)

    @app.get("/stop-loops")
    async def get_stop_loops() -> dict[str, list[object]]:
        return dict(stop_loops)

    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    uvicorn.run(build(latency), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
