"""A job whose prompt cannot fit the model's context is refused at submit, naming the sizes, where the
endpoint registry declares the context length; nothing is stored or queued."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from api.errors import submission_status
from irq.endpoints import Endpoint, Registry
from irq.prompting import least_prompt_tokens
from irq.settings import Settings
from irq.submission.errors import SubmissionError
from irq.submission.rules import JobRequest, to_new_job
from tests.support import start_stack, stop_stack, write_registry

pytestmark = pytest.mark.timeout(300)

CONTEXT = 1024
# A Kubernetes-like schema: many described fields, whose outline the engine puts in the prompt.
WIDE = {
    "type": "object",
    "properties": {
        f"field_{i}": {
            "type": "string",
            "description": f"What field {i} of the resource holds, in detail. " * 3,
        }
        for i in range(50)
    },
}


def registry(max_model_len: int | None) -> Registry:
    endpoint = Endpoint(name="e", url="http://127.0.0.1:1/generate", model="m", max_model_len=max_model_len)
    return Registry(endpoints=[endpoint])


def test_the_refusal_names_the_prompt_the_budget_and_the_context() -> None:
    body = JobRequest.model_validate({"prompt": "Describe a pod", "schema": WIDE, "max_tokens": 512})
    with pytest.raises(SubmissionError) as refused:
        to_new_job(body, Settings(), registry(CONTEXT), None)
    assert submission_status(refused.value) == 422 and refused.value.code == "prompt_too_long"
    least = least_prompt_tokens("Describe a pod", WIDE)
    assert least + 512 > CONTEXT
    assert f"at least {least} tokens" in str(refused.value) and "max_tokens 512" in str(refused.value)
    assert f"{CONTEXT} tokens" in str(refused.value)


def test_what_fits_or_an_unknown_context_is_accepted() -> None:
    small = JobRequest.model_validate(
        {"prompt": "Describe a pod", "schema": {"type": "object"}, "max_tokens": 512}
    )
    assert to_new_job(small, Settings(), registry(CONTEXT), None).max_tokens == 512
    wide = JobRequest.model_validate({"prompt": "Describe a pod", "schema": WIDE, "max_tokens": 512})
    assert to_new_job(wide, Settings(), registry(None), None).schema == WIDE


def test_the_api_refuses_it_and_stores_nothing(sqlite_url: str, redis_url: str, tmp_path: Path) -> None:
    entry = dict(name="small", url="http://127.0.0.1:1/generate", model="m", max_model_len=CONTEXT)
    file = write_registry(tmp_path / "endpoints.toml", entry)
    stack = start_stack(
        sqlite_url, redis_url, None, tmp_path, env={"IRQ_ENDPOINTS_FILE": str(file)}, worker=False
    )
    try:
        with stack.client() as http:
            refused = http.post(
                "/v1/jobs", json={"prompt": "Describe a pod", "schema": WIDE, "max_tokens": 512}
            )
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "prompt_too_long" and f"{CONTEXT} tokens" in error["message"]
        with stack.db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == 0
        assert stack.queue_length() == 0
    finally:
        stop_stack(stack)
