"""Whatever fails on the worker's path ends the job: a reply the worker cannot decode, a store that refuses
the write, a schema that cannot be checked. And checking a document never reaches the network."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from irq.broker import Broker
from irq.jobs import JobManager
from irq.keys import authenticate
from irq.settings import Settings
from irq.store.models import TERMINAL
from irq.submission import NewJob
from tests.procs import free_port, wait_until
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)

FAST = {"IRQ_MAX_ATTEMPTS": "2", "IRQ_RETRY_BACKOFF_S": "0.1", "IRQ_RETRY_BACKOFF_MAX_S": "0.2"}


class Listener:
    """A TCP port that counts the connections made to it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", self.port))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def inference(tmp_path: Path) -> Iterator[FaultService]:
    service = start_fault_service(tmp_path)
    yield service
    service.service.stop()


def place(stack: Stack, prompt: str, schema: dict[str, object]) -> str:
    """A job stored and enqueued as the lifecycle does, with a schema the API's check would refuse today
    (as an older API, or a direct caller, could have let through)."""
    owner = authenticate(stack.db, stack.key)
    assert owner is not None
    settings = Settings(redis_url=stack.env["IRQ_REDIS_URL"], max_attempts=2)
    broker = Broker(settings)
    new = NewJob(
        prompt, schema, settings.default_model, "guidance", 64, 0.3, 0.95, 5, 60.0, settings.max_attempts
    )
    job, _ = JobManager.open(settings, stack.db, broker).submit(owner.key_id, new)
    broker.close()
    return job.id


def test_every_job_ends_whatever_fails_on_the_workers_path(
    postgres_url: str, redis_url: str, inference: FaultService, tmp_path: Path
) -> None:
    listener = Listener()
    stack = start_stack(postgres_url, redis_url, inference.url, tmp_path, env=FAST)
    try:
        with stack.client() as http:

            def submit(prompt: str) -> str:
                response = http.post("/v1/jobs", json={"prompt": prompt, "schema": {"type": "object"}})
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

            expected = {
                # result decoding: a JSON text nested past the decoder's depth
                submit("a reply nested too deep [faults: deep, deep]"): ("internal_error", 2),
                # store write: PostgreSQL refuses the NUL in the text of a truncated generation
                submit("a reply with a NUL [faults: nul, nul]"): ("internal_error", 2),
                # validation: references that loop without end, and one that points outside the schema
                place(
                    stack,
                    "a schema that loops [faults: five]",
                    {
                        "$defs": {"a": {"$ref": "#/$defs/a"}},
                        "anyOf": [{"$ref": "#/$defs/a"}, {"type": "integer"}],
                    },
                ): ("schema_unsupported", 1),
                place(
                    stack,
                    "a schema with a remote reference [faults: five]",
                    {"$ref": f"http://127.0.0.1:{listener.port}/schema.json"},
                ): ("schema_unsupported", 1),
            }

            def ended() -> list[dict[str, object]] | None:
                jobs = [http.get(f"/v1/jobs/{job_id}").json() for job_id in expected]
                return jobs if all(job["status"] in TERMINAL for job in jobs) else None

            jobs = wait_until(ended, 90, "every job to end", interval_s=0.5)
        assert isinstance(jobs, list)
        got = {job["id"]: (job["error"]["code"], job["attempts"]) for job in jobs}
        assert [job["status"] for job in jobs] == ["failed"] * 4
        assert got == expected
        calls = inference.calls()
        assert calls["a reply nested too deep [faults: deep, deep]"] == 2  # attempts respected
        assert listener.connections == 0  # the remote reference was never fetched
        worker_log = Path(str(stack.services[-1].log_path)).read_text()
        assert worker_log.count("unexpected RecursionError") == 2  # each unexpected fault is logged
    finally:
        stop_stack(stack)
        listener.close()


