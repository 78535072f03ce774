"""The submit side over real HTTP: auth, idempotency, cancel, pagination, tenancy, and bad input.

No worker runs here, so accepted jobs stay queued in the store and on the broker, where tests count them.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from irq.store.models import Job
from tests.support import Stack, start_stack, stop_stack

PROMPT = "Create a function that returns the maximum of a list"


def stored_jobs(stack: Stack) -> int:
    with stack.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Job)) or 0)


def test_submit_returns_202_with_a_queued_job_and_enqueues_it(api_only: Stack) -> None:
    with api_only.client() as http:
        r = http.post("/v1/jobs", json={"prompt": PROMPT})
        assert r.status_code == 202, r.text
        job = r.json()
        assert job["status"] == "queued"
        assert r.headers["location"] == f"/v1/jobs/{job['id']}"
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
    assert api_only.queue_length() == 1


def test_curl_style_form_labelled_json_body_is_accepted(api_only: Stack) -> None:
    # `curl -d '{...}'` sends application/x-www-form-urlencoded
    r = httpx.post(
        api_only.api + "/v1/jobs",
        content=f'{{"prompt": "{PROMPT}"}}',
        headers={
            "Authorization": f"Bearer {api_only.key}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.status_code == 202, r.text


def test_requests_without_a_valid_key_get_401(api_only: Stack) -> None:
    assert httpx.post(api_only.api + "/v1/jobs", json={"prompt": PROMPT}).status_code == 401
    with api_only.client("irq_not-a-key") as http:
        r = http.get("/v1/jobs")
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "unauthorized"
    assert stored_jobs(api_only) == 0


def test_idempotency_key_returns_the_same_job(api_only: Stack) -> None:
    with api_only.client() as http:
        first = http.post("/v1/jobs", json={"prompt": PROMPT}, headers={"Idempotency-Key": "k-1"})
        again = http.post("/v1/jobs", json={"prompt": PROMPT}, headers={"Idempotency-Key": "k-1"})
        other = http.post("/v1/jobs", json={"prompt": PROMPT}, headers={"Idempotency-Key": "k-2"})
    assert first.status_code == 202 and again.status_code == 200 and other.status_code == 202
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert stored_jobs(api_only) == 2 and api_only.queue_length() == 2


def test_an_idempotency_key_reused_with_another_request_is_refused(api_only: Stack) -> None:
    with api_only.client() as http:
        first = http.post("/v1/jobs", json={"prompt": PROMPT}, headers={"Idempotency-Key": "k-1"})
        other = http.post("/v1/jobs", json={"prompt": PROMPT + "!"}, headers={"Idempotency-Key": "k-1"})
        batch = http.post("/v1/batches", json=[{"prompt": PROMPT}], headers={"Idempotency-Key": "b-1"})
        batch_again = http.post("/v1/batches", json=[{"prompt": PROMPT}], headers={"Idempotency-Key": "b-1"})
        batch_other = http.post("/v1/batches", json=[{"prompt": "x"}], headers={"Idempotency-Key": "b-1"})
    assert first.status_code == 202 and batch.status_code == 202 and batch_again.status_code == 200
    for refused in (other, batch_other):
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "idempotency_key_reused"
    assert stored_jobs(api_only) == 2 and api_only.queue_length() == 2


def test_cancel_a_queued_job(api_only: Stack) -> None:
    with api_only.client() as http:
        job = http.post("/v1/jobs", json={"prompt": PROMPT}).json()
        r = http.post(f"/v1/jobs/{job['id']}/cancel")
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        assert http.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
        # a finished job stays as it is
        assert http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"


def test_long_poll_waits_for_the_asked_time_when_the_job_does_not_finish(api_only: Stack) -> None:
    with api_only.client() as http:
        job = http.post("/v1/jobs", json={"prompt": PROMPT}).json()
        started = time.monotonic()
        r = http.get(f"/v1/jobs/{job['id']}", params={"wait": 1.5})
        waited = time.monotonic() - started
    assert r.json()["status"] == "queued"
    assert 1.4 <= waited < 5


def test_pagination_walks_every_job_once_newest_first(api_only: Stack) -> None:
    with api_only.client() as http:
        ids = [http.post("/v1/jobs", json={"prompt": f"{PROMPT} #{i}"}).json()["id"] for i in range(7)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page = http.get("/v1/jobs", params={"limit": 3, **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["id"] for j in page["jobs"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        http.post(f"/v1/jobs/{ids[0]}/cancel")
        cancelled = http.get("/v1/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert seen == list(reversed(ids)) and pages == 3
    assert [j["id"] for j in cancelled] == [ids[0]]


def test_another_keys_job_is_404(api_only: Stack) -> None:
    with api_only.client() as alice, api_only.client(api_only.other_key) as bob:
        job = alice.post("/v1/jobs", json={"prompt": PROMPT}).json()
        assert bob.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert bob.post(f"/v1/jobs/{job['id']}/cancel").status_code == 404
        assert bob.get("/v1/jobs").json()["jobs"] == []
        assert alice.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        (b'{"prompt": "unterminated', 422, "invalid_request", "JSON"),
        (b"{}", 422, "invalid_request", "prompt"),
        (b'{"prompt": 12}', 422, "invalid_request", "prompt"),
        (b'{"prompt": "x", "colour": "red"}', 422, "invalid_request", "colour"),
        (b'{"prompt": "x", "schema": {"type": "strnig"}}', 422, "invalid_schema", "type"),
        (
            b'{"prompt": "x", "schema": {"type": "string", "pattern": "(?=a)b"}}',
            422,
            "schema_unsupported",
            "look-around",
        ),
        (b'{"prompt": "x", "max_tokens": 0}', 422, "invalid_request", "max_tokens"),
        (b'{"prompt": "x", "temperature": 9}', 422, "invalid_request", "temperature"),
        (b'{"prompt": "' + b"x" * 1_100_000 + b'"}', 413, "body_too_large", "body"),
        (b'{"prompt": "' + b"x" * 20_001 + b'"}', 413, "prompt_too_large", "20000"),
        (
            b'{"prompt": "x", "schema": {"enum": ['
            + b",".join(b'"value_%d"' % i for i in range(20_000))
            + b"]}}",
            413,
            "schema_too_large",
            "200000",
        ),
        (
            b'{"prompt": "x", "schema": ' + b'{"type": "array", "items": ' * 70 + b"{}" + b"}" * 70 + b"}",
            422,
            "schema_too_deep",
            "64",
        ),
        (
            b'{"prompt": "x", "schema": {"type": "string", "pattern": "^(a)\\\\1$"}}',
            422,
            "schema_unsupported",
            "backreferences",
        ),
        (b'{"prompt": "x", "schema": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid_json", "deep"),
        (b"a function that adds two numbers", 422, "invalid_request", "JSON"),
        (b'{"prompt": "x", "temperature": "hot"}', 422, "invalid_request", "temperature"),
        (b'{"prompt": "x", "max_tokens": 9000}', 422, "invalid_request", "max_tokens"),
        (b'{"prompt": "x", "timeout": 4000}', 422, "invalid_request", "timeout"),
        (b'{"prompt": "x", "priority": 10}', 422, "invalid_request", "priority"),
        (b'{"prompt": "a function\\u0000 of two numbers"}', 422, "invalid_request", "NUL"),
        (b'{"prompt": "x", "schema": {"properties": {"\\ud800": {}}}}', 422, "invalid_request", "surrogate"),
        (b'{"prompt": "x", "model": "gpt-4o"}', 422, "model_not_served", "SmolLM2-135M-Instruct (guidance)"),
        (
            b'{"prompt": "x", "schema": {"type": "object", "type": "string"}}',
            400,
            "invalid_json",
            "more than once",
        ),
        (b'\xef\xbb\xbf{"prompt": "x"}', 400, "invalid_json", "byte order mark"),
    ],
    ids=[
        "malformed-json",
        "missing-prompt",
        "wrong-type",
        "unknown-field",
        "not-json-schema",
        "llguidance-rejects",
        "max-tokens-zero",
        "temperature-out-of-range",
        "oversized-body",
        "oversized-prompt",
        "huge-enum",
        "deep-schema",
        "regex-backreference",
        "deeply-nested-body",
        "not-json",
        "wrong-type-temperature",
        "max-tokens-over-limit",
        "timeout-over-limit",
        "priority-out-of-range",
        "nul-in-prompt",
        "lone-surrogate-in-schema-key",
        "model-not-served",
        "duplicate-key",
        "byte-order-mark",
    ],
)
def test_bad_input_gets_a_clear_4xx_and_nothing_is_stored_or_queued(
    api_only: Stack, body: bytes, status: int, code: str, words: str
) -> None:
    with api_only.client() as http:
        r = http.post("/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code
    assert words.lower() in error["message"].lower()
    assert stored_jobs(api_only) == 0
    assert api_only.queue_length() == 0


def test_ids_that_cannot_be_ids_are_answered_as_such_not_looked_up(api_only: Stack) -> None:
    with api_only.client() as http:
        assert http.get("/v1/jobs/not%00an-id").json()["error"]["code"] == "not_found"
        assert http.post("/v1/jobs/not%00an-id/cancel").status_code == 404
        assert http.get("/v1/batches/x%00y").status_code == 404
        cursor = http.get("/v1/jobs", params={"cursor": "a\x00b"})
        assert cursor.status_code == 422 and "cursor" in cursor.json()["error"]["message"]


def test_health_and_readiness(api_only: Stack) -> None:
    assert httpx.get(api_only.api + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(api_only.api + "/readyz").json()
    assert ready["checks"] == {"database": "ok", "redis": "ok"}
    assert httpx.get(api_only.api + "/openapi.json").json()["paths"]["/v1/jobs"]


def test_over_limit_bodies_get_a_413_that_urllib_can_read(api_only: Stack) -> None:
    """urllib sends its whole body before it reads the answer: the 413 must wait for it, not reset it."""
    for size in (1_500_000, 5_000_000):
        body = json.dumps({"prompt": "x" * size}).encode()
        for _ in range(5):
            request = urllib.request.Request(
                api_only.api + "/v1/jobs",
                data=body,
                headers={"Authorization": f"Bearer {api_only.key}", "Content-Type": "application/json"},
            )
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 413
            assert json.loads(refused.value.read())["error"]["code"] == "body_too_large"
    assert stored_jobs(api_only) == 0


def test_an_over_limit_chunked_body_gets_a_413(api_only: Stack) -> None:
    """A streamed body carries no Content-Length: it is counted as it arrives."""

    def chunks() -> Iterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}'

    with api_only.client() as http:
        refused = http.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "body_too_large"


def test_a_body_shorter_than_its_content_length_is_cut_with_a_408(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    """A client that announces 1000 bytes and sends 20 does not hold a connection for ever."""
    stack = start_stack(sqlite_url, redis_url, None, tmp_path, env={"IRQ_BODY_TIMEOUT_S": "1"})
    try:
        host, port = stack.api.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/jobs HTTP/1.1\r\nHost: irq\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {stack.key}\r\nContent-Length: 1000\r\n\r\n".encode()
                + b'{"prompt": "a lie"'
            )
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(65536):  # until the server closes the connection
                answer += chunk
            waited_s = time.monotonic() - started
        text = answer.decode()
        assert text.startswith("HTTP/1.1 408"), text
        assert "body_timeout" in text and waited_s < 5
        assert stored_jobs(stack) == 0
    finally:
        stop_stack(stack)
