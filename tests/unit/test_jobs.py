"""The lifecycle (`irq/jobs.py`), every transition and what comes with it: a create or a requeue sends the
job's message, every move into a terminal status sends one "finished" notice, and a fault's retry decision
is applied. Over the in-memory store and the stub broker (`irq/testing.py`)."""

from __future__ import annotations

import time

import pytest

from irq.endpoints import Registry, queue_name
from irq.jobs import RETRY_PRIORITY, BrokerUnavailable, JobManager
from irq.retry import RetryPolicy
from irq.store.jobs import JobStore
from irq.store.models import Job, JobStatus
from irq.submission.errors import IdempotencyKeyReused
from irq.testing import (
    BACKEND,
    MODEL,
    MemoryDatabase,
    Message,
    StubBroker,
    StubNotifier,
    add_owner,
    one_endpoint,
)
from tests.unit.support import busy, new_job, outcome, refused, truncated

QUEUE = queue_name(MODEL, BACKEND)
LEASE_S = 30.0
LAPSED = -1.0  # a lease that ran out a second before it was taken: its worker died at once
STALE_NOW = -1.0  # `resend_lost`'s staleness: every queued job counts as queued long enough


def stored(jobs: JobManager, job_id: str) -> Job:
    job = jobs.store.get(job_id)
    assert job is not None
    return job


def claimed(jobs: JobManager, job_id: str, lease_s: float = LEASE_S, worker: str = "w1") -> Job:
    job = jobs.claim(job_id, worker, "default", lease_s)
    assert job is not None, "the job was not queued"
    return job


def submitted(jobs: JobManager, owner: int, **over: object) -> Job:
    job, created = jobs.submit(owner, new_job(**over))
    assert created
    return job


# --- submitting -------------------------------------------------------------------------------------


def test_a_submitted_job_is_queued_and_its_message_sent_to_its_models_queue(
    jobs: JobManager, broker: StubBroker, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner, priority=7)
    found = stored(jobs, job.id)
    assert (found.status, found.attempts, found.enqueued_at) == (JobStatus.queued, 0, job.enqueued_at)
    assert found.document_schema == new_job().schema
    assert broker.sent == [Message(job.id, QUEUE, 7)]
    assert notices.notices == []


def test_a_job_asking_for_another_backend_goes_to_that_backends_queue(
    db: MemoryDatabase, notices: StubNotifier, retry: RetryPolicy, owner: int
) -> None:
    two = Registry(endpoints=[one_endpoint(), one_endpoint(backend="xgrammar", name="xg")])
    broker = StubBroker(two)
    jobs = JobManager(JobStore(db), broker, notices, retry, two)
    job = submitted(jobs, owner, backend="xgrammar")
    assert broker.sent == [Message(job.id, queue_name(MODEL, "xgrammar"), 5)]


