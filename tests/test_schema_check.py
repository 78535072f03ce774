"""Submit-time schema checks with the real llguidance and real check processes: what is refused says why,
compile time is bounded and overruns are killed, a busy pool is not mistaken for a bad schema."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from api.errors import submission_headers, submission_status
from irq.endpoints import load_registry
from irq.schema_check import GuidanceOptions, SchemaProblem, check_pool, check_schema, engine_schema
from irq.settings import Settings
from irq.submission.errors import SubmissionError
from irq.submission.rules import JobRequest, to_new_job

# 2000 required properties, each with a pattern: about a second of checking on this machine.
SLOW_SCHEMA = {
    "type": "object",
    "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{1,50}(x|y)+$"} for i in range(2000)},
    "required": [f"p{i}" for i in range(2000)],
}
LIMITS: dict[str, Any] = {"max_bytes": 1_000_000, "max_depth": 64}
POOL = 4  # check processes of the tests' pool: each key may use two


def heavy_schema(tag: str) -> dict[str, Any]:
    """A legal schema of about 190 KB that takes seconds to check: 1900 required anyOf properties."""
    names = [f"p{i}" for i in range(1900)]
    return {
        "title": tag,
        "type": "object",
        "properties": {
            name: {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "minimum": i}]}
            for i, name in enumerate(names)
        },
        "required": names,
    }


def outcome(schema: Any, **kwargs: Any) -> str | None:
    """The code `check_schema` refuses `schema` with, or None when it accepts it."""
    try:
        check_schema(schema, **LIMITS | {"timeout_s": 10, "processes": POOL, "wait_s": 1.0} | kwargs)
    except SchemaProblem as problem:
        assert len(str(problem)) <= 300, "messages stay short"
        return problem.code
    return None


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_schema_that_takes_too_long_is_refused_at_the_limit_and_its_check_process_killed() -> None:
    pool = check_pool(1)
    assert outcome({"type": "string", "format": "date"}, processes=1) is None  # starts the pool's process
    (checker,) = pool.pids()
    slow = SLOW_SCHEMA | {"title": "not seen before"}  # the check caches verdicts by schema
    code, refused_after = timed(lambda: outcome(slow, timeout_s=0.05, processes=1))
    assert code == "schema_too_complex"
    assert refused_after < 1.0
    assert not alive(checker), "the overrunning check was stopped, not left running"
    assert checker not in pool.pids() and len(pool.pids()) == 1  # a fresh process took its place

    # With room to compile, the same schema passes.
    assert outcome(SLOW_SCHEMA | {"title": "not seen before either"}, timeout_s=60, processes=1) is None


def test_a_schema_too_wide_to_generate_from_is_refused_with_a_short_message() -> None:
    # llguidance compiles it, then the first generation step overflows its parser (a row of 20007 items).
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5000)}}
    with pytest.raises(SchemaProblem) as problem:
        check_schema(wide, timeout_s=60, processes=POOL, **LIMITS)
    assert problem.value.code == "schema_unsupported"
    assert "Current row has 20007 items" in str(problem.value) and "optional properties" in str(problem.value)
    assert len(str(problem.value)) <= 300


@pytest.mark.parametrize(
    ("schema", "code"),
    [
        ({"type": "string", "pattern": "^(?=a)a$"}, "schema_unsupported"),  # look-ahead
        ({"type": "integer", "minimum": -(10**30)}, "schema_unsupported"),
        ([{"type": "string"}], "invalid_schema"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "schema_unsupported"),
        (
            {"$defs": {"a": {"$ref": "#/$defs/a"}}, "anyOf": [{"$ref": "#/$defs/a"}, {"type": "integer"}]},
            "schema_unsupported",
        ),
        (
            {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "required": ["a"]}
            | {"$defs": {"a": {"$ref": "#/$defs/a"}}},
            "schema_unsupported",
        ),
        ({"type": "integer", "minimum": 5, "maximum": 3}, "schema_unsupported"),
        ({"type": "string", "format": "hex-colour"}, None),
        ({"type": "object", "properties": {"colour": {"type": "string", "format": "hex-colour"}}}, None),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, None),
    ],
    ids=[
        "look-ahead",
        "huge-integer-bound",
        "not-an-object",
        "bare-ref-cycle",
        "any-of-a-ref-cycle",  # llguidance compiles it to "integer"; the worker's validator recurses
        "required-ref-cycle",  # no value for `a` exists: llguidance's second step finds it
        "empty-integer-range",
        "custom-format",  # `format` is an annotation: generated as a plain string
        "nested-custom-format",
        "one-of",  # generated as anyOf; the worker still checks the output against oneOf
    ],
)
def test_what_is_refused_and_what_is_not(schema: object, code: str | None) -> None:
    assert outcome(schema) == code


def test_a_users_own_x_guidance_wins_over_the_deployments_options() -> None:
    strict = {"x-guidance": {"lenient": False}, "oneOf": [{"type": "integer"}, {"type": "number"}]}
    with pytest.raises(SchemaProblem, match='"coerce_one_of": true'):
        check_schema(strict, timeout_s=10, processes=POOL, **LIMITS)
    assert outcome(strict | {"x-guidance": {"lenient": False, "coerce_one_of": True}}) is None
    # A deployment without lenient compiles refuses unknown formats, and says how to allow them.
    with pytest.raises(SchemaProblem, match='"lenient": true'):
        check_schema({"format": "hex-colour"}, timeout_s=10, options=GuidanceOptions(lenient=False), **LIMITS)

    assert engine_schema(strict, GuidanceOptions()) == strict | {
        "x-guidance": {"whitespace_flexible": False, "lenient": False}
    }
    assert engine_schema({"type": "string"}, GuidanceOptions())["x-guidance"]["lenient"] is True


class Flood:
    """`heavy` checks started at once, each in its own thread, as concurrent submits would be."""

    def __init__(self, owners: list[int], **kwargs: Any) -> None:
        self.problems: list[SchemaProblem | None] = [None] * len(owners)
        per_owner = POOL // 2
        self._slots = min(POOL, sum(min(per_owner, owners.count(owner)) for owner in set(owners)))
        # Every check asks at once: one that started late would find a slot its key freed meanwhile.
        self._together = threading.Barrier(len(owners))
        self._threads = [
            threading.Thread(target=self._check, args=(n, owner, kwargs)) for n, owner in enumerate(owners)
        ]

    def _check(self, n: int, owner: int, kwargs: dict[str, Any]) -> None:
        schema = heavy_schema(f"heavy {time.time()} {n}")
        self._together.wait(timeout=60)
        try:
            check_schema(schema, owner=owner, processes=POOL, **kwargs)
        except SchemaProblem as problem:
            self.problems[n] = problem

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        # The heavy checks take their slots first (building a 190 KB schema takes a while on a busy machine).
        deadline = time.monotonic() + 10
        while check_pool(POOL).running() < self._slots and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        for thread in self._threads:
            thread.join(timeout=30)

    def codes(self) -> list[str]:
        return sorted(p.code if p else "" for p in self.problems)


def test_one_key_flooding_the_checks_takes_half_the_processes_and_nobody_elses_time() -> None:
    cached = {"type": "string", "format": "date", "title": "checked before the flood"}
    assert outcome(cached, owner=1) is None
    with Flood([1] * 8, timeout_s=2.0, wait_s=0.3, **LIMITS) as flood:
        # The flooding key's own trivial and cached schemas do not wait for a check process.
        trivial, trivial_s = timed(lambda: outcome({"type": "object", "title": "flood 1"}, owner=1))
        again, again_s = timed(lambda: outcome(cached, owner=1))
        # Another key finds the half of the processes the flooding key may not take.
        other, other_s = timed(lambda: outcome({"type": "string", "format": "email", "title": "f1"}, owner=2))
    assert (trivial, again, other) == (None, None, None)
    assert max(trivial_s, again_s) < 0.2 and other_s < 1.0
    # Two heavy checks ran (each refused at the 2 s limit here, or passed), six found no process free for
    # their key within the wait: told to come back, not that their schema is too complex.
    assert flood.codes().count("checks_busy") == 6
    assert all(p is None or p.code in ("checks_busy", "schema_too_complex") for p in flood.problems)
    assert all(p.retry_after_s == 2 for p in flood.problems if p and p.code == "checks_busy")
    assert len(check_pool(POOL).pids()) <= POOL


def test_when_every_check_process_is_busy_a_submit_is_told_to_retry_and_quick_schemas_still_pass() -> None:
    cached = {"type": "string", "format": "date", "title": "checked before the second flood"}
    assert outcome(cached, owner=9) is None
    settings = Settings(schema_check_processes=POOL, schema_check_wait_s=0.2, schema_compile_timeout_s=2.0)
    with Flood([1, 1, 2, 2], timeout_s=2.0, wait_s=0.3, **LIMITS):
        job = JobRequest(prompt="p", schema={"type": "string", "format": "email", "title": "flood 2"})
        with pytest.raises(SubmissionError) as busy:
            to_new_job(job, settings, load_registry(settings), None, owner=9)
        trivial, trivial_s = timed(lambda: outcome({"type": "object", "title": "flood 2"}, owner=9))
        again, again_s = timed(lambda: outcome(cached, owner=9))
    assert (submission_status(busy.value), busy.value.code) == (503, "checks_busy")
    assert submission_headers(busy.value) == {"Retry-After": "2"}
    assert (trivial, again) == (None, None)
    assert max(trivial_s, again_s) < 0.2
