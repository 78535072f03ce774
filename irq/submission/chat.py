"""An OpenAI chat-completions request body as an irq job request (`irq/submission/rules.py`): the one
mapping, used by `POST /openai/v1/chat/completions`, by the lines of an OpenAI batch file, and by OpenAI
Batch API lines sent to irq's own `POST /v1/batches` (`irq/submission/lines.py`).

The messages' text becomes the prompt, and the request says what is generated (`irq/replies.py`):
- a forced call of one function, `tools` with `tool_choice` naming it (or `"required"` with one tool), or
  the legacy `functions` with `function_call` naming it: a document under the function's `parameters`,
  answered as the call's arguments;
- else `response_format` `json_schema` (its schema) or `json_object` (any JSON object): the document;
- else (`text`, or none): plain text, generated as a JSON string. irq's own `POST /v1/batches` keeps its
  default there, the IR schema, as for its own job requests.
Tools offered without forcing one (`tool_choice` `auto` or unset) are never called: the answer is text (or
under `response_format`), as a model that chose to call no tool answers.

`max_completion_tokens` (or `max_tokens`), `temperature`, `top_p` and `model` carry over. What irq cannot
honour is refused, naming the parameter, rather than silently ignored: more than one choice,
log-probabilities, stop sequences, penalties and logit biases (and streaming, where the caller cannot
stream: a batch line). Parameters that change nothing here (`user`, `metadata`, `store`, `seed`,
`service_tier`, …) are accepted.
"""

from __future__ import annotations

import re
from typing import Any

from irq.error_codes import ErrorCode
from irq.replies import TEXT_SCHEMA, ReplyKind, call_schema
from irq.submission.errors import MalformedRequest

_CARRIED = {"max_completion_tokens": "max_tokens", "max_tokens": "max_tokens", "temperature": "temperature",
            "top_p": "top_p", "model": "model"}  # fmt: skip
_HARMLESS = {"messages", "response_format", "user", "metadata", "store", "seed", "service_tier",
             "parallel_tool_calls", "stream_options", "reasoning_effort", "verbosity", "prompt_cache_key",
             "safety_identifier", "tools", "tool_choice", "functions", "function_call"}  # fmt: skip
