"""The one batch-line parser (`irq/submission/lines.py`): irq's own lines and OpenAI Batch API lines become
jobs by the same rules, irq's upload refuses a batch at its first bad job, and an OpenAI batch file lists
every bad line with its code, line number and parameter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.errors import submission_headers, submission_status
from irq.endpoints import Registry
from irq.error_codes import ErrorCode
from irq.ir_schema import ir_json_schema
from irq.replies import TEXT_SCHEMA
from irq.schema_check import SchemaProblem
from irq.settings import Settings
from irq.submission import schema_hash
from irq.submission.errors import SubmissionError
from irq.submission.lines import MAX_LINE_ERRORS, Lines, batch_line, read_file, read_upload
from irq.testing import BACKEND, MODEL, one_endpoint
from tests.unit.support import SCHEMA

SETTINGS = Settings(max_batch_jobs=3, max_prompt_chars=2000, max_max_tokens=4096)
REGISTRY = Registry(endpoints=[one_endpoint(), one_endpoint(backend="xgrammar", name="xg")])
UPLOAD = Lines(SETTINGS, REGISTRY)
OPENAI_FILE = Lines(SETTINGS, REGISTRY, openai_file=True)


def chat_body(**over: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": "a function that adds two numbers"}], **over}


def openai_line(custom_id: object = "line-1", **over: Any) -> dict[str, Any]:
    line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": chat_body()}
    return {**line, **over}


def refusal(item: object, lines: Lines = UPLOAD) -> SubmissionError:
    with pytest.raises(SubmissionError) as refused:
        batch_line(item, lines)
    return refused.value


def jsonl(*items: object) -> bytes:
    return "\n".join(json.dumps(item) for item in items).encode()


# --- one line ------------------------------------------------------------------------------------------


def test_an_irq_line_is_a_job_request_with_its_custom_id_beside_it() -> None:
    new = batch_line({"prompt": "p", "schema": SCHEMA, "max_tokens": 64, "custom_id": "a"}, UPLOAD)
    assert (new.prompt, new.schema, new.max_tokens, new.custom_id) == ("p", SCHEMA, 64, "a")
    assert batch_line({"prompt": "p"}, UPLOAD).custom_id is None  # irq's lines may go without one


def test_an_openai_line_carries_its_messages_schema_and_budget() -> None:
    body = chat_body(
        response_format={"type": "json_schema", "json_schema": {"name": "f", "schema": SCHEMA}},
        max_completion_tokens=99,
        temperature=0.0,
    )
    new = batch_line(openai_line("x", body=body), OPENAI_FILE)
    assert (new.prompt, new.schema, new.custom_id) == ("a function that adds two numbers", SCHEMA, "x")
    assert (new.max_tokens, new.temperature) == (99, 0.0)
    assert batch_line(openai_line(body=chat_body(max_tokens=7)), OPENAI_FILE).max_tokens == 7


def test_without_response_format_an_openai_file_answers_text_and_irqs_upload_its_own_schema() -> None:
    assert batch_line(openai_line(), OPENAI_FILE).schema == TEXT_SCHEMA
    assert batch_line(openai_line(), UPLOAD).schema == ir_json_schema()
    # irq's upload takes an OpenAI line by its body alone: neither method nor url is checked there.
    assert batch_line({"custom_id": "a", "body": chat_body()}, UPLOAD).custom_id == "a"


def test_the_uploads_route_replaces_every_lines_own() -> None:
    routed = Lines(SETTINGS, REGISTRY, route={"backend": "xgrammar"})
    assert batch_line({"prompt": "p", "backend": BACKEND}, routed).backend == "xgrammar"
    assert batch_line(openai_line(), routed).backend == "xgrammar"


@pytest.mark.parametrize(
    "item, lines, code, message, param",
    [
        ([1, 2], UPLOAD, ErrorCode.invalid_request, "a job must be a JSON object", None),
        ({"prompt": "p", "custom_id": 5}, UPLOAD, ErrorCode.invalid_request, "custom_id must be a string",
         "custom_id"),
        (openai_line(None), OPENAI_FILE, ErrorCode.invalid_request, "custom_id must be a string",
         "custom_id"),
        (openai_line("a\x00"), OPENAI_FILE, ErrorCode.invalid_request, "custom_id must not contain a NUL",
         "custom_id"),
        (openai_line(method="GET"), OPENAI_FILE, ErrorCode.invalid_request, "`method` must be POST",
         "method"),
        (openai_line(url="/v1/embeddings"), OPENAI_FILE, ErrorCode.invalid_url,
         "`url` must be the batch's endpoint, /v1/chat/completions", "url"),
        (openai_line(body=chat_body(stream=True)), OPENAI_FILE, ErrorCode.unsupported_parameter,
         "`stream` = True is not supported", "stream"),
        (openai_line(body=chat_body(best_of=2)), OPENAI_FILE, ErrorCode.unknown_parameter,
         "Unrecognized request argument supplied: best_of", "best_of"),
        (openai_line(body=chat_body(temperature=7)), OPENAI_FILE, ErrorCode.invalid_request,
         "body.temperature: Input should be less than or equal to", "body.temperature"),
        ({"prompt": "", "priority": 10}, UPLOAD, ErrorCode.invalid_request,
         "prompt: String should have at least 1 character; priority: Input should be less than or equal to 9",
         "prompt"),
        ({"prompt": "p", "model": "gpt-9"}, UPLOAD, ErrorCode.model_not_served, "'gpt-9'", None),
    ],
    ids=["not-an-object", "custom-id-type", "custom-id-missing", "custom-id-nul", "method", "url", "stream",
         "unknown-parameter", "body-field", "every-field", "model"],
)  # fmt: skip
def test_a_bad_line_is_refused_with_its_code_its_problem_and_its_field(
    item: object, lines: Lines, code: ErrorCode, message: str, param: str | None
) -> None:
    error = refusal(item, lines)
    assert (error.code, error.param) == (code, param)
    assert message in error.message


def test_a_custom_id_used_twice_is_refused_even_after_a_bad_line() -> None:
    seen: set[str] = set()
    with pytest.raises(SubmissionError):
        batch_line(openai_line("a", method="GET"), OPENAI_FILE, seen)
    with pytest.raises(SubmissionError) as twice:
        batch_line(openai_line("a"), OPENAI_FILE, seen)
    assert (twice.value.code, twice.value.param) == (ErrorCode.duplicate_custom_id, "custom_id")
    assert twice.value.message == "custom_id 'a' is used twice"


# --- irq's upload ---------------------------------------------------------------------------------------


def test_an_upload_is_a_json_array_or_jsonl_in_order() -> None:
    items = [{"prompt": "one", "custom_id": "1"}, {"prompt": "two", "custom_id": "2"}]
    from_array = read_upload(json.dumps(items).encode(), UPLOAD)
    from_lines = read_upload(jsonl(*items) + b"\n\n", UPLOAD)
    assert [n.prompt for n in from_array] == [n.prompt for n in from_lines] == ["one", "two"]
    assert [n.custom_id for n in from_lines] == ["1", "2"]


@pytest.mark.parametrize(
    "body, status, code, message",
    [
        (b"\xff\xfe", 400, ErrorCode.invalid_json, "the batch is not UTF-8 text"),
        (b"[{", 422, ErrorCode.invalid_request, "the batch is not a JSON array"),
        (b'{"prompt": "ok"}\nnot json', 422, ErrorCode.invalid_request, "line 2 is not JSON"),
        (b'{"prompt": "a", "prompt": "b"}', 422, ErrorCode.invalid_request, "more than once"),
        (b"[]", 422, ErrorCode.invalid_request, "the batch has no jobs"),
        (jsonl(*[{"prompt": "p"}] * 4), 413, ErrorCode.batch_too_large, "4 jobs; the limit is 3"),
        (jsonl({"prompt": "ok"}, {"prompt": "x" * 2001}), 413, ErrorCode.prompt_too_large,
         "job 2: prompt is 2001 characters"),
        (jsonl({"prompt": "ok"}, {"prompt": "x", "temperature": 7}), 422, ErrorCode.invalid_request,
         "job 2: temperature"),
        (jsonl({"body": chat_body(n=2), "custom_id": "a"}), 400, ErrorCode.unsupported_parameter,
         "job 1: `n` = 2"),
    ],
    ids=["not-utf8", "not-an-array", "not-a-line", "duplicate-key", "empty", "too-many", "prompt",
         "field", "openai-line"],
)  # fmt: skip
def test_an_upload_is_refused_whole_at_its_first_bad_job(
    body: bytes, status: int, code: ErrorCode, message: str
) -> None:
    with pytest.raises(SubmissionError) as refused:
        read_upload(body, UPLOAD)
    assert (submission_status(refused.value), refused.value.code) == (status, code)
    assert message in refused.value.message and str(refused.value) == refused.value.message


def test_a_busy_checker_refusal_keeps_its_retry_time_within_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    def busy(*args: object, **kwargs: object) -> None:
        raise SchemaProblem(ErrorCode.checks_busy, "every check process is busy", retry_after_s=1.5)

    monkeypatch.setattr("irq.submission.rules.check_schema", busy)
    with pytest.raises(SubmissionError) as refused:
        read_upload(jsonl({"prompt": "p", "schema": SCHEMA}), UPLOAD)
    assert (submission_status(refused.value), refused.value.code) == (503, ErrorCode.checks_busy)
    assert submission_headers(refused.value) == {"Retry-After": "2"}
    assert refused.value.message == "job 1: every check process is busy"


# --- an OpenAI batch file -------------------------------------------------------------------------------


def test_a_file_lists_every_bad_line_and_makes_no_job() -> None:
    raws = [
        json.dumps(openai_line("a")).encode(),
        b"  \n",
        b"{not json",
        json.dumps(openai_line("a")).encode(),
    ]
    news, errors = read_file(raws, OPENAI_FILE)
    assert news == []
    assert [(e["line"], e["code"], e["param"]) for e in errors] == [
        (3, ErrorCode.invalid_json, None),
        (4, ErrorCode.duplicate_custom_id, "custom_id"),
    ]
    assert errors[0]["message"].startswith("the line is not JSON: ")


def test_a_good_file_is_its_jobs_in_order_sharing_equal_schemas() -> None:
    body = chat_body(response_format={"type": "json_schema", "json_schema": {"schema": SCHEMA}})
    raws = [json.dumps(openai_line(f"l{i}", body=body)).encode() for i in range(3)]
    news, errors = read_file(raws, OPENAI_FILE)
    assert errors == [] and [n.custom_id for n in news] == ["l0", "l1", "l2"]
    assert news[0].schema is news[2].schema and schema_hash(news[1].schema) == schema_hash(SCHEMA)
    assert {n.model for n in news} == {MODEL}


def test_a_file_stops_at_its_hundredth_error_and_an_empty_one_is_an_error() -> None:
    _, errors = read_file([b"[]"] * (MAX_LINE_ERRORS + 5), OPENAI_FILE)
    assert len(errors) == MAX_LINE_ERRORS
    _, empty = read_file([b"", b"\n"], OPENAI_FILE)
    assert empty == [
        {"code": ErrorCode.empty_file, "line": None, "message": "the file has no requests", "param": None}
    ]