def test_a_truncated_job_runs_once_more_bounded_unless_told_not_to(
    sqlite_url: str, redis_url: str, inference: FaultService, tmp_path: Path
) -> None:
    """A document cut at max_tokens, on a schema with an unbounded string and free extra properties: the
    job runs again under the schema bounded to its token budget (where a loop is not stopped early: the
    document closes within the budget), and the record says so; a job that asks
    for no such retry fails `output_truncated` and keeps what was generated; so does a job whose document
    does not match its schema."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=FAST)
    try:
        with stack.client() as http:
            retried = "a truncated job [faults: truncated, object]"
            kept = "a truncated job that may not retry [faults: truncated, object]"
            ids = []
            for prompt, fields in ((retried, {}), (kept, {"retry_truncated": False})):
                body = {"prompt": prompt, "schema": schema, "max_tokens": 64, **fields}
                response = http.post("/v1/jobs", json=body)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            mismatch = {
                "prompt": "a document of the wrong shape [faults: object]",
                "schema": {"required": ["b"]},
            }
            response = http.post("/v1/jobs", json=mismatch)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
            first, second, third = (stack.wait_for(http, job_id, 60) for job_id in ids)
        assert first["status"] == "succeeded" and first["bounded"] is True and first["attempts"] == 2
        assert first["result"] == {"a": "x"}
        sent = inference.schemas()[retried]
        assert sent[0]["properties"] == schema["properties"]  # the user's schema first
        bounded = sent[1]
        assert bounded["additionalProperties"] is False and 0 < bounded["properties"]["a"]["maxLength"] < 256
        # A loop is stopped in the first attempt, not in the bounded one: that document closes in its budget.
        assert httpx.get(inference.base + "/stop-loops", timeout=10).json()[retried] == [True, False]

        assert second["status"] == "failed" and second["error"]["code"] == "output_truncated"
        assert second["attempts"] == 1 and second["bounded"] is False and second["retry_truncated"] is False
        assert second["finish_reason"] == "length" and second["output_text"] == '{"a": "xxxxxxxx'
        assert second["usage"] == {"prompt_tokens": 9, "completion_tokens": 5}

        # A document that does not match: kept as the result, with why, how it stopped and its tokens.
        assert third["status"] == "failed" and third["error"]["code"] == "schema_mismatch"
        assert third["result"] == {"a": "x"} and "'b' is a required property" in third["validation_error"]
        assert third["finish_reason"] == "stop" and third["usage"]["completion_tokens"] == 3
        assert third["output_text"] is None
    finally:
        stop_stack(stack)


def test_a_hollow_document_is_no_success(
    sqlite_url: str, redis_url: str, inference: FaultService, tmp_path: Path
) -> None:
    """An open object (`{"type": "object"}`, OpenAI's `json_object`) answered with `{}`: the job runs again
    under its bounded schema, which keeps room for properties and refuses `{}` at the root; a bounded
    attempt that still answers an empty shell fails `hollow_output`, with what it generated."""
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=FAST)
    try:
        with stack.client() as http:
            recovered = "Describe a person as JSON [faults: empty, object]"
            hollow = "Describe a person as JSON, cut [faults: truncated, empty]"
            ids = []
            for prompt in (recovered, hollow):
                body = {"prompt": prompt, "schema": {"type": "object"}, "max_tokens": 12}
                response = http.post("/v1/jobs", json=body)
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            first, second = (stack.wait_for(http, job_id, 60) for job_id in ids)
        assert first["status"] == "succeeded" and first["result"] == {"a": "x"}
        assert first["attempts"] == 2 and first["bounded"] is True
        bounded = inference.schemas()[recovered][1]
        assert bounded["minProperties"] == 1 and bounded["additionalProperties"] is False
        assert bounded["patternProperties"] and bounded["maxProperties"] >= 1

        assert second["status"] == "failed" and second["error"]["code"] == "hollow_output"
        assert second["attempts"] == 2 and second["bounded"] is True
        assert second["result"] is None and second["output_text"] == "{}"
    finally:
        stop_stack(stack)


CARD_OR_BANK = {
    "$defs": {
        "card": {"type": "object", "properties": {"number": {"type": "string"}}, "required": ["number"]},
        "bank": {
            "type": "object",
            "properties": {"iban": {"type": "string"}, "number": {"type": "string"}},
            "required": ["iban"],
        },
    },
    "oneOf": [{"$ref": "#/$defs/card"}, {"$ref": "#/$defs/bank"}],
}


def test_a_document_the_lenient_grammar_let_through_runs_again_under_one_branch(
    sqlite_url: str, redis_url: str, inference: FaultService, tmp_path: Path
) -> None:
    """The lenient grammar reads `oneOf` as `anyOf`: a document that matches both branches is generated once
    more, in the same attempt, under the schema narrowed to the branch that excludes the other, and the job
    succeeds; where the second document fails too, the job fails `schema_mismatch` after one attempt."""
    stack = start_stack(sqlite_url, redis_url, inference.url, tmp_path, env=FAST)
    try:
        with stack.client() as http:
            recovered = "Pay by card or bank [faults: two_branches, one_branch]"
            stubborn = "Pay by card or bank, again [faults: two_branches, two_branches]"
            ids = []
            for prompt in (recovered, stubborn):
                response = http.post("/v1/jobs", json={"prompt": prompt, "schema": CARD_OR_BANK})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            first, second = (stack.wait_for(http, job_id, 60) for job_id in ids)
        assert first["status"] == "succeeded" and first["result"] == {"number": "4111"}
        assert first["attempts"] == 1
        sent = inference.schemas()[recovered]
        assert "oneOf" in sent[0] and "oneOf" not in sent[1]
        assert sent[1]["allOf"][0]["additionalProperties"] is False and sent[1]["allOf"][0]["required"] == [
            "number"
        ]

        assert second["status"] == "failed" and second["error"]["code"] == "schema_mismatch"
        assert second["attempts"] == 1 and inference.calls()[stubborn] == 2
    finally:
        stop_stack(stack)