def test_a_repeated_idempotency_key_returns_the_first_job_and_sends_nothing_more(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    first, created = jobs.submit(owner, new_job(idempotency_key="k1"))
    again, created_again = jobs.submit(owner, new_job(idempotency_key="k1"))
    assert (created, created_again) == (True, False)
    assert again.id == first.id and len(broker.sent) == 1
    with pytest.raises(IdempotencyKeyReused):
        jobs.submit(owner, new_job(idempotency_key="k1", prompt="another function altogether"))
    assert [j.id for j in jobs.store.page(owner)] == [first.id] and len(broker.sent) == 1


def test_two_submits_racing_with_one_idempotency_key_make_one_job(
    jobs: JobManager, broker: StubBroker, owner: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    winner = submitted(jobs, owner, idempotency_key="k1")
    look_up = jobs.store.by_idempotency_key
    looks: list[str] = []

    def before_the_winner_inserted(owner_id: int, key: str) -> Job | None:
        looks.append(key)
        return None if len(looks) == 1 else look_up(owner_id, key)

    monkeypatch.setattr(jobs.store, "by_idempotency_key", before_the_winner_inserted)
    job, created = jobs.submit(owner, new_job(idempotency_key="k1"))
    assert (job.id, created, len(looks)) == (winner.id, False, 2)  # the store's unique key decided
    assert len(jobs.store.page(owner)) == 1 and len(broker.sent) == 1


def test_with_the_broker_down_a_submit_keeps_nothing_and_says_so(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    broker.go_down()
    with pytest.raises(BrokerUnavailable, match="ConnectionError"):
        jobs.submit(owner, new_job())
    with pytest.raises(BrokerUnavailable):
        jobs.submit_batch(owner, [new_job(), new_job()], idempotency_key="b1")
    assert jobs.store.page(owner) == [] and broker.sent == []
    assert jobs.store.batch_by_idempotency_key(owner, "b1") is None  # the key can be used again


def test_a_batch_is_stored_in_order_and_each_job_sent(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    batch, created = jobs.submit_batch(owner, [new_job(prompt=f"line {i}") for i in range(3)], None)
    assert created and batch.total == 3
    lines = list(jobs.store.batch_jobs(batch.id))
    assert [j.prompt for j in lines] == ["line 0", "line 1", "line 2"]
    assert all(j.status == JobStatus.queued and j.enqueued_at is not None for j in lines)
    assert broker.sent == [Message(j.id, QUEUE, 5) for j in lines]


def test_a_repeated_batch_key_returns_the_first_batch_and_sends_nothing_more(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    lines = [new_job(prompt=f"line {i}") for i in range(2)]
    first, created = jobs.submit_batch(owner, lines, "b1")
    again, created_again = jobs.submit_batch(owner, lines, "b1")
    assert (created, created_again) == (True, False) and again.id == first.id
    with pytest.raises(IdempotencyKeyReused):
        jobs.submit_batch(owner, lines[::-1], "b1")  # the same lines in another order: another request
    assert len(jobs.store.page(owner)) == 2 and len(broker.sent) == 2


def test_a_batch_the_broker_drops_midway_is_kept_and_the_sweeper_sends_the_rest(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    broker.go_down(after=1)
    batch, created = jobs.submit_batch(owner, [new_job(prompt=f"line {i}") for i in range(3)], None)
    assert created and len(broker.sent) == 1  # accepted: its first message went
    broker.come_back()
    assert jobs.resend_lost(stale_s=STALE_NOW, held_s=60) == 2
    lines = list(jobs.store.batch_jobs(batch.id))
    assert sorted(m.job_id for m in broker.waiting) == sorted(j.id for j in lines)  # one each
    assert jobs.resend_lost(stale_s=STALE_NOW, held_s=60) == 0  # nothing is missing any more


# --- claiming and finishing -------------------------------------------------------------------------


def test_a_claim_runs_the_job_once_and_counts_the_attempt(jobs: JobManager, owner: int) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id, worker="w1")
    assert (running.status, running.attempts, running.worker) == (JobStatus.running, 1, "w1")
    assert running.lease_expires_at is not None and running.lease_expires_at > running.started_at  # type: ignore[operator]
    assert running.first_started_at == running.started_at
    assert jobs.claim(job.id, "w2", "default", LEASE_S) is None  # a duplicate delivery finds it taken
    assert stored(jobs, job.id).worker == "w1"


def test_a_success_stores_the_document_and_its_timings_and_tells_the_waiters(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id)
    assert jobs.succeed(running, outcome(completion_tokens=20, generation_ms=400.0)) is True
    done = stored(jobs, job.id)
    assert done.status == JobStatus.succeeded and done.result == outcome().result
    assert done.tokens_per_s == pytest.approx(50.0)  # 20 tokens in 0.4 s
    assert done.finished_at is not None and done.lease_expires_at is None
    assert done.queue_wait_ms is not None and done.queue_wait_ms >= 0
    assert done.total_ms is not None and done.total_ms >= done.queue_wait_ms
    assert notices.notices == [job.id]
    # A duplicate delivery's late result changes nothing and tells no one again.
    assert jobs.succeed(running, outcome(result={"name": "other", "params": []})) is False
    assert stored(jobs, job.id).result == outcome().result and notices.notices == [job.id]


def test_a_result_that_arrives_after_a_cancel_is_dropped(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id)
    assert jobs.cancel(job.id, owner) is not None
    assert jobs.succeed(running, outcome()) is False
    final = stored(jobs, job.id)
    assert final.status == JobStatus.cancelled and final.result is None
    assert notices.notices == [job.id]  # the cancel's notice, once


def test_a_failure_keeps_what_the_generation_left(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id)
    cut = truncated()
    assert jobs.fail(running, "invalid_output", "not JSON", endpoint="default", output=cut.output) is True
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        JobStatus.failed,
        "invalid_output",
        "not JSON",
    )
    assert cut.output is not None and failed.output_text == cut.output.text
    assert (failed.finish_reason, failed.completion_tokens) == ("length", 256)
    assert notices.notices == [job.id]


def test_a_document_that_does_not_validate_is_kept_with_the_reason(jobs: JobManager, owner: int) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id)
    document = {"name": 3}
    assert jobs.fail(
        running, "schema_mismatch", "does not match", result=document, validation_error="3 is not a string"
    )
    failed = stored(jobs, job.id)
    assert (failed.result, failed.validation_error, failed.output_text) == (
        document,
        "3 is not a string",
        None,
    )


# --- retrying ---------------------------------------------------------------------------------------


def test_a_retryable_fault_requeues_the_job_at_the_front_after_a_backoff_until_attempts_run_out(
    jobs: JobManager, broker: StubBroker, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner, max_attempts=3)
    for attempt in (1, 2):
        running = claimed(jobs, job.id)
        assert running.attempts == attempt
        decision = jobs.retry_or_fail(running, busy())
        assert decision.retry and 0 <= decision.delay_s <= 2.0 * 2 ** (attempt - 1)
        again = stored(jobs, job.id)
        assert (again.status, again.error_code) == (JobStatus.queued, "inference_http_503")
        assert broker.sent[-1] == Message(job.id, QUEUE, RETRY_PRIORITY, decision.delay_s or None)
    assert notices.notices == []
    last = claimed(jobs, job.id)
    decision = jobs.retry_or_fail(last, busy())
    assert not decision.retry and decision.message.startswith("gave up after 3 attempt(s)")
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code, failed.attempts) == (JobStatus.failed, "inference_http_503", 3)
    assert len(broker.messages_for(job.id)) == 3 and notices.notices == [job.id]


def test_a_permanent_fault_fails_the_job_at_once(
    jobs: JobManager, broker: StubBroker, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner)
    decision = jobs.retry_or_fail(claimed(jobs, job.id), refused(), endpoint="default")
    assert not decision.retry
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code, failed.attempts) == (JobStatus.failed, "inference_http_400", 1)
    assert len(broker.messages_for(job.id)) == 1 and notices.notices == [job.id]


def test_a_truncated_document_runs_once_more_at_once_under_its_bounded_schema(
    jobs: JobManager, broker: StubBroker, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner, max_tokens=16)
    decision = jobs.retry_or_fail(claimed(jobs, job.id), truncated())
    assert decision.retry and decision.bounded and decision.delay_s == 0
    again = stored(jobs, job.id)
    assert again.status == JobStatus.queued and again.bounded
    assert broker.sent[-1] == Message(job.id, QUEUE, RETRY_PRIORITY, None)
    # Cut short again under the bounds: there is no third try.
    assert not jobs.retry_or_fail(claimed(jobs, job.id), truncated()).retry
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code, failed.attempts) == (JobStatus.failed, "output_truncated", 2)
    assert failed.output_text and notices.notices == [job.id]


