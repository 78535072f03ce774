"""Engine failures classified by what another attempt would do: the service's codes for them, and the
worker's fault for each answer, whichever status carries it."""

from __future__ import annotations

import json
from typing import Any

import llguidance
import pytest
from fastapi.testclient import TestClient
from llguidance import LLMatcher

from inference.engines.base import Engine, EngineResult, GrammarFailure, PromptTooLong, SchemaRejected
from inference.errors import PermanentInferenceError, RetryableInferenceError, fault_for_status
from inference.protocol import GenerateRequest
from inference.service import create_app
from irq.settings import Settings

# As vLLM's guidance backend logged it on the H100, and as vLLM's server words a prompt past the context.
FORCED_BYTES = (
    'LLMatcher error: Parser Error: token "\u0120data" doesn\'t satisfy the grammar; '
    "forced bytes: got ' '; applying '\u00c4'"
)
CONTEXT = (
    "This model's maximum context length is 4096 tokens. However, your request has 4433 input tokens. "
    "Please reduce the length of the input messages."
)
BODY = {"prompt": "p", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}


class ScriptedEngine(Engine):
    """Answers each request with the outcome its prompt names."""

    model_name, gpu, backend = "m", "none", "guidance"
    loaded = True

    async def load(self) -> None:
        return None

    async def generate(self, request: GenerateRequest) -> EngineResult:
        if request.prompt == "grammar":
            raise GrammarFailure("vLLM's guidance backend refused a generated token after 30 tokens")
        if request.prompt == "long":
            raise PromptTooLong(4433, 512, 4096)
        if request.prompt == "long at submit":  # vLLM's own check, raised as the schema's rejection
            raise SchemaRejected("The decoder prompt (length 4433) is longer than the maximum model length")
        if request.prompt == "logged":  # a failure whose words are all the engine gives
            raise RuntimeError(FORCED_BYTES)
        # A raw tab inside a string, as vLLM's detokenized text has held one.
        return EngineResult('{"a": "x\ty"}', "stop", 3, 5, 1.0, 2.0, "guidance")


@pytest.fixture(scope="module")
def service() -> TestClient:
    return TestClient(create_app(ScriptedEngine(), Settings(engine="simulated")))


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        ("grammar", "grammar_error"),
        ("logged", "grammar_error"),
        ("long", "prompt_too_long"),
        ("long at submit", "prompt_too_long"),
    ],
)
def test_a_failure_that_would_happen_again_is_a_4xx_with_its_own_code(
    service: TestClient, prompt: str, code: str
) -> None:
    response = service.post("/generate", json={**BODY, "prompt": prompt})
    assert response.status_code == 422 and response.json()["code"] == code, response.text
    fault = fault_for_status(response.status_code, code, response.json()["message"])
    assert isinstance(fault, PermanentInferenceError) and not fault.retryable


def test_the_prompt_too_long_message_names_the_sizes(service: TestClient) -> None:
    message = service.post("/generate", json={**BODY, "prompt": "long"}).json()["message"]
    assert all(size in message for size in ("4433", "512", "4096"))


def test_a_raw_control_character_inside_a_string_is_read_as_the_character(service: TestClient) -> None:
    response = service.post("/generate", json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == {"a": "x\ty"}


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (500, "engine_error", f"EngineRequestFailed: {FORCED_BYTES}", "grammar_error"),
        (422, "schema_unsupported", CONTEXT, "prompt_too_long"),
        (500, "engine_error", "RuntimeError: CUDA out of memory", None),
    ],
)
def test_the_worker_reads_what_an_answer_says_would_happen_again(
    status: int, code: str, message: str, expected: str | None
) -> None:
    """Also from a service that answers such failures 500 or as a schema problem (older deployments)."""
    fault = fault_for_status(status, code, message)
    if expected is None:
        assert isinstance(fault, RetryableInferenceError) and fault.code == code
    else:
        assert isinstance(fault, PermanentInferenceError) and fault.code == expected


def test_the_grammar_itself_refuses_a_raw_control_character_inside_a_string() -> None:
    """The raw tab of an invalid_output did not come from the grammar: llguidance's JSON strings refuse
    it byte for byte (and accept its escape), so the character came from the engine's detokenized text."""
    tokenizer = llguidance.LLTokenizer("byte")
    grammar = LLMatcher.grammar_from_json_schema(json.dumps(BODY["schema"]), defaults={})

    def consumed(text: str) -> tuple[int, int]:
        tokens: list[Any] = tokenizer.tokenize_str(text)
        return LLMatcher(tokenizer, grammar).try_consume_tokens(tokens), len(tokens)

    taken, total = consumed('{"a": "x\ty"}')
    assert taken == len('{"a": "x') < total
    taken, total = consumed('{"a": "x\\ty"}')
    assert taken == total
