"""An OpenAI chat-completions request body as an irq job request: the one mapping, used by
`POST /openai/v1/chat/completions`, by the lines of an OpenAI batch file, and by OpenAI Batch API lines sent
to irq's own `POST /v1/batches`.

The messages' text becomes the prompt; `response_format` `json_schema` gives the schema (`json_object`: any
JSON object; `text` or none: irq's default IR schema); `max_completion_tokens` (or `max_tokens`),
`temperature`, `top_p` and `model` carry over. What irq cannot honour is refused, naming the parameter,
rather than silently ignored: streaming, more than one choice, tools and function calls, log-probabilities,
stop sequences, penalties and logit biases. Parameters that change nothing here (`user`, `metadata`,
`store`, `seed`, `service_tier`, …) are accepted.
"""

from __future__ import annotations

from typing import Any

from api.errors import ApiError

_CARRIED = {"max_completion_tokens": "max_tokens", "max_tokens": "max_tokens", "temperature": "temperature",
            "top_p": "top_p", "model": "model"}  # fmt: skip
_HARMLESS = {"messages", "response_format", "user", "metadata", "store", "seed", "service_tier",
             "parallel_tool_calls", "stream_options", "reasoning_effort", "verbosity"}  # fmt: skip
# Parameters accepted only at the value that asks for nothing irq does not do.
_NEUTRAL: dict[str, tuple[object, ...]] = {
    "stream": (False, None),
    "n": (1, None),
    "logprobs": (False, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "stop": (None, [], ""),
    "logit_bias": (None, {}),
    "top_logprobs": (None, 0),
}


def _refuse(param: str, message: str) -> ApiError:
    return ApiError(400, "unsupported_parameter", message, param=param)


def _text(content: object) -> str:
    """A message's content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    if content is None:
        return ""
    raise _refuse("messages", "a message's `content` must be a string or a list of content parts")


def _schema(response_format: object) -> dict[str, Any] | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise _refuse("response_format", "`response_format` must be an object")
    kind = response_format.get("type")
    if kind == "json_schema":
        json_schema = response_format.get("json_schema")
        if not isinstance(json_schema, dict) or not isinstance(json_schema.get("schema"), dict):
            raise _refuse("response_format.json_schema", "`json_schema.schema` must be a JSON Schema object")
        return dict(json_schema["schema"])
    if kind == "json_object":
        return {"type": "object"}
    if kind in ("text", None):
        return None
    raise _refuse("response_format.type", f"`response_format.type` {kind!r} is not supported")


def job_fields(body: object) -> dict[str, Any]:
    """The `JobRequest` fields of a chat-completions body; `ApiError` 400 naming what irq cannot do."""
    if not isinstance(body, dict):
        raise _refuse("body", "the request body must be a JSON object")
    for key, value in body.items():
        if key in _NEUTRAL:
            if value not in _NEUTRAL[key]:
                raise _refuse(key, f"`{key}` = {value!r} is not supported by this service")
        elif key not in _CARRIED and key not in _HARMLESS:
            message = f"Unrecognized request argument supplied: {key}"
            raise ApiError(400, "unknown_parameter", message, param=key)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _refuse("messages", "`messages` must be a non-empty list of messages")
    if not all(isinstance(m, dict) for m in messages):
        raise _refuse("messages", "each message must be an object with `role` and `content`")
    prompt = "\n\n".join(t for t in (_text(m.get("content")).strip() for m in messages) if t)
    fields: dict[str, Any] = {"prompt": prompt}
    schema = _schema(body.get("response_format"))
    if schema is not None:
        fields["schema"] = schema
    for theirs, ours in _CARRIED.items():
        if body.get(theirs) is not None:
            fields[ours] = body[theirs]
    return fields
