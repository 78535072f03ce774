"""The submission rules: a job request (`JobRequest`, what `POST /v1/jobs` takes and what every batch line
and OpenAI request becomes) checked against the endpoints served, the service's limits, the schema
compiler and the model's context length, and its defaults filled in: a `NewJob`, or a `SubmissionError`
naming the problem."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from irq.endpoints import NotServed, Registry, Route
from irq.error_codes import ErrorCode
from irq.ir_schema import ir_json_schema
from irq.prompting import least_prompt_tokens, prompt_chars
from irq.sampling import TEMPERATURE_MAX, TEMPERATURE_MIN, TOP_P_MAX, TOP_P_MIN
from irq.schema_check import GuidanceOptions, SchemaProblem, check_schema
from irq.settings import Settings
from irq.submission import NewJob
from irq.submission.errors import ChecksUnavailable, InvalidRequest, RequestTooLarge, SubmissionError


def storable_text(text: str) -> str:
    """`text` if a store can keep it (no NUL, valid Unicode); else a ValueError naming the problem."""
    if "\x00" in text:
        raise ValueError("must not contain a NUL character")
    _unicode(text)
    return text


def custom_id_problem(custom_id: object) -> str | None:
    """Why `custom_id` cannot name a job of a batch (None when it can): it is a string of 1 to 255
    characters a store can keep."""
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 255:
        return "custom_id must be a string of 1 to 255 characters"
    try:
        storable_text(custom_id)
    except ValueError as exc:
        return f"custom_id {exc}"
    return None


def _unicode(text: str) -> None:
    """Text that UTF-8 can store: JSON's `\\ud800` escapes decode to lone surrogates, which it cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (it holds a lone surrogate, e.g. escaped \\ud800)") from None