def test_a_bounded_job_stays_bounded_through_a_later_retry(jobs: JobManager, owner: int) -> None:
    job = submitted(jobs, owner, max_tokens=16)
    jobs.retry_or_fail(claimed(jobs, job.id), truncated())
    bounded = claimed(jobs, job.id)
    assert bounded.bounded and jobs.retry_or_fail(bounded, busy()).retry
    assert stored(jobs, job.id).bounded  # its next attempt generates under the bounds again


def test_a_fault_past_the_jobs_deadline_fails_it_with_timeout(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner, timeout_s=0.0)  # its deadline is its first start
    decision = jobs.retry_or_fail(claimed(jobs, job.id), busy())
    assert (decision.retry, decision.code) == (False, "timeout")
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code) == (JobStatus.failed, "timeout")
    assert notices.notices == [job.id]


def test_a_fault_after_a_cancel_leaves_the_job_cancelled(
    jobs: JobManager, broker: StubBroker, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id)
    jobs.cancel(job.id, owner)
    jobs.retry_or_fail(running, busy())
    assert stored(jobs, job.id).status == JobStatus.cancelled
    assert len(broker.messages_for(job.id)) == 1 and notices.notices == [job.id]


# --- cancelling -------------------------------------------------------------------------------------


def test_a_cancel_ends_a_queued_job_once_and_only_for_its_owner(
    jobs: JobManager, notices: StubNotifier, owner: int, db: MemoryDatabase
) -> None:
    job = submitted(jobs, owner)
    assert jobs.cancel(job.id, add_owner(db, "bob")) is None  # not bob's to see or cancel
    assert stored(jobs, job.id).status == JobStatus.queued
    cancelled = jobs.cancel(job.id, owner)
    assert cancelled is not None and (cancelled.status, cancelled.error_code) == (
        JobStatus.cancelled,
        "cancelled",
    )
    assert jobs.claim(job.id, "w1", "default", LEASE_S) is None  # its message, delivered later, runs nothing
    jobs.cancel(job.id, owner)
    assert notices.notices == [job.id]


