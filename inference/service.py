"""The inference service: `/health`, `/warmup` and `/generate` over one engine, as a FastAPI app.

The model is never loaded at startup: a cold start happens on `/warmup` or on the first `/generate`,
so `/health` answers at once and says whether the model is loaded yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from inference.engines import (
    Engine,
    EngineResult,
    GrammarFailure,
    PromptTooLong,
    SchemaRejected,
    create_engine,
)
from inference.errors import (
    MAX_OUTPUT_CHARS,
    PartialOutput,
    code_for_message,
)
from inference.protocol import ErrorBody, GenerateRequest, GenerateResponse, HealthResponse
from inference.repetition import REPETITION
from irq.error_codes import ErrorCode
from irq.settings import Settings, get_settings

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ServiceError(Exception):
    """A request the service answers with an error status and an `ErrorBody`."""

    def __init__(
        self, status_code: int, code: str, message: str, output: PartialOutput | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = ErrorBody(code=code, message=message, output=output)


def _error_response(status_code: int, body: ErrorBody) -> JSONResponse:
    return JSONResponse(status_code=status_code, content=body.model_dump())


async def _engine_call(call: Awaitable[T]) -> T:
    """Await an engine call, turning its failures into the service's typed errors."""
    try:
        return await call
    except PromptTooLong as exc:
        raise ServiceError(422, ErrorCode.prompt_too_long, str(exc)) from exc
    except GrammarFailure as exc:
        raise ServiceError(422, ErrorCode.grammar_error, str(exc)) from exc
    except SchemaRejected as exc:
        # An engine's own words may say it was no schema problem (vLLM's prompt-length check at submit).
        raise ServiceError(422, code_for_message(str(exc)) or ErrorCode.schema_unsupported, str(exc)) from exc
    except Exception as exc:
        code = code_for_message(str(exc))
        if code is not None:
            raise ServiceError(422, code, f"{type(exc).__name__}: {exc}") from exc
        logger.exception("engine failed")
        raise ServiceError(500, ErrorCode.engine_error, f"{type(exc).__name__}: {exc}") from exc


def _parse_output(result: EngineResult) -> object:
    try:
        # strict=False: a raw control character inside a string is read as the character it is. The
        # grammar never lets one through (llguidance's JSON strings exclude U+0000-U+001F), but the text an
        # engine returns is its detokenizer's, not the grammar's bytes, and vLLM's has held a raw tab or
        # newline inside a string ("Invalid control character at: line 1 column 36"). The worker
        # validates the document against the schema either way.
        return json.loads(result.text, strict=False)
    except ValueError as exc:
        if result.finish_reason == "length":
            code, why = ErrorCode.output_truncated, "max_tokens cut the document short"
        elif result.finish_reason == REPETITION:
            code = ErrorCode.output_truncated
            why = "the output repeated itself, so the engine stopped it early"
        else:
            code, why = ErrorCode.invalid_output, "the output is not JSON"
        output = PartialOutput(
            text=result.text[:MAX_OUTPUT_CHARS],
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
        )
        raise ServiceError(422, code, f"{why} ({result.completion_tokens} tokens): {exc}", output) from exc


def _health(engine: Engine, running: int) -> HealthResponse:
    return HealthResponse(
        status="ok" if engine.loaded else "cold",
        model=engine.model_name,
        gpu=engine.gpu,
        backend=engine.backend,
        running=running,
        max_model_len=engine.max_model_len,
    )


async def _client_gone(http: Request) -> None:
    """Return when the client closes its connection. The body is read by then, so the next ASGI message
    is the disconnect (or, once the answer is sent, the end of the request)."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


async def _unless_abandoned(call: Awaitable[T], http: Request) -> T:
    """Await `call`, cancelling it when the client goes away (a worker whose job was cancelled, or ran out
    of time, closes its connection) or when this request is cancelled itself (a Modal call cancelled
    through the SDK): the engine stops generating a request nobody waits for (vLLM aborts it, the local
    engine stops at its next token), and its time goes to the others. Returns or raises only once the
    engine has let go of it, so that the running count is true."""
    task = asyncio.ensure_future(call)
    gone = asyncio.ensure_future(_client_gone(http))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ServiceError(499, ErrorCode.client_closed, "the client went away; the generation was stopped")
    finally:
        for pending in (gone, task):
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending


def _install_error_handlers(app: FastAPI) -> None:
    async def on_service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        return _error_response(exc.status_code, exc.body)

    async def on_invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        return _error_response(422, ErrorBody(code=ErrorCode.invalid_request, message=message))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_invalid_request)


def create_app(engine: Engine | None = None, settings: Settings | None = None) -> FastAPI:
    """The service app; with no arguments it builds the engine the settings name (uvicorn's `--factory`)."""
    settings = settings or get_settings()
    engine = engine or create_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Deliberately no engine.load() here: cold starts are explicit (/warmup or the first /generate).
        logger.info("inference service up with %s (%s), model not loaded", engine.model_name, engine.backend)
        try:
            yield
        finally:
            # On SIGTERM too (uvicorn ends the lifespan): vLLM's engine core would outlive this process and
            # keep the GPU's memory.
            engine.shutdown()

    app = FastAPI(title="irq inference", lifespan=lifespan)
    _install_error_handlers(app)
    running = 0

    @app.get("/health")
    async def health() -> HealthResponse:
        return _health(engine, running)

    @app.post("/warmup")
    async def warmup() -> HealthResponse:
        await _engine_call(engine.load())
        return _health(engine, running)

    @app.post("/generate")
    async def generate(request: GenerateRequest, http: Request) -> GenerateResponse:
        nonlocal running
        if not engine.loaded:
            await _engine_call(engine.load())
        running += 1
        try:
            result = await _unless_abandoned(_engine_call(engine.generate(request)), http)
        finally:
            running -= 1
        return GenerateResponse(
            text=_parse_output(result),
            tokens_used=result.completion_tokens,
            generation_time_ms=result.generation_time_ms,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            ttft_ms=result.ttft_ms,
            engine_wait_ms=result.engine_wait_ms,
            model=engine.model_name,
            backend=result.backend,
        )

    return app


def serve(settings: Settings) -> None:
    """Run the service with uvicorn on the configured host and port (`irq inference serve`)."""
    uvicorn.run(create_app(settings=settings), host=settings.inference_host, port=settings.inference_port)
