"""The submission rules: a job request checked against the endpoints served, the service's limits and the
schema compiler and the model's context, and its defaults filled in (`irq/submission/rules.py`); each
refusal's code, message and the one HTTP status the API gives its kind (`api/errors.py`); the queued row it
becomes and the fingerprint that tells a repeated request from another under the same idempotency key
(`irq/submission`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from api.errors import error_answer, submission_headers, submission_status
from irq.endpoints import Registry
from irq.error_codes import ErrorCode
from irq.ir_schema import ir_json_schema
from irq.prompting import least_prompt_tokens
from irq.schema_check import SchemaProblem
from irq.settings import Settings
from irq.store.models import JobStatus
from irq.submission import job_row, request_hash, same_request, schema_hash
from irq.submission.errors import (
    ChecksUnavailable,
    IdempotencyKeyReused,
    InvalidRequest,
    MalformedRequest,
    RequestTooLarge,
    SubmissionError,
)
from irq.submission.rules import JobRequest, job_request, to_new_job
from irq.testing import BACKEND, MODEL, one_endpoint
from tests.unit.support import SCHEMA, new_job

SETTINGS = Settings(
    default_max_tokens=1024,
    max_max_tokens=4096,
    default_timeout_s=300.0,
    max_timeout_s=900.0,
    default_temperature=0.3,
    default_top_p=0.95,
    max_attempts=4,
    retry_truncated=True,
    max_prompt_chars=2000,
    max_schema_bytes=4096,
    max_schema_depth=8,
)
TWO_BACKENDS = Registry(endpoints=[one_endpoint(), one_endpoint(backend="xgrammar", name="xg")])


def request(**fields: Any) -> JobRequest:
    return JobRequest.model_validate({"prompt": "a function that adds two numbers", **fields})


def refusal(body: JobRequest, registry: Registry = TWO_BACKENDS) -> SubmissionError:
    with pytest.raises(SubmissionError) as refused:
        to_new_job(body, SETTINGS, registry, None)
    return refused.value


def test_a_bare_request_takes_every_default() -> None:
    new = to_new_job(request(), SETTINGS, TWO_BACKENDS, "key-1")
    assert (new.model, new.backend) == (MODEL, BACKEND)  # the first endpoint's model, its first backend
    assert new.schema == ir_json_schema()
    assert (new.max_tokens, new.timeout_s, new.max_attempts) == (1024, 300.0, 4)
    assert (new.temperature, new.top_p, new.priority, new.retry_truncated) == (0.3, 0.95, 5, True)
    assert new.idempotency_key == "key-1"


def test_what_a_request_sets_is_kept_even_where_it_is_falsy() -> None:
    body = request(
        schema=SCHEMA, backend="xgrammar", max_tokens=64, temperature=0.0, top_p=1.0, priority=0,
        timeout=30.0, retry_truncated=False,
    )  # fmt: skip
    new = to_new_job(body, SETTINGS, TWO_BACKENDS, None)
    assert (new.schema, new.backend, new.max_tokens, new.timeout_s) == (SCHEMA, "xgrammar", 64, 30.0)
    assert (new.temperature, new.top_p, new.priority, new.retry_truncated) == (0.0, 1.0, 0, False)


@pytest.mark.parametrize(
    "fields, named",
    [
        (dict(model="gpt-9"), "'gpt-9'"),
        (dict(backend="outlines"), "with backend 'outlines'"),
    ],
)
def test_a_model_or_backend_no_endpoint_serves_is_refused_naming_what_is_served(
    fields: dict[str, str], named: str
) -> None:
    error = refusal(request(**fields))
    assert (submission_status(error), error.code) == (422, "model_not_served")
    assert named in error.message and f"{MODEL} (guidance, xgrammar)" in error.message


def test_a_prompt_over_the_limit_is_refused_with_its_length() -> None:
    error = refusal(request(prompt="x" * 2001))
    assert (submission_status(error), error.code) == (413, "prompt_too_large")
    assert "2001" in error.message and "2000" in error.message
    assert to_new_job(request(prompt="x" * 2000), SETTINGS, TWO_BACKENDS, None).prompt == "x" * 2000


@pytest.mark.parametrize(
    "fields, limit",
    [(dict(max_tokens=4097), "max_tokens must be at most 4096"), (dict(timeout=901.0), "at most 900 s")],
)
def test_a_budget_over_the_services_limit_is_refused(fields: dict[str, float], limit: str) -> None:
    error = refusal(request(**fields))
    assert (submission_status(error), error.code) == (422, "invalid_request") and limit in error.message


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize(
    "schema, status, code",
    [
        (nested(8), 422, "schema_too_deep"),
        ({"type": "object", "description": "x" * 5000}, 413, "schema_too_large"),
        ({"type": "objekt"}, 422, "invalid_schema"),
    ],
)
def test_a_schema_the_service_will_not_queue_is_refused_with_its_problem(
    schema: dict[str, Any], status: int, code: str
) -> None:
    error = refusal(request(schema=schema))
    assert (submission_status(error), error.code) == (status, code)


def test_a_schema_within_the_limits_is_accepted() -> None:
    assert to_new_job(request(schema=nested(3)), SETTINGS, TWO_BACKENDS, None).schema == nested(3)


def test_a_prompt_and_budget_over_the_models_context_are_refused_naming_both() -> None:
    least = least_prompt_tokens("a function that adds two numbers", SCHEMA)
    declared = Registry(endpoints=[one_endpoint().model_copy(update={"max_model_len": least + 16})])
    error = refusal(request(schema=SCHEMA, max_tokens=17), declared)
    assert (submission_status(error), error.code) == (422, "prompt_too_long")
    assert f"at least {least} tokens) and max_tokens 17" in error.message
    assert f"context length of {MODEL}, {least + 16} tokens" in error.message
    assert to_new_job(request(schema=SCHEMA, max_tokens=16), SETTINGS, declared, None).max_tokens == 16


@pytest.mark.parametrize(
    "code, status", [("checks_busy", 503), ("checks_unavailable", 503), ("schema_too_complex", 422)]
)
def test_a_schema_check_that_could_not_run_asks_for_a_retry_and_one_that_ran_too_long_refuses(
    monkeypatch: pytest.MonkeyPatch, code: str, status: int
) -> None:
    def problem(*args: object, **kwargs: object) -> None:
        raise SchemaProblem(code, f"the check: {code}", retry_after_s=2.0 if status == 503 else None)

    monkeypatch.setattr("irq.submission.rules.check_schema", problem)
    error = refusal(request(schema=SCHEMA))
    assert (submission_status(error), error.code, error.message) == (status, code, f"the check: {code}")
    assert submission_headers(error) == ({"Retry-After": "2"} if status == 503 else None)
    assert isinstance(error, ChecksUnavailable) == (status == 503)


def test_fields_that_are_no_job_request_are_refused_naming_each_field() -> None:
    with pytest.raises(InvalidRequest) as refused:
        job_request({"prompt": "", "priority": "high", "colour": "red"})
    error = refused.value
    assert (submission_status(error), error.code, error.param) == (422, "invalid_request", "prompt")
    assert [part.split(":")[0] for part in error.message.split("; ")] == ["prompt", "priority", "colour"]
    with pytest.raises(InvalidRequest) as nested:
        job_request({"prompt": "p", "top_p": 0}, where=("body",))
    assert nested.value.param == "body.top_p" and nested.value.message.startswith("body.top_p: ")


@pytest.mark.parametrize(
    "refused, status",
    [
        (MalformedRequest(ErrorCode.unsupported_parameter, "`n` = 2 is not supported", "n"), 400),
        (InvalidRequest(ErrorCode.invalid_request, "max_tokens must be at most 4096"), 422),
        (RequestTooLarge(ErrorCode.prompt_too_large, "prompt is 9 characters; the limit is 8"), 413),
        (ChecksUnavailable(ErrorCode.checks_busy, "every check process is busy", 1.0), 503),
        (IdempotencyKeyReused(), 422),
    ],
)
def test_each_kind_of_refusal_has_one_http_status_and_keeps_its_code_in_both_error_shapes(
    refused: SubmissionError, status: int
) -> None:
    assert submission_status(refused) == status
    native = error_answer("/v1/jobs", status, refused.code, refused.message, refused.param)
    openai = error_answer("/openai/v1/chat/completions", status, refused.code, refused.message, refused.param)
    assert native == (status, {"error": {"code": refused.code, "message": refused.message}})
    assert openai[0] == (400 if status == 422 else status)
    assert openai[1]["error"]["code"] == refused.code and openai[1]["error"]["param"] == refused.param


def test_a_refusal_within_a_batch_names_the_job_and_keeps_the_rest() -> None:
    busy = ChecksUnavailable(ErrorCode.checks_busy, "every check process is busy", 3.0)
    located = busy.within("job 4")
    assert isinstance(located, ChecksUnavailable) and located.retry_after_s == 3.0
    assert (located.code, located.message, str(located)) == (
        ErrorCode.checks_busy, "job 4: every check process is busy", "job 4: every check process is busy"
    )  # fmt: skip
    assert busy.message == "every check process is busy"


# --- irq/submission.py ---------------------------------------------------------------------------------


def test_a_new_job_becomes_a_queued_row_with_no_attempt_yet() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    row = job_row(7, new_job(custom_id="line-3"), now, batch_id="b", index=3)
    assert (row["status"], row["attempts"], row["bounded"]) == (JobStatus.queued, 0, False)
    assert (row["owner_id"], row["batch_id"], row["batch_index"], row["custom_id"]) == (7, "b", 3, "line-3")
    assert row["created_at"] == row["enqueued_at"] == now
    assert row["schema_hash"] == schema_hash(SCHEMA)
    assert job_row(7, new_job(), now)["id"] != job_row(7, new_job(), now)["id"]


def test_a_schema_hash_ignores_key_order_and_nothing_else() -> None:
    assert schema_hash({"type": "object", "required": []}) == schema_hash({"required": [], "type": "object"})
    assert schema_hash({"type": "object"}) != schema_hash({"type": "array"})


def test_the_fingerprint_tells_the_same_request_from_another() -> None:
    assert request_hash([new_job(idempotency_key="a")]) == request_hash([new_job(idempotency_key="b")])
    assert request_hash([new_job()]) != request_hash([new_job(max_tokens=257)])
    one, two = new_job(prompt="one"), new_job(prompt="two")
    assert request_hash([one, two]) != request_hash([two, one])  # a batch is its lines in order


def test_a_key_reused_for_another_request_is_refused() -> None:
    first = object()
    asked = request_hash([new_job()])
    assert same_request(first, asked, asked) is first
    assert same_request(first, None, asked) is first  # stored before fingerprints were kept
    with pytest.raises(IdempotencyKeyReused):
        same_request(first, request_hash([new_job(prompt="another")]), asked)
