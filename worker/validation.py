"""The worker's check of a generated document against the job's schema, with `jsonschema`.

The validator resolves references only inside the schema itself: an empty `referencing.Registry` never
retrieves a remote `$ref` (jsonschema's default would fetch `http://…` references over the network).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from jsonschema.exceptions import _WrappedReferencingError
from referencing import Registry
from referencing.exceptions import Unresolvable

from inference.errors import PartialOutput
from irq.error_codes import ErrorCode

_NO_RETRIEVAL: Registry[Any] = Registry()


class Uncheckable(Exception):
    """The schema cannot be checked against any document: it refers to what is not in it, or its
    references loop without end. A permanent fault of the job's schema."""

    code = ErrorCode.schema_unsupported
    retryable = False
    output = None


class HollowDocument(Exception):
    """A valid document with no content where the schema has room for some (`irq.bounding.hollow`): `{}`,
    `[]`, only empty containers. Not a success; the retry policy runs the job once more under its bounded
    schema (whose root cannot be empty) when it may, and fails it with this code otherwise."""

    code = ErrorCode.hollow_output
    retryable = False

    def __init__(self, document: Any, output: PartialOutput) -> None:
        super().__init__(
            f"the document is an empty shell ({json.dumps(document)[:100]}) where the schema allows content"
        )
        self.output = output


def validation_error(document: Any, schema: dict[str, Any]) -> str | None:
    """Why `document` does not match `schema` (the most relevant error, with its path), or None."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        error = jsonschema.exceptions.best_match(cls(schema, registry=_NO_RETRIEVAL).iter_errors(document))
    except (Unresolvable, _WrappedReferencingError) as exc:
        raise Uncheckable(f"the schema has a reference that is not inside it: {str(exc)[:200]}") from None
    except RecursionError:
        raise Uncheckable("the schema's references loop without end") from None
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"


def checked_document(text: Any, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The generated document and its validation error; a JSON string is decoded when that makes it valid."""
    error = validation_error(text, schema)
    if error is not None and isinstance(text, str):
        try:
            decoded = json.loads(text)
        except ValueError:
            return text, error
        if validation_error(decoded, schema) is None:
            return decoded, None
    return text, error
