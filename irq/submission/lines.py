"""A batch as jobs. One parser reads a batch line (`batch_line`): irq's own job request with an optional
`custom_id` beside its fields, or an OpenAI Batch API line (`custom_id`, `method`, `url`, and a
chat-completions `body`, `irq/submission/chat.py`). Two readers feed it: irq's `POST /v1/batches` upload
(a JSON array or JSONL; the first bad job refuses the whole batch) and an OpenAI batch's input file (every
line checked; the bad ones are listed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from irq.endpoints import Registry
from irq.error_codes import ErrorCode
from irq.settings import Settings
from irq.strict_json import loads
from irq.submission import NewJob, schema_hash
from irq.submission.chat import job_fields
from irq.submission.errors import InvalidRequest, MalformedRequest, RequestTooLarge, SubmissionError
from irq.submission.rules import custom_id_problem, job_request, to_new_job

CHAT_COMPLETIONS = "/v1/chat/completions"  # the one endpoint an OpenAI batch line may name
MAX_LINE_ERRORS = 100  # of an OpenAI batch file, listed before the reading stops


@dataclass(frozen=True)
class Lines:
    """How a batch's lines become jobs: the service's limits and endpoints, the submitting key (whose schema
    checks they are), and the source: irq's upload (`route`, a `model` and `backend` replacing each line's
    own) or an OpenAI batch file (`openai_file`: every line is an OpenAI line, with a `custom_id` of its own
    and `method` and `url` set; a body without `response_format` is answered in plain text)."""

    settings: Settings
    registry: Registry
    owner: int | None = None
    route: dict[str, str] = field(default_factory=dict)
    openai_file: bool = False


def batch_line(item: object, lines: Lines, seen: set[str] | None = None) -> NewJob:
    """One line as a job; `SubmissionError` naming what is wrong with it. `seen`: the `custom_id`s of the
    lines before, which this one's may not repeat (it is added, whether the line is good or not)."""
    if not isinstance(item, dict):
        raise InvalidRequest(ErrorCode.invalid_request, "a job must be a JSON object")
    custom_id = item.get("custom_id")
    if (custom_id is not None or lines.openai_file) and (problem := custom_id_problem(custom_id)):
        raise InvalidRequest(ErrorCode.invalid_request, problem, "custom_id")
    if seen is not None and custom_id is not None:
        if custom_id in seen:
            message = f"custom_id {custom_id!r} is used twice"
            raise InvalidRequest(ErrorCode.duplicate_custom_id, message, "custom_id")
        seen.add(custom_id)
    if lines.openai_file or ("body" in item and item.keys() & {"method", "url", "custom_id"}):
        request = job_request({**_openai_fields(item, lines.openai_file), **lines.route}, ("body",))
    else:
        request = job_request({**{k: v for k, v in item.items() if k != "custom_id"}, **lines.route})
    new = to_new_job(request, lines.settings, lines.registry, None, owner=lines.owner)
    return dataclasses.replace(new, custom_id=custom_id)


def _openai_fields(item: dict[str, Any], openai_file: bool) -> dict[str, Any]:
    """The job request fields of an OpenAI Batch API line. An OpenAI batch file's lines name the method
    and endpoint; irq's upload takes the body alone, and without `response_format` gives irq's default
    schema rather than plain text, as for its own job requests."""
    if openai_file and item.get("method") != "POST":
        raise InvalidRequest(ErrorCode.invalid_request, "`method` must be POST", "method")
    if openai_file and item.get("url") != CHAT_COMPLETIONS:
        message = f"`url` must be the batch's endpoint, {CHAT_COMPLETIONS}"
        raise InvalidRequest(ErrorCode.invalid_url, message, "url")
    return job_fields(item.get("body"), plain_text=openai_file)


def read_upload(body: bytes, lines: Lines) -> list[NewJob]:
    """Every job of an upload checked as a single submit would be; the first bad one refuses the whole
    batch, its message saying which (`job 3: …`)."""
    items = _items(body)
    if not items:
        raise InvalidRequest(ErrorCode.invalid_request, "the batch has no jobs")
    limit = lines.settings.max_batch_jobs
    if len(items) > limit:
        raise RequestTooLarge(ErrorCode.batch_too_large, f"{len(items)} jobs; the limit is {limit}")
    news = []
    for number, item in enumerate(items, start=1):
        try:
            news.append(batch_line(item, lines))
        except SubmissionError as exc:
            raise exc.within(f"job {number}") from None
    return news


def _items(body: bytes) -> list[Any]:
    """The uploaded items: a JSON array, or one JSON value per non-empty line."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise MalformedRequest(ErrorCode.invalid_json, "the batch is not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            return list(loads(text))
        except (ValueError, RecursionError) as exc:
            message = f"the batch is not a JSON array: {exc}"
            raise InvalidRequest(ErrorCode.invalid_request, message) from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(loads(line))
            except (ValueError, RecursionError) as exc:
                message = f"line {number} is not JSON: {exc}"
                raise InvalidRequest(ErrorCode.invalid_request, message) from None
    return items


def read_file(raws: Iterable[bytes], lines: Lines) -> tuple[list[NewJob], list[dict[str, Any]]]:
    """Every line of an OpenAI batch file checked: the jobs, or the errors of the bad lines (`code`, `line`,
    `message`, `param`; at most `MAX_LINE_ERRORS`). Equal schemas are kept once."""
    news: list[NewJob] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    schemas: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(raws, start=1):
        if not raw.strip():
            continue
        try:
            new = batch_line(_file_item(raw), lines, seen)
        except SubmissionError as exc:
            errors.append(dict(code=exc.code, line=number, message=exc.message, param=exc.param))
            if len(errors) >= MAX_LINE_ERRORS:
                break
            continue
        if not errors:  # once a line is bad, the file makes no job
            schema = schemas.setdefault(schema_hash(new.schema), new.schema)
            news.append(dataclasses.replace(new, schema=schema))
    if not news and not errors:
        errors.append(
            dict(code=ErrorCode.empty_file, line=None, message="the file has no requests", param=None)
        )
    return ([] if errors else news), errors


def _file_item(raw: bytes) -> Any:
    try:
        return loads(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(ErrorCode.invalid_json, f"the line is not JSON: {exc}") from None
