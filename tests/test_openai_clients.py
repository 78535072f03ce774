"""Popular OpenAI clients in their default modes against irq's OpenAI-compatible API, over real HTTP to a real
API and worker: the official SDK's forced tool call, legacy function call, plain text and streaming;
instructor's default mode (`TOOLS`) and `MD_JSON`; LangChain's `invoke`, `stream` and
`with_structured_output`. The engine is the simulated one (tests/fault_service.py): it answers plain text
with a fixed sentence, and a prompt holding `[reply: NAME]` with the document a model would make under the
client's schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import instructor
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from inference.engines.simulated import TEXT
from tests.fault_service import CLAMP
from tests.support import FaultService, Stack, start_fault_service, start_stack, stop_stack

pytestmark = pytest.mark.timeout(300)
MODEL = "SmolLM2-135M-Instruct"


class Clamp(BaseModel):
    function: str
    low: int
    high: int


TOOL = openai.pydantic_function_tool(Clamp)  # {"type": "function", "function": {"name": "Clamp", …}}
FORCED: Any = {"type": "function", "function": {"name": "Clamp"}}


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def sdk(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.api + "/openai/v1", api_key=stack.key, max_retries=0)


def generated_under(service: FaultService, prompt: str) -> list[dict[str, Any]]:
    """The schemas the engine was given for `prompt`, without the annotations irq adds (`x-…`)."""
    return [{k: v for k, v in s.items() if not k.startswith("x-")} for s in service.schemas()[prompt]]


@pytest.fixture
def simulated(sqlite_url: str, redis_url: str, tmp_path: Path) -> Iterator[tuple[Stack, FaultService]]:
    service = start_fault_service(tmp_path)
    stack = start_stack(sqlite_url, redis_url, service.url, tmp_path, env={"IRQ_RATE_LIMIT_PER_S": "0"})
    yield stack, service
    stop_stack(stack)
    service.service.stop()


def test_a_forced_tool_call_is_answered_as_tool_calls(simulated: tuple[Stack, FaultService]) -> None:
    stack, service = simulated
    client = sdk(stack)
    prompt = "Clamp x to the range 0 to 10 [reply: clamp]"
    answer = client.chat.completions.create(
        model=MODEL, messages=user(prompt), tools=[TOOL], tool_choice=FORCED
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "Clamp" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == CLAMP
    # Generated under the function's parameters, and nothing else.
    assert generated_under(service, prompt) == [TOOL["function"]["parameters"]]

    # `required` with its one tool is the same call; the SDK's `parse` reads the arguments into the model.
    parsed = client.chat.completions.parse(
        model=MODEL, messages=user(prompt), tools=[TOOL], tool_choice="required"
    )
    assert (parsed.choices[0].message.tool_calls or [])[0].function.parsed_arguments == Clamp(**CLAMP)

    # The legacy functions API: `function_call` in the message.
    legacy = client.chat.completions.create(
        model=MODEL, messages=user(prompt), functions=[TOOL["function"]], function_call={"name": "Clamp"}
    )
    assert legacy.choices[0].finish_reason == "function_call"
    function_call = legacy.choices[0].message.function_call
    assert function_call is not None and function_call.name == "Clamp"
    assert json.loads(function_call.arguments) == CLAMP

    # Tools offered without forcing one: no call, the answer is text.
    unforced = client.chat.completions.create(model=MODEL, messages=user("Say hello"), tools=[TOOL])
    assert unforced.choices[0].message.tool_calls is None and unforced.choices[0].message.content == TEXT

    # What cannot be one forced call is refused, naming the parameter.
    other = {"type": "function", "function": {"name": "Other", "parameters": {"type": "object"}}}
    refusals: list[tuple[Any, Any, str]] = [
        ([TOOL, other], "required", "2 tools"),
        ([TOOL], {"type": "function", "function": {"name": "Nope"}}, "'Nope'"),
    ]
    for tools, choice_, problem in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(
                model=MODEL, messages=user(prompt), tools=tools, tool_choice=choice_
            )
        assert refused.value.param == "tool_choice" and problem in refused.value.message


def test_a_request_without_response_format_is_answered_in_plain_text(
    simulated: tuple[Stack, FaultService],
) -> None:
    stack, service = simulated
    answer = sdk(stack).chat.completions.create(model=MODEL, messages=user("Say hello"))
    assert answer.choices[0].message.content == TEXT and answer.choices[0].finish_reason == "stop"
    assert generated_under(service, "Say hello") == [{"type": "string"}]  # not irq's IR schema
    with stack.client() as http:  # the job holds the text as its document
        job = http.get(f"/v1/jobs/{answer.id.removeprefix('chatcmpl-')}").json()
    assert job["result"] == TEXT


def test_streaming_answers_in_openai_chunks(simulated: tuple[Stack, FaultService]) -> None:
    stack, _ = simulated
    client = sdk(stack)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=user("Say hello"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    )
    assert {c.id for c in chunks} == {chunks[0].id} and all(
        c.object == "chat.completion.chunk" for c in chunks
    )

    # The SDK's accumulating stream helper, over a forced tool call.
    with client.chat.completions.stream(
        model=MODEL, messages=user("Clamp to 0..10 [reply: clamp]"), tools=[TOOL], tool_choice=FORCED
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    assert (final.choices[0].message.tool_calls or [])[0].function.parsed_arguments == Clamp(**CLAMP)

    # On the wire: server-sent events, each a chunk, the last `[DONE]`.
    body = {"model": MODEL, "messages": user("Say hello"), "stream": True}
    with stack.client() as http:
        answer = http.post("/openai/v1/chat/completions", json=body)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in answer.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and all("usage" not in json.loads(e) for e in events[:-1])

    # A job that fails after the stream began ends it with an error event, which the SDK raises.
    with pytest.raises(openai.APIError) as failed:
        list(client.chat.completions.create(model=MODEL, messages=user("[faults: 400] refused"), stream=True))
    assert "failed: injected_400" in failed.value.message


def test_instructor_default_tools_mode_and_markdown_json(simulated: tuple[Stack, FaultService]) -> None:
    stack, service = simulated
    tools = instructor.from_openai(sdk(stack))  # instructor's default: Mode.TOOLS, a forced tool call
    prompt = "Clamp x to the range 0 to 10 [reply: clamp]"
    made = tools.chat.completions.create(model=MODEL, response_model=Clamp, messages=user(prompt))
    assert isinstance(made, Clamp) and made.model_dump() == CLAMP
    assert sorted(generated_under(service, prompt)[0]["required"]) == sorted(CLAMP)

    markdown = instructor.from_openai(sdk(stack), mode=instructor.Mode.MD_JSON)  # JSON inside a text answer
    made = markdown.chat.completions.create(
        model=MODEL, response_model=Clamp, messages=user("Clamp x to 0..10 [reply: clamp-markdown]")
    )
    assert isinstance(made, Clamp) and made.model_dump() == CLAMP


def test_langchain_invoke_stream_and_structured_output(simulated: tuple[Stack, FaultService]) -> None:
    stack, _ = simulated
    llm = ChatOpenAI(
        model=MODEL, base_url=stack.api + "/openai/v1", api_key=SecretStr(stack.key), max_retries=0
    )
    assert llm.invoke("Say hello").content == TEXT
    assert "".join(str(chunk.content) for chunk in llm.stream("Say hello")) == TEXT
    prompt = "Clamp x to the range 0 to 10 [reply: clamp]"
    assert llm.with_structured_output(Clamp, method="function_calling").invoke(prompt) == Clamp(**CLAMP)
    assert llm.with_structured_output(Clamp).invoke(prompt) == Clamp(**CLAMP)  # its default: json_schema


def test_errors_on_the_openai_surface_are_in_its_shape_and_name_the_problem(api_only: Stack) -> None:
    client = sdk(api_only)
    with pytest.raises(openai.APIStatusError) as too_large:
        client.chat.completions.create(model=MODEL, messages=user("x" * 1_100_000))
    assert too_large.value.status_code == 413 and too_large.value.code == "body_too_large"
    assert too_large.value.type == "invalid_request_error"

    broken = b'{"model": "m", "messages": [}'
    headers = {"Authorization": f"Bearer {api_only.key}", "Content-Type": "application/json"}
    openai_answer = httpx.post(api_only.api + "/openai/v1/chat/completions", content=broken, headers=headers)
    assert openai_answer.status_code == 400
    error = openai_answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] is None
    assert error["message"] == "the body is not valid JSON: Expecting value at line 1 column 29"
    native = httpx.post(api_only.api + "/v1/jobs", content=b'{"prompt": }', headers=headers)
    assert native.status_code == 422
    assert native.json() == {
        "error": {
            "code": "invalid_request",
            "message": "the body is not valid JSON: Expecting value at line 1 column 12",
        }
    }
