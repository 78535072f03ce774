"""The rollup arithmetic (`irq/store/rollups.py`): percentiles read from the log-bucket histograms, rollup
rows merged as stored (what compaction and `/v1/stats` do), and the all-time totals of `/metrics`."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace
from typing import Any

import pytest

from irq.store.rollups import RATIO, SECONDS, TIMINGS, Group, Timing, Total

WITHIN = RATIO**0.5 - 1  # a bucket's middle is at most half a bucket (about 2.2%) from any value in it


def finished(status: str = "succeeded", **timings: float) -> Any:
    """A finished job's row as the rollups read it: its status and timing columns (unset ones None)."""
    return SimpleNamespace(status=status, **{column: timings.get(column) for column in TIMINGS})


def timing_of(values: list[float]) -> Timing:
    timing = Timing()
    for value in values:
        timing.add(value)
    return timing


def exact(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    return sorted(values)[max(1, math.ceil(q * len(values))) - 1]


# --- Timing.quantile ----------------------------------------------------------------------------------


def test_no_jobs_have_no_percentile() -> None:
    assert Timing().quantile(0.5) is None


@pytest.mark.parametrize("q", [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0])
def test_a_percentile_is_within_a_half_bucket_of_the_exact_one(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(6, 1.2) for _ in range(2000)]  # total_ms of jobs: ~400 ms, a long tail
    assert timing_of(values).quantile(q) == pytest.approx(exact(values, q), rel=WITHIN)


@pytest.mark.parametrize(
    "q, rank", [(0.01, 1), (0.25, 1), (0.3, 2), (0.5, 2), (0.75, 3), (0.76, 4), (1.0, 4)]
)
def test_a_percentile_is_the_job_at_its_nearest_rank(q: float, rank: int) -> None:
    values = [100.0, 200.0, 400.0, 800.0]  # one bucket each
    assert timing_of(values).quantile(q) == pytest.approx(values[rank - 1], rel=WITHIN)


def test_one_job_is_every_percentile_of_its_group() -> None:
    timing = timing_of([1234.0])
    assert timing.quantile(0.01) == timing.quantile(0.99) == pytest.approx(1234.0, rel=WITHIN)


def test_zero_and_a_negative_clock_skew_read_as_zero() -> None:
    timing = timing_of([0.0, -3.0, 0.0, 500.0])
    assert timing.quantile(0.5) == 0.0
    assert timing.quantile(0.99) == pytest.approx(500.0, rel=WITHIN)


def test_a_count_and_sum_are_kept_exactly_beside_the_histogram() -> None:
    timing = timing_of([100.0, 200.0, 300.5])
    assert (timing.n, timing.total, sum(timing.hist.values())) == (3, 600.5, 3)


# --- Group: jobs counted, then merged as stored ----------------------------------------------------------


def group_of(rows: list[Any]) -> Group:
    group = Group()
    for row in rows:
        group.add_job(row)
    return group


def stored(group: Group) -> tuple[int, dict[str, Any]]:
    """A rollup row's `jobs` and `timings`, as `irq/store/rollups.py` writes them."""
    return group.jobs, {column: timing.to_json() for column, timing in group.timings.items()}


def test_only_a_succeeded_job_enters_the_histograms_but_every_job_is_counted() -> None:
    group = group_of([finished(total_ms=100.0), finished("failed", total_ms=9000.0, queue_wait_ms=5.0)])
    total = group.timing("total_ms")
    assert (group.jobs, total.n, total.total) == (2, 2, 9100.0)
    assert sum(total.hist.values()) == 1 and total.quantile(0.5) == pytest.approx(100.0, rel=WITHIN)
    assert group.timing("ttft_ms").n == 0  # a column no job had


def test_minutes_merged_into_their_hour_read_as_the_hour_of_jobs_would() -> None:
    rng = random.Random(11)
    minutes = [
        [
            finished(total_ms=rng.uniform(50, 5000), ttft_ms=rng.uniform(5, 50))
            for _ in range(rng.randint(1, 40))
        ]
        for _ in range(60)
    ]
    minutes[3].append(finished("failed", total_ms=30_000.0))
    hour = Group()
    for rows in minutes:
        hour.merge_stored(*stored(group_of(rows)))
    whole = group_of([row for rows in minutes for row in rows])
    assert hour.jobs == whole.jobs
    for column in ("total_ms", "ttft_ms"):
        merged, direct = hour.timing(column), whole.timing(column)
        assert (merged.n, merged.hist) == (direct.n, direct.hist)
        assert merged.total == pytest.approx(direct.total)
        assert merged.quantile(0.95) == direct.quantile(0.95)


def test_a_merge_of_some_histograms_keeps_every_count_and_sum() -> None:
    """`/v1/stats` reads only the histograms it draws percentiles from."""
    minute = group_of([finished(total_ms=200.0, ttft_ms=20.0), finished(total_ms=400.0, ttft_ms=40.0)])
    read = Group()
    read.merge_stored(*stored(minute), histograms={"total_ms"})
    assert (read.timing("ttft_ms").n, read.timing("ttft_ms").total, read.timing("ttft_ms").hist) == (
        2,
        60.0,
        {},
    )
    assert read.timing("total_ms").hist == minute.timing("total_ms").hist


def test_merging_twice_counts_twice() -> None:
    minute = stored(group_of([finished(total_ms=200.0)]))
    group = Group()
    group.merge_stored(*minute)
    group.merge_stored(*minute)
    assert (group.jobs, group.timing("total_ms").n, group.timing("total_ms").total) == (2, 2, 400.0)


# --- Total: the all-time counts of /metrics --------------------------------------------------------------


def test_a_job_is_counted_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    total = Total()
    for ms in (50.0, 50.1, 700.0, 999_999.0):  # 0.05 s is at most the 0.05 bound; 1000 s is above all
        total.add_job(finished(total_ms=ms))
    cumulative = total.cumulative("total_ms")
    assert len(cumulative) == len(SECONDS) + 1
    le = dict(zip(SECONDS, cumulative, strict=False))
    assert (le[0.05], le[0.1], le[0.5], le[1.0], le[600.0], cumulative[-1]) == (1, 2, 2, 3, 3, 4)
    assert total.timings["total_ms"]["sum"] == pytest.approx(1_000_799.1)


def test_totals_merged_add_up_bucket_by_bucket() -> None:
    older, newer = Total(), Total()
    older.add_job(finished(total_ms=80.0, tokens_per_s=30.0))
    newer.add_job(finished("failed", total_ms=2000.0))
    newer.add_job(finished(total_ms=80.0))
    older.merge(newer)
    both = Total()
    for row in (
        finished(total_ms=80.0, tokens_per_s=30.0),
        finished("failed", total_ms=2000.0),
        finished(total_ms=80.0),
    ):
        both.add_job(row)
    assert older.jobs == 3
    assert older.timings == both.timings
    assert older.cumulative("tokens_per_s")[-1] == 1
