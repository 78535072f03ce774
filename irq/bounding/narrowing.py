"""One branch for a `oneOf` that the lenient grammar read as `anyOf`.

llguidance 1.7 compiles `oneOf` only as `anyOf` (`coerce_one_of`, which `lenient` implies; strict, it refuses
every `oneOf`), so a document can match several branches of a `oneOf` and fail the schema. Generating
again under the same grammar would fail the same way; `one_of_narrowed` rewrites each `oneOf` that such a
document broke into the one branch that excludes the others once closed: a branch that, without extra
properties, cannot hold a property every other branch requires. Every instance of the result is an
instance of the original for those `oneOf`s. None when no `oneOf` was broken or none has such a branch.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
from referencing import Registry

from irq.bounding.schema import _Document, _list, _map, _types

_NO_RETRIEVAL: Registry[Any] = Registry()
# Keywords beside which closing a branch to its declared properties would change what it means.
_OPENING = frozenset(
    {"additionalProperties", "patternProperties", "allOf", "anyOf", "oneOf", "$ref", "dependencies",
     "dependentSchemas", "if", "unevaluatedProperties"}
)  # fmt: skip


def mentions_one_of(schema: Any) -> bool:
    """Whether `oneOf` appears anywhere in `schema` (a cheap test before validating again)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "oneOf" in node:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def one_of_narrowed(schema: dict[str, Any], document: Any) -> dict[str, Any] | None:
    """`schema` with each `oneOf` that `document` matched several branches of narrowed to one exclusive
    branch, closed; None when nothing could be narrowed."""
    narrowed = copy.deepcopy(schema)
    doc = _Document(narrowed)
    cls = jsonschema.validators.validator_for(narrowed, default=jsonschema.Draft202012Validator)
    try:
        errors = list(cls(narrowed, registry=_NO_RETRIEVAL).iter_errors(document))
    except Exception:  # a schema the worker's validator cannot use is not narrowed
        return None
    changed = False
    for error in errors:
        node = error.schema
        if error.validator != "oneOf" or not isinstance(node, dict) or "oneOf" not in node:
            continue
        branch = _exclusive_branch(_list(node, "oneOf"), doc)
        if branch is not None:
            del node["oneOf"]
            node["allOf"] = [*_list(node, "allOf"), branch]
            changed = True
    return narrowed if changed else None


def _exclusive_branch(branches: list[Any], doc: _Document) -> dict[str, Any] | None:
    """The first branch that, closed, no instance of another branch can match: each other branch requires a
    property it does not declare, or allows none of its types. Closed and copied."""
    resolved = [_resolved(branch, doc) for branch in branches]
    for index, branch in enumerate(resolved):
        if branch is None or not isinstance(branch.get("properties"), dict):
            continue
        if branch.keys() & _OPENING:
            continue  # closing it could refuse what these let it hold
        declared = set(_map(branch, "properties"))
        others = [other for i, other in enumerate(resolved) if i != index]
        if all(other is not None and _excluded(other, declared, branch) for other in others):
            return {**copy.deepcopy(branch), "additionalProperties": False}
    return None


def _excluded(other: dict[str, Any], declared: set[str], branch: dict[str, Any]) -> bool:
    required = {name for name in _list(other, "required") if isinstance(name, str)}
    if required - declared:
        return True
    return "type" in other and "type" in branch and not _types(other) & _types(branch)


def _resolved(branch: Any, doc: _Document) -> dict[str, Any] | None:
    """The branch, through one `$ref` (the keywords beside a `$ref` would be lost: then None)."""
    if not isinstance(branch, dict):
        return None
    if "$ref" in branch:
        if set(branch) - {"$ref", "description", "title"}:
            return None
        target = doc.resolve(branch["$ref"])
        return target if isinstance(target, dict) and "$ref" not in target else None
    return branch