def _storable(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is not None:
        _unicode(json.dumps(schema, ensure_ascii=False))
    return schema


Text = Annotated[str, AfterValidator(storable_text)]


class JobRequest(BaseModel):
    """`POST /v1/jobs`. Unset fields take the service defaults; `schema` defaults to the IR schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)  # `false` is no priority

    prompt: Text = Field(min_length=1, description="Natural-language description of the function.")
    schema_: Annotated[dict[str, Any] | None, AfterValidator(_storable)] = Field(
        default=None, alias="schema", description="JSON Schema of the output."
    )
    model: Text | None = Field(
        default=None, max_length=200, description="A model of `GET /v1/models`; unset: the default one."
    )
    backend: Text | None = Field(
        default=None,
        max_length=50,
        description="A structured-output backend the model is served with; unset: its first one.",
    )
    # Unset: IRQ_DEFAULT_MAX_TOKENS, IRQ_DEFAULT_TEMPERATURE, IRQ_DEFAULT_TOP_P; max_tokens is bounded by
    # IRQ_MAX_MAX_TOKENS (checked at submit), temperature and top_p by what every engine takes.
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=TEMPERATURE_MIN, le=TEMPERATURE_MAX)
    top_p: float | None = Field(default=None, gt=TOP_P_MIN, le=TOP_P_MAX)
    priority: int = Field(default=5, ge=0, le=9, description="0..9, higher runs first.")
    retry_truncated: bool | None = Field(
        default=None,
        description="A document cut at max_tokens runs once more under the schema bounded to the token "
        "budget (its documents still match the schema). Unset: IRQ_RETRY_TRUNCATED.",
    )
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="Seconds the job may run, over all its attempts, from its first start; then it fails "
        "with `timeout`. Time spent queued does not count.",
    )


def job_request(fields: object, where: tuple[str, ...] = ()) -> JobRequest:
    """The job request of these fields; `InvalidRequest` naming each field at fault (`param`: the first),
    under `where` (`("body",)`: the fields are an OpenAI line's body)."""
    try:
        return JobRequest.model_validate(fields)
    except ValidationError as exc:
        places = [".".join(map(str, (*where, *error["loc"]))) or "body" for error in exc.errors()]
        problems = "; ".join(
            f"{place}: {error['msg']}" for place, error in zip(places, exc.errors(), strict=True)
        )
        raise InvalidRequest(ErrorCode.invalid_request, problems, places[0]) from None


def to_new_job(
    body: JobRequest,
    settings: Settings,
    registry: Registry,
    idempotency_key: str | None,
    owner: int | None = None,
) -> NewJob:
    """Check a request against the endpoints served, the service's limits and the schema compiler, and fill
    in its defaults; `SubmissionError` naming the first problem (`ChecksUnavailable` when no schema-check
    process was free for `owner`, the submitting key)."""
    try:
        route = registry.route(body.model, body.backend)
    except NotServed as exc:
        raise InvalidRequest(ErrorCode.model_not_served, str(exc)) from None
    if len(body.prompt) > settings.max_prompt_chars:
        message = f"prompt is {len(body.prompt)} characters; the limit is {settings.max_prompt_chars}"
        raise RequestTooLarge(ErrorCode.prompt_too_large, message)
    max_tokens = body.max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_max_tokens:
        message = f"max_tokens must be at most {settings.max_max_tokens}"
        raise InvalidRequest(ErrorCode.invalid_request, message)
    timeout = body.timeout or settings.default_timeout_s
    if timeout > settings.max_timeout_s:
        message = f"timeout must be at most {settings.max_timeout_s:g} s"
        raise InvalidRequest(ErrorCode.invalid_request, message)
    schema = ir_json_schema() if body.schema_ is None else body.schema_
    if body.schema_ is not None:
        _check_schema(schema, settings, owner)
    check_context(body.prompt, schema, max_tokens, route, registry)
    return NewJob(
        prompt=body.prompt,
        schema=schema,
        model=route.model,
        backend=route.backend,
        max_tokens=max_tokens,
        temperature=settings.default_temperature if body.temperature is None else body.temperature,
        top_p=settings.default_top_p if body.top_p is None else body.top_p,
        priority=body.priority,
        timeout_s=timeout,
        max_attempts=settings.max_attempts,
        retry_truncated=settings.retry_truncated if body.retry_truncated is None else body.retry_truncated,
        idempotency_key=idempotency_key,
    )


def _check_schema(schema: dict[str, Any], settings: Settings, owner: int | None) -> None:
    try:
        check_schema(
            schema,
            max_bytes=settings.max_schema_bytes,
            max_depth=settings.max_schema_depth,
            timeout_s=settings.schema_compile_timeout_s,
            owner=owner,
            options=GuidanceOptions.of(settings),
            processes=settings.schema_check_processes,
            wait_s=settings.schema_check_wait_s,
        )
    except SchemaProblem as exc:
        raise _refusal(exc) from None


def _refusal(problem: SchemaProblem) -> SubmissionError:
    """A schema problem as a refusal: too large, no check process free, or a schema that cannot be used."""
    code = problem.code
    if code in (ErrorCode.checks_busy, ErrorCode.checks_unavailable):
        return ChecksUnavailable(code, str(problem), problem.retry_after_s)
    if code is ErrorCode.schema_too_large:
        return RequestTooLarge(code, str(problem))
    return InvalidRequest(code, str(problem))


def check_context(
    prompt: str, schema: dict[str, Any], max_tokens: int, route: Route, registry: Registry
) -> None:
    """`prompt_too_long` when the prompt as the engine builds it (instructions, the schema's outline, the
    prompt) and `max_tokens` surely exceed the context length the route's endpoints declare."""
    context = registry.context_length(route)
    if context is None:
        return
    least = least_prompt_tokens(prompt, schema)
    if least + max_tokens > context:
        raise InvalidRequest(
            ErrorCode.prompt_too_long,
            f"the prompt as the model gets it (instructions, the schema's field outline and the prompt: "
            f"{prompt_chars(prompt, schema)} characters, at least {least} tokens) and max_tokens {max_tokens}"
            f" exceed the context length of {route.model}, {context} tokens",
        )
