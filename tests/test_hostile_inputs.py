"""Hostile values in every place a client can put one: each answer is a 2xx, or a 4xx in irq's error shape
(or OpenAI's, under /openai/v1) naming the problem, never a 5xx; and nothing is stored or queued for a 4xx.

The values are generated: control and NUL characters, lone surrogates, byte order marks, direction
overrides, very long strings, injection-looking text, numbers JSON or PostgreSQL cannot hold, every JSON
type in the place of another, deep nesting; the places: each field of a job request, the schema's keys and
values, the Idempotency-Key header, path ids and query parameters, a batch's lines, and an OpenAI batch
file's lines. Run on SQLite and PostgreSQL (PostgreSQL refuses NUL in text, which once made 500s).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select, text

from irq.store.models import Job
from tests.support import Stack, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)

# Raw JSON text for each value: a lone surrogate or a NUL can only be sent as an escape.
STRINGS = [
    r'"\u0000"',
    r'"a\u0000b"',
    r'"\ud800"',
    r'"x\udfffy"',
    r'"\ufeffprompt"',
    r'"\u202eevil"',
    r'"\u001b[31mred"',
    '"' + "é" * 30_000 + '"',
    '"' + "a" * 25_000 + '"',
    json.dumps("'; DROP TABLE jobs; --"),
    json.dumps("../../../etc/passwd"),
    json.dumps("%00%ff"),
    json.dumps("\r\n\t"),
    json.dumps("🙂" * 10),
    '""',
]
OTHERS = ["null", "true", "0", "-1", "1e309", "-0.0", "123456789012345678901234567890", "[]", "{}", '[["x"]]',
          "[" * 300 + "]" * 300]  # fmt: skip
VALUES = STRINGS + OTHERS

FIELDS = ["prompt", "model", "backend", "max_tokens", "temperature", "top_p", "priority", "timeout",
          "retry_truncated", "schema"]  # fmt: skip


def _job_body(field: str, raw: str) -> str:
    body = {"prompt": "a function that returns the maximum of a list"}
    text = json.dumps({k: v for k, v in body.items() if k != field})
    return text[:-1] + (", " if len(text) > 2 else "") + f'"{field}": {raw}' + "}"


def _schema_bodies(raw: str) -> Iterator[str]:
    prompt = '"prompt": "a function"'
    yield "{" + prompt + ', "schema": {"type": "object", "properties": {' + raw + ': {"type": "string"}}}}'
    yield "{" + prompt + ', "schema": {"type": "object", "properties": {"a": {"type": ' + raw + "}}}}"
    yield "{" + prompt + ', "schema": {"type": "string", "pattern": ' + raw + "}}"
    yield "{" + prompt + ', "schema": {"enum": [' + raw + "]}}"


def _check(response: httpx.Response, where: str, openai: bool = False) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"], where
        if not openai:
            assert isinstance(error["code"], str) and error["code"], where


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    running = start_stack(database_url, redis_url, None, tmp_path, env={"IRQ_RATE_LIMIT_PER_S": "0"})
    yield running
    stop_stack(running)


def _stored(stack: Stack) -> int:
    with stack.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_hostile_values_anywhere_get_a_clear_4xx_and_store_nothing(stack: Stack) -> None:
    headers = {"Content-Type": "application/json"}
    accepted = 0
    with stack.client() as http:
        bodies = [
            (f"field {f} = {raw[:30]}", _job_body(f, raw)) for f, raw in itertools.product(FIELDS, VALUES)
        ]
        bodies += [(f"schema with {raw[:30]}", b) for raw in VALUES for b in _schema_bodies(raw)]
        for where, body in bodies:
            before = _stored(stack)
            answer = http.post("/v1/jobs", content=body.encode("utf-8", "surrogatepass"), headers=headers)
            _check(answer, where)
            stored = _stored(stack) - before
            assert stored == (1 if answer.status_code == 202 else 0), (
                f"{where}: {answer.status_code}, {stored}"
            )
            accepted += answer.status_code == 202
        for raw in STRINGS:
            value = json.loads(raw)
            # What HTTP can carry in a header: no control characters (h11 refuses them before sending).
            header = "".join(c for c in value if c >= " " and c != "\x7f")[:300] or "k"
            answer = http.post(
                "/v1/jobs",
                json={"prompt": "p"},
                headers={b"Idempotency-Key": header.encode("utf-8", "surrogatepass")},
            )
            _check(answer, f"Idempotency-Key {header[:30]!r}")
            enc = quote(value[:2000].encode("utf-8", "surrogatepass"), safe="")  # what a URL can hold
            for path in (f"/v1/jobs/{enc}", f"/v1/batches/{enc}", f"/v1/batches/{enc}/results"):
                _check(http.get(path), f"GET {path[:40]!r}")
            _check(http.post(f"/v1/jobs/{enc}/cancel"), "cancel")
            for name in ("cursor", "batch_id", "status", "limit"):
                _check(http.get(f"/v1/jobs?{name}={enc}"), f"query {name}={enc[:30]}")
            _check(http.get(f"/v1/stats?window={enc}"), "stats window")
            _check(http.get(f"/dashboard/data?window={enc}"), "dashboard window")
    assert accepted < len(bodies)  # the generator does make bad requests


def test_hostile_lines_in_a_batch_and_an_openai_batch_file_store_nothing(stack: Stack) -> None:
    good = json.dumps({"prompt": "a function that returns 1"})
    message = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "x"}]}
    with stack.client() as http:
        for raw in VALUES:
            for line in ('{"prompt": ' + raw + "}", '{"prompt": "p", "custom_id": ' + raw + "}", raw):
                upload = (good + "\n" + line + "\n").encode("utf-8", "surrogatepass")
                before = _stored(stack)
                answer = http.post(
                    "/v1/batches", content=upload, headers={"Content-Type": "application/jsonl"}
                )
                _check(answer, f"batch line {line[:40]!r}")
                if answer.status_code >= 400:
                    assert _stored(stack) == before, line[:40]
            patches = ['"response_format": ' + raw, '"messages": ' + raw, '"max_tokens": ' + raw, None]
            for patch in patches:  # None: the line's custom_id
                body = json.dumps(message)[:-1] + (", " + patch if patch else "") + "}"
                custom_id = '"a"' if patch else raw
                line = (
                    '{"custom_id": '
                    + custom_id
                    + ', "method": "POST", "url": "/v1/chat/completions", "body": '
                    + body
                    + "}"
                )
                files = {"file": ("batch.jsonl", (line + "\n").encode("utf-8", "surrogatepass"))}
                uploaded = http.post("/openai/v1/files", files=files, data={"purpose": "batch"})
                _check(uploaded, "file upload", openai=True)
                if uploaded.status_code != 200:
                    continue
                create = {"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
                          "completion_window": "24h"}  # fmt: skip
                before = _stored(stack)
                made = http.post("/openai/v1/batches", json=create)
                _check(made, f"OpenAI batch line with {(patch or custom_id)[:40]!r}", openai=True)
                batch = made.json() if made.status_code < 400 else {}
                if made.status_code >= 400 or batch.get("status") == "failed":
                    assert _stored(stack) == before, (patch or custom_id)[:40]


OPENAI_ERROR = {"message", "type", "param", "code"}


def _openai_stored(stack: Stack) -> tuple[int, ...]:
    """Rows of the OpenAI surface's tables and the jobs, and the files in the folder."""
    with stack.db.engine.connect() as conn:
        rows = [int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
                for t in ("files", "openai_batches", "batches", "jobs")]  # fmt: skip
    folder = stack.settings.files_dir
    return (*rows, len(os.listdir(folder)) if folder.is_dir() else 0)


