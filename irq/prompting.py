"""The chat messages an engine sends for a job: the function description, and the schema as a field outline.

A field outline (`- signature.name (string): the function's name`) tells a model what each field is for in
a few tokens; the raw JSON Schema costs several times more prompt and invites small models to copy its
keywords (`maxLength`, `type`) into the output. The grammar, not the prompt, guarantees the structure.
"""

from __future__ import annotations

import json
from typing import Any

MAX_OUTLINE_LINES = 60
MAX_DEPTH = 6
# The most characters of these messages a token has held with SmolLM2's tokenizer: 4.43 over the 100
# JSONSchemaBench schemas and the IR schema with four prompts each (chat template included), so a prompt
# of N characters takes at least N / 5 tokens.
PROMPT_CHARS_PER_TOKEN = 5

SYSTEM_PROMPT = (
    "You turn the user's message into a JSON document. Reply with only the JSON, filling each field "
    "with content taken from the message, short and specific, without repeating items.\n{outline}"
)


def messages(prompt: str, schema: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT.format(outline=outline(schema))},
        {"role": "user", "content": prompt},
    ]


def prompt_chars(prompt: str, schema: dict[str, Any]) -> int:
    """The characters of the messages an engine sends for this prompt and schema."""
    return sum(len(message["content"]) for message in messages(prompt, schema))


def least_prompt_tokens(prompt: str, schema: dict[str, Any]) -> int:
    """A lower bound on the tokens of those messages, for a check without the model's tokenizer."""
    return -(-prompt_chars(prompt, schema) // PROMPT_CHARS_PER_TOKEN)


def outline(schema: dict[str, Any]) -> str:
    """A short, human-readable list of the fields `schema` asks for."""
    lines: list[str] = []
    _walk(schema, schema, "", lines, 0)
    if not lines:
        return f"The document is {_kind(_resolve(schema, schema))}."
    if len(lines) > MAX_OUTLINE_LINES:
        lines = lines[:MAX_OUTLINE_LINES] + ["- …"]
    return "Fields:\n" + "\n".join(lines)


def _resolve(node: Any, root: dict[str, Any]) -> dict[str, Any]:
    """Follow local `$ref`s (`#/$defs/X`, `#/definitions/X`); anything else is returned as it is."""
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            target = target.get(key, {}) if isinstance(target, dict) else {}
        node, seen = target, seen + 1
        if seen > 20:
            break
    return node if isinstance(node, dict) else {}


def _kind(node: dict[str, Any]) -> str:
    if "enum" in node:
        return "one of " + ", ".join(json.dumps(v) for v in node["enum"][:12])
    if "const" in node:
        return f"always {json.dumps(node['const'])}"
    kind = node.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if kind == "array":
        limit = f", at most {node['maxItems']}" if "maxItems" in node else ""
        return f"list{limit}"
    if kind:
        return str(kind)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return " or ".join(_kind(n) for n in node[key] if isinstance(n, dict)) or "any"
    return "object" if "properties" in node else "any"


def _walk(node: Any, root: dict[str, Any], path: str, lines: list[str], depth: int) -> None:
    node = _resolve(node, root)
    if depth > MAX_DEPTH or len(lines) > MAX_OUTLINE_LINES:
        return
    properties = node.get("properties")
    if isinstance(properties, dict):
        required = set(node.get("required", []))
        for name, child in properties.items():
            child = _resolve(child, root)
            field = f"{path}.{name}" if path else name
            text = child.get("description") or child.get("title") or ""
            optional = "" if name in required else ", optional"
            lines.append(f"- {field} ({_kind(child)}{optional})" + (f": {text}" if text else ""))
            items = _resolve(child.get("items"), root)
            _walk(child, root, field, lines, depth + 1)
            if items:
                _walk(items, root, field + "[]", lines, depth + 1)
