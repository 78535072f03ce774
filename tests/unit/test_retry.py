"""The retry policy (`irq/retry.py`): every branch of `RetryPolicy.decide`, and the backoff's range."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from inference.errors import PartialOutput, fault_for_status
from irq.clock import utcnow
from irq.retry import InternalFault, RetryPolicy, WorkerLost
from irq.settings import Settings
from tests.unit.support import busy, refused, running_job, truncated
from worker.validation import HollowDocument

POLICY = RetryPolicy(backoff_s=2.0, backoff_max_s=60.0)
NOW = utcnow()
OPEN_OBJECT = {"type": "object"}  # its bounds close it and cap its strings: a bounded retry changes something
INTEGER = {"type": "integer"}  # nothing to bound: a bounded retry would be the same generation again


def test_a_retryable_fault_with_attempts_left_runs_again_after_a_backoff() -> None:
    decision = POLICY.decide(running_job(attempts=2, max_attempts=3), busy(), NOW)
    assert decision.retry and not decision.bounded
    assert (decision.code, decision.message) == ("inference_http_503", "HTTP 503: the engine is busy")
    assert 0 <= decision.delay_s <= 4.0  # the second attempt's backoff: 2 s doubled


@pytest.mark.parametrize("fault", [WorkerLost("worker w1 stopped renewing"), InternalFault("KeyError: 'x'")])
def test_a_lost_worker_and_an_unexpected_exception_are_worth_another_attempt(fault: Exception) -> None:
    decision = POLICY.decide(running_job(attempts=1), fault, NOW)  # type: ignore[arg-type]
    assert decision.retry and decision.code == fault.code  # type: ignore[attr-defined]


def test_a_permanent_fault_fails_at_once_whatever_attempts_are_left() -> None:
    decision = POLICY.decide(running_job(attempts=1, max_attempts=5), refused(), NOW)
    assert (decision.retry, decision.delay_s, decision.code) == (False, 0.0, "inference_http_400")
    assert decision.message == "HTTP 400: the schema is not supported"


def test_a_truncated_document_runs_once_more_at_once_bounded() -> None:
    decision = POLICY.decide(running_job(schema_=OPEN_OBJECT), truncated(), NOW)
    assert (decision.retry, decision.delay_s, decision.bounded) == (True, 0.0, True)
    assert decision.code == "output_truncated"


@pytest.mark.parametrize(
    "why, job_fields",
    [
        ("the job asked for no bounded retry", dict(schema_=OPEN_OBJECT, retry_truncated=False)),
        ("its last attempt already ran bounded", dict(schema_=OPEN_OBJECT, bounded=True)),
        ("the bounds change nothing in its schema", dict(schema_=INTEGER)),
    ],
)
def test_a_truncated_document_fails_when_a_bounded_retry_cannot_help(
    why: str, job_fields: dict[str, object]
) -> None:
    decision = POLICY.decide(running_job(**job_fields), truncated(), NOW)
    assert (decision.retry, decision.code, decision.bounded) == (False, "output_truncated", False), why


def test_a_truncated_document_on_the_last_attempt_gives_up() -> None:
    decision = POLICY.decide(running_job(schema_=OPEN_OBJECT, attempts=3, max_attempts=3), truncated(), NOW)
    assert (decision.retry, decision.code) == (False, "output_truncated")
    assert decision.message == "gave up after 3 attempt(s): max_tokens cut the document short"


def test_a_retryable_fault_on_the_last_attempt_gives_up_with_its_own_code() -> None:
    decision = POLICY.decide(running_job(attempts=3, max_attempts=3), busy(), NOW)
    assert (decision.retry, decision.delay_s, decision.code) == (False, 0.0, "inference_http_503")
    assert decision.message == "gave up after 3 attempt(s): HTTP 503: the engine is busy"


def test_a_retryable_fault_past_the_deadline_fails_with_timeout() -> None:
    job = running_job(
        attempts=1, max_attempts=3, timeout_s=60.0, first_started_at=NOW - timedelta(seconds=61)
    )
    decision = POLICY.decide(job, busy(), NOW)
    assert (decision.retry, decision.code) == (False, "timeout")
    assert decision.message.startswith("gave up after 1 attempt(s)")
    # At the deadline itself, too; a second before it, the job runs again.
    assert POLICY.decide(job, busy(), job.deadline_at).code == "timeout"  # type: ignore[arg-type]
    assert POLICY.decide(job, busy(), NOW - timedelta(seconds=2)).retry


def test_the_deadline_wins_over_spent_attempts() -> None:
    job = running_job(attempts=3, max_attempts=3, timeout_s=1.0, first_started_at=NOW - timedelta(seconds=5))
    assert POLICY.decide(job, busy(), NOW).code == "timeout"


def test_a_job_that_never_started_has_no_deadline() -> None:
    job = running_job(attempts=1, timeout_s=0.0, first_started_at=None)
    assert job.deadline_at is None and POLICY.decide(job, busy(), NOW).retry


def test_a_long_fault_message_is_cut_to_what_the_store_keeps() -> None:
    from inference.errors import RetryableInferenceError

    fault = RetryableInferenceError("inference_http_502", "x" * 10_000)
    assert len(POLICY.decide(running_job(attempts=1), fault, NOW).message) == 4000
    assert len(POLICY.decide(running_job(attempts=3, max_attempts=3), fault, NOW).message) == 4000


@pytest.mark.parametrize("attempt, ceiling", [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (30, 60.0)])
def test_the_backoff_doubles_per_attempt_up_to_its_cap(
    attempt: int, ceiling: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        drawn.append((low, high))
        return high

    monkeypatch.setattr(random, "uniform", highest)
    assert POLICY.delay_s(attempt) == ceiling and drawn == [(0, ceiling)]


def test_the_backoff_is_spread_over_its_whole_range() -> None:
    """Full jitter: retries of jobs that failed together do not come back together."""
    delays = [POLICY.delay_s(3) for _ in range(400)]
    assert all(0 <= d <= 8.0 for d in delays)
    assert min(delays) < 1.0 and max(delays) > 7.0 and len(set(delays)) > 390


def test_the_policy_reads_its_backoff_from_the_settings() -> None:
    policy = RetryPolicy.from_settings(Settings(retry_backoff_s=0.5, retry_backoff_max_s=3.0))
    assert (policy.backoff_s, policy.backoff_max_s) == (0.5, 3.0)


def hollow() -> HollowDocument:
    return HollowDocument({}, PartialOutput(text="{}", finish_reason="stop", completion_tokens=1))


def test_a_hollow_document_runs_once_more_at_once_bounded_then_fails() -> None:
    decision = POLICY.decide(running_job(schema_=OPEN_OBJECT), hollow(), NOW)
    assert (decision.retry, decision.delay_s, decision.bounded, decision.code) == (
        True,
        0.0,
        True,
        "hollow_output",
    )
    last = POLICY.decide(running_job(schema_=OPEN_OBJECT, bounded=True), hollow(), NOW)
    assert (last.retry, last.code) == (False, "hollow_output")


def test_a_failure_that_would_happen_again_is_never_retried_whatever_its_status() -> None:
    logged = 'LLMatcher error: Parser Error: token "\u0120data" doesn\'t satisfy the grammar; forced bytes'
    decision = POLICY.decide(
        running_job(attempts=1, max_attempts=3), fault_for_status(500, None, logged), NOW
    )
    assert (decision.retry, decision.code) == (False, "grammar_error")
