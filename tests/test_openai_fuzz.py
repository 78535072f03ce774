"""Hypothesis against the OpenAI-compatible surface (files, batches, chat completions) over real HTTP, on
PostgreSQL (which refuses a NUL in text, where SQLite keeps it): generated requests with NULs, lone
surrogates, huge and malformed values in every id, cursor, query, form field and body. Every answer is
below 500, every refusal is in OpenAI's error shape, and a refused request leaves nothing stored: no row,
no byte in the files folder, no job."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)

# Texts a client can send that a store or an encoder chokes on, beside whatever hypothesis draws (its
# characters include NUL and lone surrogates).
NASTY = ["\x00", "a\x00b", "\ud800", "x\udfffy", "\ufeff", "%00", "../../etc/passwd", "", " ", "🙂",
         "a" * 70_000, "file-\x00", "file-batch-output-\x00", "'; DROP TABLE files; --"]  # fmt: skip
texts = st.one_of(
    st.sampled_from(NASTY), st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


ID_ROUTES = [("GET", "/files/{}"), ("GET", "/files/{}/content"), ("DELETE", "/files/{}"),
             ("GET", "/batches/{}"), ("POST", "/batches/{}/cancel")]  # fmt: skip
MULTIPART = {"Content-Type": "multipart/form-data; boundary=B"}


def multipart(filename: bytes, content: bytes, purpose: bytes) -> bytes:
    """An upload's body, written by hand: a client library would refuse (or encode) a hostile filename."""
    return (b'--B\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n\r\n'
            + content + b'\r\n--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n' + purpose
            + b"\r\n--B--\r\n")  # fmt: skip


def _raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def _json(value: Any) -> bytes:
    """JSON with every non-ASCII character escaped: a lone surrogate travels as `\\ud800`, as a client sends
    it. NaN and infinities are sent as JavaScript writes them (not JSON)."""
    return json.dumps(value, ensure_ascii=True).encode()


class Surface:
    """The API under test, with what a request left stored."""

    def __init__(self, stack: Stack, http: httpx.Client) -> None:
        self.stack, self.http = stack, http
        good = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                           "body": {"messages": [{"role": "user", "content": "max of a list"}]}})  # fmt: skip
        self.line = good.encode() + b"\n"
        self.file_id = self.upload(b"good.jsonl", self.line, b"batch").json()["id"]

    def stored(self) -> tuple[int, ...]:
        with self.stack.db.engine.connect() as conn:
            rows = [int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() or 0)
                    for t in ("files", "openai_batches", "batches", "jobs")]  # fmt: skip
        folder = self.stack.settings.files_dir
        return (*rows, len(os.listdir(folder)) if folder.is_dir() else 0)

    def upload(self, filename: bytes, content: bytes, purpose: bytes) -> httpx.Response:
        return self.http.post(
            "/openai/v1/files", content=multipart(filename, content, purpose), headers=MULTIPART
        )


def _ids(surface: Surface) -> st.SearchStrategy[str]:
    return st.one_of(texts, st.just(surface.file_id), st.just("file-batch-output-" + surface.file_id[5:]))


@st.composite
def requests(draw: st.DrawFn, surface: Surface) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path, body, headers) of one generated request."""
    kind = draw(st.sampled_from(["path", "list", "create", "upload", "chat", "malformed"]))
    ident = quote(_raw(draw(_ids(surface)))[:3000], safe="")
    if kind == "path":
        method, path = draw(st.sampled_from(ID_ROUTES))
        return method, "/openai/v1" + path.format(ident), b"", {}
    if kind == "list":
        name = draw(st.sampled_from(["after", "purpose", "limit"]))
        return "GET", f"/openai/v1/{draw(st.sampled_from(['files', 'batches']))}?{name}={ident}", b"", {}
    if kind == "create":
        body: dict[str, Any] = {"input_file_id": draw(_ids(surface)), "endpoint": "/v1/chat/completions",
                                "completion_window": "24h"}  # fmt: skip
        field = draw(st.sampled_from(["input_file_id", "endpoint", "completion_window", "metadata", "extra"]))
        values = st.one_of(json_values, st.dictionaries(texts, texts)) if field == "metadata" else json_values
        body[field] = draw(values)
        key = {
            # What a header can carry: printable ASCII, no space at either end (h11 refuses the rest).
            "Idempotency-Key": draw(
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
            ).strip()
            or "k"
        }
        return "POST", "/openai/v1/batches", _json(body), key if draw(st.booleans()) else {}
    if kind == "upload":
        filename = _raw(draw(texts)).replace(b'"', b"").replace(b"\r", b"").replace(b"\n", b"")
        content = draw(st.one_of(st.just(surface.line), st.binary(max_size=300), st.just(b"\x00" * 5000)))
        purpose = _raw(draw(st.one_of(st.just("batch"), texts)))
        return "POST", "/openai/v1/files", multipart(filename, content, purpose), MULTIPART
    if kind == "chat":
        chat: dict[str, Any] = {"model": "SmolLM2-135M-Instruct", "max_tokens": 32,
                                "messages": [{"role": "user", "content": "max of a list"}]}  # fmt: skip
        where = draw(
            st.sampled_from(["content", "model", "messages", "response_format", "max_tokens", "extra"])
        )
        value = draw(json_values)
        if where == "content":
            chat["messages"][0]["content"] = value
        else:
            chat[where] = value
        return "POST", "/openai/v1/chat/completions", _json(chat), {}
    path = draw(st.sampled_from(["/openai/v1/batches", "/openai/v1/chat/completions", "/openai/v1/files"]))
    return "POST", path, draw(st.binary(max_size=200)), {"Content-Type": "application/json"}


@pytest.fixture
def fuzzed(postgres_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Stack, FaultService]]:
    """API and worker on PostgreSQL over the simulated engine, so that a chat completion it accepts ends."""
    service = start_fault_service(tmp_path)
    env = {"IRQ_RATE_LIMIT_PER_S": "0", "IRQ_CHAT_WAIT_S": "20"}
    stack = start_stack(postgres_url, redis_url, service.url, tmp_path, env=env)
    yield stack, service
    stop_stack(stack)
    service.service.stop()


def test_generated_hostile_requests_get_no_5xx_and_a_refusal_stores_nothing(
    fuzzed: tuple[Stack, FaultService],
) -> None:
    stack, _ = fuzzed
    with stack.client() as http:
        surface = Surface(stack, http)
        statuses: Counter[int] = Counter()

        @settings(max_examples=400, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
        @given(st.data())
        def one(data: st.DataObject) -> None:
            method, path, body, headers = data.draw(requests(surface))
            before = surface.stored()
            answer = http.request(method, path, content=body, headers=headers)
            where = f"{method} {path[:80]} {body[:120]!r}: {answer.status_code} {answer.text[:300]}"
            statuses[answer.status_code] += 1
            assert answer.status_code < 500, where
            if answer.status_code >= 400:
                error = answer.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"], where
                assert surface.stored() == before, f"a refused request left something: {where}"

        one()
        listing = http.get("/openai/v1/batches")
        assert listing.status_code == 200, listing.text  # nothing stored poisons a listing
        assert http.get("/openai/v1/files").status_code == 200
    print(f"\n{sum(statuses.values())} generated requests, by status: {dict(sorted(statuses.items()))}")
    assert sum(n for status, n in statuses.items() if status >= 400) > 100  # it does make bad requests
    assert statuses[200] > 20  # and good ones
