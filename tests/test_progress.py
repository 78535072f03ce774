"""The figures of `irq batch submit`'s progress bar stay readable at any rate, from a GPU's hundreds of
jobs per second to a loaded CPU's one job a minute."""

from __future__ import annotations

import pytest

from cli.batches import format_rate, format_time_left


@pytest.mark.parametrize(
    ("per_s", "shown"),
    [
        (0.0, "0 jobs/s"),
        (612.4, "612 jobs/s"),
        (12.345, "12.3 jobs/s"),
        (1.0, "1 jobs/s"),
        (0.5, "30 jobs/min"),
        (0.022, "1.32 jobs/min"),  # the batch that used to show "0.0 jobs/s"
        (1 / 120, "30 jobs/h"),
        (1 / 36_000, "0.1 jobs/h"),
    ],
)
def test_the_rate_has_significant_digits_in_a_unit_where_it_is_at_least_one(per_s: float, shown: str) -> None:
    assert format_rate(per_s) == shown


@pytest.mark.parametrize(
    ("remaining", "per_s", "shown"),
    [
        (100, 0.0, "-:--:--"),  # no job finished yet: no estimate
        (0, 0.0, "0:00:00"),
        (30, 0.5, "0:01:00"),
        (1000, 0.022, "12:37:35"),
        (1, 612.4, "0:00:00"),
    ],
)
def test_the_time_left_follows_the_rate(remaining: int, per_s: float, shown: str) -> None:
    assert format_time_left(remaining, per_s) == shown
