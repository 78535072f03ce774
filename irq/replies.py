"""What an OpenAI chat request asked the answer to be, kept in its job's schema: a JSON document (the
default), plain text, or a forced call of one function (a tool call, or the legacy `function_call`).

OpenAI's chat completions answer plain text, or a tool call, where irq's jobs generate a JSON document under
a schema. Plain text is generated as a JSON string (`TEXT_SCHEMA`) whose value becomes the message's
content; a forced call is generated under the function's `parameters` and becomes the call's `arguments`.
Which of them a job is, and the function's name, travel in the schema's top-level `x-irq-reply` annotation,
so that every answer made from the stored job (the chat completion, a batch's output file) has the shape the
request asked for. JSON Schema ignores keywords it does not know, and so do llguidance, xgrammar and
`jsonschema`: the annotation changes nothing a model generates or the worker checks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

X_REPLY = "x-irq-reply"


class ReplyKind(enum.StrEnum):
    document = "document"  # the JSON document, as the message's content
    text = "text"  # a JSON string's value, as the message's content
    tool_call = "tool_call"  # the document as `tool_calls[0].function.arguments`
    function_call = "function_call"  # the legacy `functions` API: `function_call.arguments`


TEXT_SCHEMA: dict[str, Any] = {"type": "string", X_REPLY: {"kind": ReplyKind.text.value}}


@dataclass(frozen=True)
class Reply:
    kind: ReplyKind
    name: str = ""  # the function's, for a call


def call_schema(parameters: dict[str, Any], name: str, kind: ReplyKind) -> dict[str, Any]:
    """The schema of a forced call of `name`: its parameters, marked with the kind of call and the name."""
    return {**parameters, X_REPLY: {"kind": kind.value, "name": name}}


def reply_of(schema: dict[str, Any] | None) -> Reply:
    """How a job's document is answered, read from its schema's annotation (none: as a document)."""
    mark = schema.get(X_REPLY) if isinstance(schema, dict) else None
    if not isinstance(mark, dict):
        return Reply(ReplyKind.document)
    try:
        kind = ReplyKind(str(mark.get("kind")))
    except ValueError:
        return Reply(ReplyKind.document)
    name = mark.get("name")
    return Reply(kind, name if isinstance(name, str) else "")
