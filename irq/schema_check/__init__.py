"""Submit-time checks of a job's JSON Schema: valid JSON Schema, usable by the worker's validator, compiled
by llguidance as the engines compile it and generated from for a few steps, all in bounded time.

Verdicts are cached per schema. A small, plain schema is checked in the caller's thread; any other runs in
a check process (`pool`), which is killed when it overruns the time limit.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from typing import Any

from irq.error_codes import ErrorCode
from irq.schema_check.options import GRAMMAR_OPTIONS, GuidanceOptions, engine_schema, llguidance_grammar
from irq.schema_check.pool import Busy, CheckPool, Crashed, Overran, Unavailable, check_pool
from irq.schema_check.verdict import Problem, is_quick, problem

__all__ = [
    "GRAMMAR_OPTIONS",
    "CheckPool",
    "GuidanceOptions",
    "SchemaProblem",
    "check_pool",
    "check_schema",
    "engine_schema",
    "llguidance_grammar",
    "nesting_depth",
]

VERDICTS_CACHED = 4096


class SchemaProblem(ValueError):
    """A schema the service will not queue; `code` is machine-readable, the message says why.

    `retry_after_s` is set when the schema was not judged at all (`checks_busy`, `checks_unavailable`):
    the same request may pass once a check process is free.
    """

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)  # a check process's verdict names it as text
        self.retry_after_s = retry_after_s


class _Verdicts:
    """The last `VERDICTS_CACHED` verdicts, by the SHA-256 of the schema's canonical JSON as compiled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[bytes, Problem | None] = OrderedDict()

    def get(self, key: bytes) -> tuple[bool, Problem | None]:
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, key: bytes, verdict: Problem | None) -> None:
        with self._lock:
            self._items[key] = verdict
            if len(self._items) > VERDICTS_CACHED:
                self._items.popitem(last=False)


_verdicts = _Verdicts()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def nesting_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_schema(
    schema: Any,
    *,
    max_bytes: int,
    max_depth: int,
    timeout_s: float,
    owner: int | None = None,
    options: GuidanceOptions = GuidanceOptions(),  # noqa: B008 (frozen, so one shared instance is safe)
    processes: int = 4,
    wait_s: float = 1.0,
) -> None:
    """Raise `SchemaProblem` unless `schema` is a JSON Schema that the worker's validator and llguidance
    (with `options`) accept and can generate from.

    A check that needs a check process waits at most `wait_s` for one of the `processes` free to `owner`
    (`checks_busy` otherwise), then gets `timeout_s` (`schema_too_complex` after it).
    """
    if not isinstance(schema, dict):
        raise SchemaProblem(ErrorCode.invalid_schema, "schema must be a JSON object")
    depth = nesting_depth(schema)
    if depth > max_depth:
        raise SchemaProblem(
            ErrorCode.schema_too_deep, f"schema nests {depth} levels deep; the limit is {max_depth}"
        )
    size = len(canonical_json(schema).encode())
    if size > max_bytes:
        raise SchemaProblem(ErrorCode.schema_too_large, f"schema is {size} bytes; the limit is {max_bytes}")
    compiled = canonical_json(engine_schema(schema, options))
    key = hashlib.sha256(compiled.encode()).digest()
    known, verdict = _verdicts.get(key)
    if not known:
        if is_quick(schema, size):
            verdict = problem(compiled)
        else:
            verdict = _checked_in_pool(compiled, owner, timeout_s, processes, wait_s)
        _verdicts.put(key, verdict)
    if verdict is not None:
        raise SchemaProblem(*verdict)


def _checked_in_pool(
    compiled: str, owner: int | None, timeout_s: float, processes: int, wait_s: float
) -> Problem | None:
    """The verdict of a check process; `SchemaProblem` for the outcomes that are no verdict to cache."""
    # Every running check ends within timeout_s, so a slot is free by then.
    retry_after_s = float(max(1, math.ceil(timeout_s)))
    try:
        answer = check_pool(processes).run(compiled, owner=owner, timeout_s=timeout_s, wait_s=wait_s)
    except Busy as exc:
        raise SchemaProblem(ErrorCode.checks_busy, str(exc), retry_after_s) from None
    except Unavailable as exc:
        raise SchemaProblem(ErrorCode.checks_unavailable, str(exc), retry_after_s) from None
    except Overran:
        raise SchemaProblem(
            ErrorCode.schema_too_complex,
            f"the schema could not be checked and compiled within {timeout_s:g} s",
        ) from None
    except Crashed:
        raise SchemaProblem(
            ErrorCode.schema_unsupported, "checking this schema crashed the checker process"
        ) from None
    decoded = json.loads(answer)
    return None if decoded is None else (str(decoded[0]), str(decoded[1]))