# Parameters accepted only at the value that asks for nothing irq does not do.
_NEUTRAL: dict[str, tuple[object, ...]] = {
    "stream": (False, None),
    "n": (1, None),
    "logprobs": (False, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "stop": (None, [], ""),
    "logit_bias": (None, {}),
    "top_logprobs": (None, 0),
}
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A function declared without `parameters` takes none.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def _refuse(param: str, message: str) -> MalformedRequest:
    return MalformedRequest(ErrorCode.unsupported_parameter, message, param)


def _invalid(param: str, message: str) -> MalformedRequest:
    return MalformedRequest(ErrorCode.invalid_request, message, param)


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


def _message_text(message: dict[str, Any]) -> str:
    """What a message says: its content, and the arguments of the calls an assistant message made (a client
    that asks again after a call it could not use sends that call back)."""
    parts = [_text(message.get("content")).strip()]
    calls = message.get("tool_calls")
    legacy = message.get("function_call")
    for call in [*(calls if isinstance(calls, list) else []), {"function": legacy}]:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            parts.append(function["arguments"].strip())
    return "\n".join(p for p in parts if p)


def _prompt(messages: object) -> str:
    if not isinstance(messages, list) or not messages:
        raise _refuse("messages", "`messages` must be a non-empty list of messages")
    if not all(isinstance(m, dict) for m in messages):
        raise _refuse("messages", "each message must be an object with `role` and `content`")
    return "\n\n".join(t for t in (_message_text(m) for m in messages) if t)


def _schema(response_format: object, plain_text: bool) -> dict[str, Any] | None:
    if response_format is None:
        return dict(TEXT_SCHEMA) if plain_text else None
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
        return dict(TEXT_SCHEMA) if plain_text else None
    raise _refuse("response_format.type", f"`response_format.type` {kind!r} is not supported")


def _function(definition: object, where: str) -> tuple[str, dict[str, Any]]:
    """A function definition's name and parameters schema."""
    if not isinstance(definition, dict):
        raise _invalid(where, f"`{where}` must be an object with `name` and `parameters`")
    name = definition.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.fullmatch(name):
        message = f"`{where}.name` must be 1 to 64 letters, digits, underscores or dashes"
        raise _invalid(f"{where}.name", message)
    parameters = definition.get("parameters", _NO_PARAMETERS)
    if not isinstance(parameters, dict):
        raise _invalid(f"{where}.parameters", f"`{where}.parameters` must be a JSON Schema object")
    return name, dict(parameters)


def _functions(body: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """The functions offered, by name, in `tools` or (key `functions`) the legacy `functions`."""
    offered = body.get(key) or []
    if not isinstance(offered, list):
        raise _invalid(key, f"`{key}` must be a list")
    found: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(offered):
        where = f"{key}[{i}]"
        if key == "tools":
            if not isinstance(item, dict) or item.get("type") != "function":
                raise _refuse(f"{where}.type", "only tools of type `function` are supported")
            item, where = item.get("function"), where + ".function"
        name, parameters = _function(item, where)
        found[name] = parameters
    return found


def _forced_name(choice: object, key: str, offered: dict[str, dict[str, Any]]) -> str | None:
    """The function a `tool_choice` (or legacy `function_call`) forces; None when it forces none."""
    param = "tool_choice" if key == "tools" else "function_call"
    if choice in (None, "auto", "none"):
        return None
    if not offered:
        raise _invalid(param, f"`{param}` forces a call, but `{key}` offers no function")
    if choice == "required" and key == "tools":
        if len(offered) != 1:
            message = (
                f"`tool_choice: required` with {len(offered)} tools: irq makes one forced call; name its "
                'function: `{"type": "function", "function": {"name": ...}}`'
            )
            raise _refuse(param, message)
        return next(iter(offered))
    named = choice  # the legacy `{"name": ...}`, or within `{"type": "function", "function": {...}}`
    if key == "tools":
        function = isinstance(choice, dict) and choice.get("type") == "function"
        named = choice.get("function") if function and isinstance(choice, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    if not isinstance(name, str):
        shapes = (
            '`none`, `auto`, `required` or `{"type": "function", "function": {"name": ...}}`'
            if key == "tools"
            else '`none`, `auto` or `{"name": ...}`'
        )
        raise _refuse(param, f"`{param}` must be {shapes}")
    if name not in offered:
        raise _invalid(param, f"`{param}` names {name!r}, which `{key}` does not offer")
    return name


def _forced_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The schema of the call the request forces, or None when it forces none."""
    legacy = body.get("functions") is not None or body.get("function_call") is not None
    if legacy and (body.get("tools") is not None or body.get("tool_choice") is not None):
        raise _invalid("functions", "send `tools` and `tool_choice`, or the legacy `functions` and "
                       "`function_call`, not both")  # fmt: skip
    key = "functions" if legacy else "tools"
    offered = _functions(body, key)
    name = _forced_name(body.get("function_call" if legacy else "tool_choice"), key, offered)
    if name is None:
        return None
    kind = ReplyKind.function_call if legacy else ReplyKind.tool_call
    return call_schema(offered[name], name, kind)


def job_fields(body: object, *, stream_ok: bool = False, plain_text: bool = True) -> dict[str, Any]:
    """The `JobRequest` fields of a chat-completions body; `MalformedRequest` naming what irq cannot do.

    `stream_ok`: the caller answers `stream: true` (the chat endpoint; a batch line cannot stream).
    `plain_text`: a request without `response_format` is answered in plain text (else: no schema, irq's
    default)."""
    if not isinstance(body, dict):
        raise _refuse("body", "the request body must be a JSON object")
    for key, value in body.items():
        if key == "stream" and stream_ok:
            if not isinstance(value, bool | None):
                raise _invalid("stream", "`stream` must be true or false")
        elif key in _NEUTRAL:
            if value not in _NEUTRAL[key]:
                raise _refuse(key, f"`{key}` = {value!r} is not supported by this service")
        elif key not in _CARRIED and key not in _HARMLESS:
            message = f"Unrecognized request argument supplied: {key}"
            raise MalformedRequest(ErrorCode.unknown_parameter, message, key)
    fields: dict[str, Any] = {"prompt": _prompt(body.get("messages"))}
    schema = _schema(body.get("response_format"), plain_text)
    schema = _forced_call(body) or schema
    if schema is not None:
        fields["schema"] = schema
    for theirs, ours in _CARRIED.items():
        if body.get(theirs) is not None:
            fields[ours] = body[theirs]
    return fields