def test_a_finished_job_keeps_its_outcome_when_cancelled(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner)
    jobs.succeed(claimed(jobs, job.id), outcome())
    after = jobs.cancel(job.id, owner)
    assert after is not None and after.status == JobStatus.succeeded and after.result == outcome().result
    assert notices.notices == [job.id]


def test_a_batch_cancel_ends_its_active_jobs_and_keeps_its_finished_ones(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    batch, _ = jobs.submit_batch(owner, [new_job(prompt=f"line {i}") for i in range(3)], None)
    done, running, queued = list(jobs.store.batch_jobs(batch.id))
    jobs.succeed(claimed(jobs, done.id), outcome())
    claimed(jobs, running.id)
    jobs.cancel_batch(batch)
    statuses = [j.status for j in jobs.store.batch_jobs(batch.id)]
    assert statuses == [JobStatus.succeeded, JobStatus.cancelled, JobStatus.cancelled]
    marked = jobs.store.get_batch(batch.id, owner)
    assert marked is not None and marked.cancelled_at is not None
    assert notices.notices[0] == done.id and sorted(notices.notices[1:]) == sorted([running.id, queued.id])


def test_an_expired_batch_ends_its_active_jobs_as_expired(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    batch, _ = jobs.submit_batch(owner, [new_job(prompt=f"line {i}") for i in range(2)], None)
    first, second = list(jobs.store.batch_jobs(batch.id))
    jobs.succeed(claimed(jobs, first.id), outcome())
    jobs.expire_batch(batch.id)
    expired = stored(jobs, second.id)
    assert (expired.status, expired.error_code) == (JobStatus.cancelled, "batch_expired")
    assert stored(jobs, first.id).status == JobStatus.succeeded
    kept = jobs.store.get_batch(batch.id, owner)
    assert kept is not None and kept.cancelled_at is None  # expired, not cancelled by its owner
    assert notices.notices == [first.id, second.id]


# --- giving a job back ------------------------------------------------------------------------------


def test_a_release_gives_the_job_back_as_if_the_attempt_never_started(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id)
    assert jobs.release(running) is True
    back = stored(jobs, job.id)
    assert (back.status, back.attempts, back.worker, back.lease_expires_at) == (
        JobStatus.queued,
        0,
        None,
        None,
    )
    assert back.first_started_at is None and back.deadline_at is None  # no time of its deadline was spent
    assert broker.sent[-1] == Message(job.id, QUEUE, RETRY_PRIORITY)
    assert jobs.release(running) is False  # no longer that running attempt
    assert len(broker.messages_for(job.id)) == 2


def test_a_release_of_a_later_attempt_keeps_the_jobs_first_start(jobs: JobManager, owner: int) -> None:
    job = submitted(jobs, owner)
    jobs.retry_or_fail(claimed(jobs, job.id), busy())
    second = claimed(jobs, job.id)
    assert jobs.release(second)
    back = stored(jobs, job.id)
    assert back.attempts == 1 and back.first_started_at is not None
    assert back.first_started_at < second.started_at  # type: ignore[operator]


def test_send_again_resends_only_a_queued_job_at_its_own_priority(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    job = submitted(jobs, owner, priority=3)
    jobs.send_again(job.id)
    assert broker.messages_for(job.id) == [Message(job.id, QUEUE, 3)] * 2
    claimed(jobs, job.id)
    jobs.send_again(job.id)
    assert len(broker.messages_for(job.id)) == 2


# --- sweeping ---------------------------------------------------------------------------------------


def test_a_lapsed_lease_sends_the_job_back_unless_its_worker_is_known_alive(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    job = submitted(jobs, owner)
    running = claimed(jobs, job.id, lease_s=LAPSED, worker="w1")
    assert jobs.expire_leases(alive={("w1", job.id)}) == 0
    assert stored(jobs, job.id).status == JobStatus.running
    assert jobs.expire_leases() == 1
    back = stored(jobs, job.id)
    assert (back.status, back.error_code, back.attempts) == (
        JobStatus.queued,
        "worker_lost",
        running.attempts,
    )
    assert broker.sent[-1].priority == RETRY_PRIORITY and broker.sent[-1].job_id == job.id


def test_a_lapsed_lease_on_the_last_attempt_fails_the_job(
    jobs: JobManager, notices: StubNotifier, owner: int
) -> None:
    job = submitted(jobs, owner, max_attempts=1)
    claimed(jobs, job.id, lease_s=LAPSED)
    healthy = submitted(jobs, owner)
    claimed(jobs, healthy.id)  # its lease runs: the sweep leaves it alone
    assert jobs.expire_leases() == 0
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code) == (JobStatus.failed, "worker_lost")
    assert "stopped renewing" in (failed.error_message or "")
    assert stored(jobs, healthy.id).status == JobStatus.running
    assert notices.notices == [job.id]


def test_jobs_whose_messages_the_broker_lost_are_sent_again(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    lost = [submitted(jobs, owner, prompt=f"job {i}") for i in range(2)]
    broker.forget()  # Redis restarted without persistence
    kept = submitted(jobs, owner, prompt="sent after the restart")
    assert jobs.resend_lost(stale_s=STALE_NOW, held_s=60) == 2
    assert sorted(m.job_id for m in broker.waiting) == sorted([kept.id, *(j.id for j in lost)])
    assert all(len(broker.messages_for(j.id)) == 2 for j in lost) and len(broker.messages_for(kept.id)) == 1


def test_a_message_delivered_to_a_worker_that_died_before_claiming_is_sent_again(
    jobs: JobManager, broker: StubBroker, owner: int
) -> None:
    dead = submitted(jobs, owner, prompt="delivered two minutes ago")
    alive = submitted(jobs, owner, prompt="delivered just now")
    broker.deliver(at=time.time() - 120)
    broker.deliver()
    assert jobs.resend_lost(stale_s=STALE_NOW, held_s=60) == 1
    assert [m.job_id for m in broker.waiting] == [dead.id]
    assert len(broker.messages_for(alive.id)) == 1


def test_a_lost_job_whose_model_is_no_longer_served_fails(
    db: MemoryDatabase, notices: StubNotifier, retry: RetryPolicy, owner: int
) -> None:
    two = Registry(endpoints=[one_endpoint(), one_endpoint(model="other-model", name="other")])
    before = StubBroker(two)
    job, _ = JobManager(JobStore(db), before, notices, retry, two).submit(owner, new_job(model="other-model"))
    after = StubBroker()  # the deployment restarted without the other model's endpoint (and its messages)
    jobs = JobManager(JobStore(db), after, notices, retry, after.registry)
    assert jobs.resend_lost(stale_s=STALE_NOW, held_s=60) == 1
    failed = stored(jobs, job.id)
    assert (failed.status, failed.error_code) == (JobStatus.failed, "model_unavailable")
    assert "other-model" in (failed.error_message or "") and after.sent == []
    assert notices.notices == [job.id]


def test_queued_jobs_fail_when_every_endpoint_of_their_model_stays_down_past_their_timeout(
    jobs: JobManager, broker: StubBroker, notices: StubNotifier, owner: int
) -> None:
    patient = submitted(jobs, owner, timeout_s=600.0)  # longer than the endpoint has been down
    fresh = submitted(jobs, owner, timeout_s=60.0)  # shorter, but it has not waited that long yet
    hurried = submitted(jobs, owner, timeout_s=0.0)
    now = time.time()
    broker.publish_endpoint_state("default", {"at": now, "up": True, "since": now - 100})
    assert jobs.fail_unreachable() == 0
    broker.publish_endpoint_state(
        "default", {"at": now, "up": False, "since": now - 100, "reason": "refused"}
    )
    assert jobs.fail_unreachable() == 1
    failed = stored(jobs, hurried.id)
    assert (failed.status, failed.error_code) == (JobStatus.failed, "endpoint_unavailable")
    assert stored(jobs, patient.id).status == stored(jobs, fresh.id).status == JobStatus.queued
    assert notices.notices == [hurried.id]


# --- the record's timings ---------------------------------------------------------------------------


def test_a_retried_jobs_timings_account_for_its_earlier_attempts(jobs: JobManager, owner: int) -> None:
    """The record's parts add up to its total also after a retry: the earlier attempts, and the waits
    between them, are `earlier_attempts_ms` (created → the last enqueue); the rest is the last attempt's."""
    from api.schemas import JobView

    once, retried = submitted(jobs, owner), submitted(jobs, owner)
    assert jobs.succeed(claimed(jobs, once.id), outcome()) is True
    first = claimed(jobs, retried.id)
    time.sleep(0.05)  # the first attempt's generation, cut at max_tokens
    assert jobs.retry_or_fail(first, truncated()).retry
    assert jobs.succeed(claimed(jobs, retried.id), outcome()) is True
    views = [JobView.of(stored(jobs, job.id)).timings for job in (once, retried)]
    assert views[0].earlier_attempts_ms is not None and views[0].earlier_attempts_ms < 50
    t = views[1]
    assert t.earlier_attempts_ms is not None and t.queue_wait_ms is not None and t.total_ms is not None
    assert t.earlier_attempts_ms >= 50 > t.queue_wait_ms
    assert t.earlier_attempts_ms + t.queue_wait_ms <= t.total_ms
