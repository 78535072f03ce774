"""The answer a chat completion makes from a job cut at `max_tokens` (unit level: the job as the store
returns it, no process): what was generated of the text or of the call's arguments, with `length`."""

from __future__ import annotations

from typing import Any

from api.openai.objects import answer
from irq.replies import TEXT_SCHEMA, ReplyKind, call_schema
from irq.store.models import Job


def test_a_plain_text_or_a_call_cut_at_max_tokens_answers_what_was_made_with_length() -> None:
    def cut(schema: dict[str, Any], text: str) -> Any:
        job = Job(status="failed", error_code="output_truncated", output_text=text, finish_reason="length")
        job.schema_ = schema
        return answer(job)

    for generated, content in (
        ('"Hello, wor', "Hello, wor"),
        ('"Tab\\u00', "Tab"),
        ('"a \\', "a "),
        ('"', ""),
    ):
        text = cut(TEXT_SCHEMA, generated)
        assert (text.content, text.call, text.finish_reason) == (content, None, "length")
    call = cut(call_schema({"type": "object"}, "Clamp", ReplyKind.tool_call), '{"function": "cl')
    assert call.message["tool_calls"][0]["function"] == {"name": "Clamp", "arguments": '{"function": "cl'}
    assert call.finish_reason == "length" and call.message["content"] is None
