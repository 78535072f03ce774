"""HTTP errors with a machine-readable code and a human message: `{"error": {"code", "message"}}`; under
the OpenAI-compatible prefix, OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, with 400 for
an invalid request as OpenAI answers it (its SDK maps each status to an exception class). The one place
where the domain's refusals (`irq/submission/errors.py`) and outages become HTTP statuses."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from irq import retention
from irq.error_codes import ErrorCode
from irq.jobs import BrokerUnavailable
from irq.settings import Settings
from irq.store.db import STORE_UNAVAILABLE
from irq.store.read_process import StoreReadFailed
from irq.strict_json import StrictJSONError
from irq.submission.errors import (
    ChecksUnavailable,
    InvalidRequest,
    MalformedRequest,
    RequestTooLarge,
    SubmissionError,
)

OPENAI_PREFIX = "/openai/v1"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers
        self.param = param


class BodyTooLarge(Exception):
    """A streamed request body went over the limit while being read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"request body is over {max_bytes} bytes")


class BodyTimedOut(Exception):
    """A request body stopped arriving before it was complete."""

    def __init__(self, idle_s: float) -> None:
        super().__init__(f"the request body stopped arriving (nothing for {idle_s:g} s)")


_FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


class ErrorDetail(BaseModel):
    code: str = Field(description="Machine-readable, e.g. `invalid_schema`, `rate_limited`.")
    message: str


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


def not_found(kind: str, resource_id: str, settings: Settings) -> ApiError:
    """404 for a job or batch id that names nothing of this key's; 410 `expired` for one minted before the
    retention time, whose record was pruned (`irq/retention.py`)."""
    if retention.expired(settings, resource_id):
        days = f"{settings.retention_days:g}"
        return ApiError(
            410, ErrorCode.expired, f"{kind} {resource_id} finished more than {days} days ago and was deleted"
        )
    return ApiError(404, ErrorCode.not_found, f"no {kind} {resource_id}")


# The status of each kind of refusal a submission meets (an idempotency key reused is an invalid request).
_SUBMISSION_STATUS: tuple[tuple[type[SubmissionError], int], ...] = (
    (MalformedRequest, 400),
    (RequestTooLarge, 413),
    (ChecksUnavailable, 503),
    (InvalidRequest, 422),
    (SubmissionError, 422),
)


def submission_status(refusal: SubmissionError) -> int:
    """The HTTP status of a refused job request (irq's: `openai_status` turns 422 into OpenAI's 400)."""
    return next(status for kind, status in _SUBMISSION_STATUS if isinstance(refusal, kind))


def submission_headers(refusal: SubmissionError) -> dict[str, str] | None:
    """`Retry-After` for a refusal that may pass later: no schema-check process was free."""
    if isinstance(refusal, ChecksUnavailable) and refusal.retry_after_s:
        return {"Retry-After": f"{math.ceil(refusal.retry_after_s)}"}
    return None


def documented(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# The answers any authenticated operation may give, for its OpenAPI document.
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: documented("The body is not JSON this service can parse (invalid UTF-8, or nested too deeply)."),
    401: documented("Missing, unknown or revoked API key."),
    413: documented("The body, the prompt or the schema is over its size limit."),
    422: documented("The request is invalid; the message names the field and the problem."),
    429: documented("Over the key's request rate or in-flight job quota; see `Retry-After`."),
    503: documented("The store or the broker is unavailable; see `Retry-After`."),
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 409: "conflict_error", 429: "rate_limit_error"}  # fmt: skip


def openai_status(status: int) -> int:
    """OpenAI answers an invalid request 400 where irq answers 422."""
    return 400 if status == 422 else status


def openai_error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = "server_error" if status >= 500 else _OPENAI_TYPES.get(status, "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_answer(
    path: str, status: int, code: str, message: str, param: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The status and body of an error at `path`: irq's shape, or OpenAI's under its prefix."""
    if not path.startswith(OPENAI_PREFIX):
        return status, error_body(code, message)
    status = openai_status(status)
    return status, openai_error_body(status, code, message, param)


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> JSONResponse:
    """The error answer, in irq's shape, or OpenAI's under its prefix. A message quoting the client's text
    keeps what UTF-8 can carry of it (a lone surrogate becomes `?`)."""
    message = message.encode("utf-8", "replace").decode("utf-8")
    param = param.encode("utf-8", "replace").decode("utf-8") if param is not None else None
    status, body = error_answer(request.url.path, status, code, message, param)
    return JSONResponse(body, status_code=status, headers=headers)


def _json_problem(exc: RequestValidationError) -> str | None:
    """What is wrong with a body that is not JSON, where it is (FastAPI says only "JSON decode error")."""
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return f"the body is not valid JSON: {cause.msg} at line {cause.lineno} column {cause.colno}"
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        detail = (errors[0].get("ctx") or {}).get("error") or "it cannot be parsed"
        return f"the body is not valid JSON: {detail}"
    return None


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return respond(request, exc.status, exc.code, exc.message, exc.headers, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (problem := _json_problem(exc)) is not None:
            return respond(request, 422, ErrorCode.invalid_request, problem)
        problems = [f"{_location(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        param = _location(tuple(exc.errors()[0]["loc"])) if exc.errors() else None
        return respond(request, 422, ErrorCode.invalid_request, "; ".join(problems), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):  # a streamed body went over the limit as it was read
            return respond(request, 413, ErrorCode.body_too_large, str(exc.__cause__))
        if isinstance(exc.__cause__, StrictJSONError):
            return respond(request, 400, ErrorCode.invalid_json, str(exc.__cause__))
        if isinstance(exc.__cause__, BodyTimedOut):
            return respond(request, 408, ErrorCode.body_timeout, str(exc.__cause__), {"Connection": "close"})
        if exc.detail == _FASTAPI_BODY_PARSE_ERROR:  # e.g. JSON nested deeper than the parser recurses
            message = "could not parse the request body as JSON (invalid UTF-8, or nested too deeply)"
            return respond(request, 400, ErrorCode.invalid_json, message)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            headers = {"Allow": ", ".join(_allowed_methods(request))}
        return respond(request, exc.status_code, f"http_{exc.status_code}", str(exc.detail), headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return respond(request, 413, ErrorCode.body_too_large, str(exc))

    @app.exception_handler(BodyTimedOut)
    async def _timed_out(request: Request, exc: BodyTimedOut) -> JSONResponse:
        return respond(request, 408, ErrorCode.body_timeout, str(exc), {"Connection": "close"})

    @app.exception_handler(BrokerUnavailable)
    async def _broker_down(request: Request, exc: BrokerUnavailable) -> JSONResponse:
        # Nothing of the submit was kept: the client should send it again.
        return respond(request, 503, ErrorCode.broker_unavailable, str(exc), {"Retry-After": "5"})

    @app.exception_handler(SubmissionError)
    async def _refused(request: Request, exc: SubmissionError) -> JSONResponse:
        status = submission_status(exc)
        return respond(request, status, exc.code, exc.message, submission_headers(exc), exc.param)

    async def _store_down(request: Request, exc: Exception) -> JSONResponse:
        message = "the job store is unavailable; retry later"
        return respond(request, 503, ErrorCode.store_unavailable, message, {"Retry-After": "5"})

    # Down, refusing, or every pooled connection busy (a frozen database holds them): the same 503.
    for unavailable in (*STORE_UNAVAILABLE, StoreReadFailed):
        app.add_exception_handler(unavailable, _store_down)