def _check_openai(answer: httpx.Response, where: str) -> None:
    assert answer.status_code < 500, f"{where}: {answer.status_code} {answer.text[:300]}"
    if answer.status_code >= 400:
        error = answer.json()["error"]
        assert set(error) == OPENAI_ERROR and error["message"], f"{where}: {answer.text[:300]}"


def test_hostile_ids_cursors_and_fields_of_the_openai_surface_are_4xx_and_store_nothing(stack: Stack) -> None:
    """Each id, cursor and form field of /openai/v1 (a NUL once made 11 of them 500 on PostgreSQL), and the
    texts it stores (metadata, a filename): a 4xx in OpenAI's shape, nothing kept; the listings stay
    readable."""
    good = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": "x"}]}})  # fmt: skip
    with stack.client() as http:
        uploaded = http.post("/openai/v1/files", files={"file": ("b.jsonl", good.encode())},
                             data={"purpose": "batch"})  # fmt: skip
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        for raw in STRINGS:
            value = json.loads(raw)
            enc = quote(value[:2000].encode("utf-8", "surrogatepass"), safe="")
            before = _openai_stored(stack)
            for method, path in (("GET", f"/files/{enc}"), ("GET", f"/files/{enc}/content"),
                                 ("DELETE", f"/files/{enc}"), ("GET", f"/batches/{enc}"),
                                 ("POST", f"/batches/{enc}/cancel"), ("GET", f"/files?after={enc}"),
                                 ("GET", f"/files?purpose={enc}"), ("GET", f"/batches?after={enc}"),
                                 ("GET", f"/files/file-batch-output-{enc}")):  # fmt: skip
                _check_openai(http.request(method, "/openai/v1" + path), f"{method} {path[:50]!r}")
            fields = [("input_file_id", raw), ("metadata", '{"k": ' + raw + "}"), ("endpoint", raw),
                      ("metadata", "{" + raw + ': "v"}'), ("completion_window", raw)]  # fmt: skip
            for field, patch in fields:
                create = {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                          "completion_window": "24h"}  # fmt: skip
                create.pop(field, None)
                body = json.dumps(create)[:-1] + f', "{field}": {patch}' + "}"
                answer = http.post("/openai/v1/batches", content=body.encode("utf-8", "surrogatepass"),
                                   headers={"Content-Type": "application/json"})  # fmt: skip
                _check_openai(answer, f"batch create with {field} = {patch[:40]!r}")
                if answer.status_code == 200:  # an accepted create: its batch is readable back
                    _check_openai(http.get(f"/openai/v1/batches/{answer.json()['id']}"), "the batch made")
                    before = _openai_stored(stack)
            name = value.encode("utf-8", "surrogatepass")
            multipart = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + name +
                         b'"\r\n\r\n' + good.encode() + b'\r\n--B\r\nContent-Disposition: form-data; '
                         b'name="purpose"\r\n\r\nbatch\r\n--B--\r\n')  # fmt: skip
            answer = http.post("/openai/v1/files", content=multipart,
                               headers={"Content-Type": "multipart/form-data; boundary=B"})  # fmt: skip
            _check_openai(answer, f"upload named {value[:30]!r}")
            if answer.status_code == 200:
                http.delete(f"/openai/v1/files/{answer.json()['id']}")
            answer = http.post("/openai/v1/files", files={"file": ("b.jsonl", good.encode())},
                               data={"purpose": value.encode("utf-8", "surrogatepass")})  # fmt: skip
            _check_openai(answer, f"upload for purpose {value[:30]!r}")
            assert _openai_stored(stack) == before, f"something was kept for {raw[:30]}"
            _check_openai(http.get("/openai/v1/batches"), "the batch listing")
            _check_openai(http.get("/openai/v1/files"), "the file listing")
