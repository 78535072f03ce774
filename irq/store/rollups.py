"""Rollups: finished jobs counted per period and group, and the all-time totals of `/metrics`.

The sweeper rolls up the jobs that finished before a mark (`roll_up`), a minute at a time, and merges
minutes into their hour, and hours into their day, as they age (GRAINS, `compact`). `/v1/stats`,
`/dashboard/data` and `/metrics` read the rollups for the past and the jobs table only after the mark
(`finished_in`, `totals`), so their cost follows the periods of a window, not its jobs, and a pruned job
still counts.

Each timing column is kept as a count, a sum and a histogram: in the rollups, log buckets RATIO apart, for
the jobs that succeeded (a percentile read from them is within ±2.2% of the exact one); in the totals, the
bounds of `/metrics`, for every job.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, delete, func, insert, select, update

from irq.clock import utcnow
from irq.store.db import Database
from irq.store.jobs import JOBS
from irq.store.models import JobTotal, RollupMark
from irq.store.rollup_cache import ROLLUPS, rollup_rows

TOTALS = cast(Table, JobTotal.__table__)
MARK = cast(Table, RollupMark.__table__)
KEPT = (MARK, TOTALS, ROLLUPS)  # what the records keeper writes

TIMINGS = ("queue_wait_ms", "engine_wait_ms", "ttft_ms", "generation_ms", "total_ms", "tokens_per_s")
RATIO = 2 ** (1 / 16)
NON_POSITIVE = -10_000  # the bucket of zero (and of a negative value a skewed clock may give)
MINUTE, HOUR, DAY = 60, 3600, 86400
# Each grain of period and the age from which the rollups are kept in it: minutes for two hours, then hours
# for two days, then days.
GRAINS = ((MINUTE, timedelta(0)), (HOUR, timedelta(hours=2)), (DAY, timedelta(days=2)))
LAG_S = 60.0  # how far the mark stays behind now by default (`Settings.rollup_lag_s`)
ROLL_CHUNK = 20_000  # the jobs a roll-up step reads at once
TAIL_LIMIT = 500_000  # jobs after the mark a read takes at most (the sweeper rolls up every few seconds)

SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# `/metrics`' bounds per column, in the metric's unit (seconds, or tokens/s), and that unit in the column's.
METRIC_BOUNDS: dict[str, tuple[tuple[float, ...], float]] = {
    **{column: (SECONDS, 1000.0) for column in TIMINGS if column.endswith("_ms")},
    "tokens_per_s": ((1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0), 1.0),
}


# The bounds in each column's own unit.
_SCALED_BOUNDS = {column: [b * scale for b in bounds] for column, (bounds, scale) in METRIC_BOUNDS.items()}


def bucket(value: float) -> int:
    return math.ceil(math.log(value) / math.log(RATIO) - 1e-9) if value > 0 else NON_POSITIVE


def bucket_value(index: int) -> float:
    """A value to stand for the bucket: its geometric middle."""
    return 0.0 if index == NON_POSITIVE else RATIO ** (index - 0.5)


@dataclass
class Timing:
    """Count, sum and log-bucket histogram of one timing column over a group's jobs."""

    n: int = 0
    total: float = 0.0
    hist: Counter[str] = field(default_factory=Counter)  # bucket index (as stored, a string) → jobs

    def add(self, value: float, histogram: bool = True) -> None:
        self.n += 1
        self.total += value
        if histogram:
            self.hist[str(bucket(value))] += 1

    def merge(self, other: Timing) -> None:
        self.n += other.n
        self.total += other.total
        self.hist.update(other.hist)

    def quantile(self, q: float) -> float | None:
        """The value below which a share `q` of the jobs lie (the bucket's middle)."""
        if self.n == 0:
            return None
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for index in sorted(self.hist, key=int):
            seen += self.hist[index]
            if seen >= rank:
                return bucket_value(int(index))
        return bucket_value(max(map(int, self.hist)))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "sum": self.total, "hist": dict(self.hist)}


@dataclass
class Group:
    """The jobs of one group in one period (or window): how many, and their timings."""

    jobs: int = 0
    timings: dict[str, Timing] = field(default_factory=dict)

    def add_job(self, row: Any) -> None:
        """Count a job; its timings' histograms only for a job that succeeded (what percentiles are of)."""
        self.jobs += 1
        histogram = row.status == "succeeded"
        for column in TIMINGS:
            value = getattr(row, column)
            if value is not None:
                self.timings.setdefault(column, Timing()).add(float(value), histogram)

    def merge(self, other: Group) -> None:
        self.jobs += other.jobs
        for column, timing in other.timings.items():
            self.timings.setdefault(column, Timing()).merge(timing)

    def merge_stored(
        self, jobs: int, timings: dict[str, Any], histograms: Collection[str] | None = None
    ) -> None:
        """Add a rollup row's values as stored (`Timing.to_json`), the histograms of the `histograms`
        columns only (all for None)."""
        self.jobs += jobs
        for column, stored in timings.items():
            timing = self.timings.setdefault(column, Timing())
            timing.n += stored["n"]
            timing.total += stored["sum"]
            if stored["hist"] and (histograms is None or column in histograms):
                timing.hist.update(stored["hist"])

    def timing(self, column: str) -> Timing:
        return self.timings.get(column) or Timing()


class GroupKey(NamedTuple):
    owner_id: int
    model: str
    backend: str  # "" for none
    endpoint: str  # "" for none
    status: str
    error_code: str  # "" for none


@dataclass
class Finished:
    """The jobs finished in a window: merged per group, and counted per period (for a timeline)."""

    groups: dict[GroupKey, Group]
    periods: list[tuple[datetime, int, str, int]]  # (start, length s, status, jobs)


@dataclass
class Total:
    """Every job of one (model, backend, status, error code) that ever finished, for `/metrics`."""

    jobs: int = 0
    # column → {"n", "sum", "counts"}: counts[i] jobs above bound i - 1, at most bound i; the last above all
    timings: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_job(self, row: Any) -> None:
        self.jobs += 1
        for column, bounds in _SCALED_BOUNDS.items():
            value = getattr(row, column)
            if value is None:
                continue
            t = self.timings.get(column)
            if t is None:
                t = self.timings[column] = {"n": 0, "sum": 0.0, "counts": [0] * (len(bounds) + 1)}
            t["n"] += 1
            t["sum"] += value
            t["counts"][bisect.bisect_left(bounds, value)] += 1

    def merge(self, other: Total) -> None:
        self.jobs += other.jobs
        for column, o in other.timings.items():
            t = self.timings.setdefault(column, {"n": 0, "sum": 0.0, "counts": [0] * len(o["counts"])})
            t["n"] += o["n"]
            t["sum"] += o["sum"]
            t["counts"] = [a + b for a, b in zip(t["counts"], o["counts"], strict=True)]

    def cumulative(self, column: str) -> list[int]:
        """Jobs at most each of the column's bounds (`/metrics`' buckets), then all of them."""
        return list(itertools.accumulate(self.timings[column]["counts"]))


_ROW_COLUMNS = ("owner_id", "model", "backend", "endpoint", "status", "error_code", "finished_at", *TIMINGS)


def _key(row: Any) -> GroupKey:
    return GroupKey(
        row.owner_id, row.model, row.backend or "", row.endpoint or "", row.status, row.error_code or ""
    )


def _floor(moment: datetime, period_s: int) -> datetime:
    return datetime.fromtimestamp(math.floor(moment.timestamp() / period_s) * period_s, UTC)


def _finished_rows(
    conn: Connection,
    since: datetime,
    until: datetime | None,
    owner_id: int | None = None,
    limit: int | None = None,
) -> Sequence[Any]:
    q = select(*(JOBS.c[c] for c in _ROW_COLUMNS)).where(JOBS.c.finished_at >= since)
    if until is not None:
        q = q.where(JOBS.c.finished_at < until)
    if owner_id is not None:
        q = q.where(JOBS.c.owner_id == owner_id)
    if limit is not None:
        q = q.order_by(JOBS.c.finished_at).limit(limit)
    return conn.execute(q).all()


def rolled_until(conn: Connection) -> datetime | None:
    """The mark: every job finished before it is in the rollups (None before the first roll-up)."""
    return cast(datetime | None, conn.execute(select(MARK.c.rolled_until).where(MARK.c.id == 1)).scalar())


# --- writing (the sweeper) -------------------------------------------------------------------------


def roll_up(db: Database, lag_s: float = LAG_S, now: datetime | None = None, max_steps: int = 36) -> int:
    """Count the jobs finished since the mark, up to `lag_s` before `now` (a job's finished_at is its
    worker's clock when it committed), into the rollups and totals, ROLL_CHUNK jobs per transaction;
    returns how many jobs. Safe to run from several processes: a step another one took first is rolled
    back."""
    target = (now or utcnow()) - timedelta(seconds=lag_s)
    rolled = 0
    for _ in range(max_steps):
        with db.engine.begin() as conn:
            mark = rolled_until(conn)
            if mark is None:
                first = conn.execute(select(func.min(JOBS.c.finished_at))).scalar()
                mark = _floor(first, MINUTE) if first is not None else target
                conn.execute(insert(MARK), [{"id": 1, "rolled_until": mark}])
            if mark >= target:
                return rolled
            stop, rows = _next_chunk(conn, mark, target)
            _write(conn, rows)
            moved = conn.execute(
                update(MARK).where(MARK.c.id == 1, MARK.c.rolled_until == mark).values(rolled_until=stop)
            ).rowcount
            if moved != 1:
                conn.rollback()
                return rolled
            rolled += len(rows)
    return rolled


def _next_chunk(conn: Connection, mark: datetime, target: datetime) -> tuple[datetime, Sequence[Any]]:
    """The jobs of the next step and where it ends: up to ROLL_CHUNK jobs, cut before the finish time of
    the last one read (the jobs finished at that instant go to the next step, whole)."""
    rows = _finished_rows(conn, mark, target, limit=ROLL_CHUNK)
    if len(rows) < ROLL_CHUNK:
        return target, rows
    stop = rows[-1].finished_at
    if stop == mark:  # a whole chunk finished at one instant: that instant alone, however many
        stop = mark + timedelta(microseconds=1)
        return stop, _finished_rows(conn, mark, stop)
    return stop, [row for row in rows if row.finished_at < stop]


def _write(conn: Connection, rows: Iterable[Any]) -> None:
    periods: dict[tuple[datetime, GroupKey], Group] = {}
    totals: dict[tuple[str, str, str, str], Total] = {}
    for row in rows:
        key = _key(row)
        periods.setdefault((_floor(row.finished_at, MINUTE), key), Group()).add_job(row)
        totals.setdefault((key.model, key.backend, key.status, key.error_code), Total()).add_job(row)
    if periods:
        conn.execute(
            insert(ROLLUPS), [_rollup_row(start, MINUTE, key, g) for (start, key), g in periods.items()]
        )
    for (model, backend, status, error_code), total in totals.items():
        where = (
            TOTALS.c.model == model,
            TOTALS.c.backend == backend,
            TOTALS.c.status == status,
            TOTALS.c.error_code == error_code,
        )
        found = conn.execute(select(TOTALS.c.jobs, TOTALS.c.timings).where(*where)).first()
        if found is None:
            names = dict(model=model, backend=backend, status=status, error_code=error_code)
            conn.execute(insert(TOTALS), [dict(names, jobs=total.jobs, timings=total.timings)])
        else:
            merged = Total(found.jobs, found.timings)
            merged.merge(total)
            conn.execute(update(TOTALS).where(*where).values(jobs=merged.jobs, timings=merged.timings))


def _rollup_row(start: datetime, period_s: int, key: GroupKey, group: Group) -> dict[str, Any]:
    return dict(
        period_start=start,
        period_s=period_s,
        **key._asdict(),
        jobs=group.jobs,
        timings={column: t.to_json() for column, t in group.timings.items()},
    )


def reset(db: Database) -> None:
    """Forget every rollup and total (the next roll-up counts every finished job again)."""
    with db.engine.begin() as conn:
        for table in KEPT:
            conn.execute(delete(table))


def compact(db: Database, now: datetime | None = None, max_periods: int = 48) -> int:
    """Merge the rollups of each grain older than the next grain's horizon (GRAINS) into one row per period
    of that grain and group, a period per transaction; returns how many periods."""
    now = now or utcnow()
    done = 0
    for (fine, _), (coarse, horizon) in zip(GRAINS, GRAINS[1:], strict=False):
        before = _floor(now - horizon, coarse)
        while done < max_periods:
            with db.engine.begin() as conn:
                first = conn.execute(
                    select(func.min(ROLLUPS.c.period_start)).where(
                        ROLLUPS.c.period_s == fine, ROLLUPS.c.period_start < before
                    )
                ).scalar()
                if first is None:
                    break
                start = _floor(first, coarse)
                span = (ROLLUPS.c.period_s == fine, ROLLUPS.c.period_start >= start,
                        ROLLUPS.c.period_start < start + timedelta(seconds=coarse))  # fmt: skip
                merged: dict[GroupKey, Group] = {}
                rows = conn.execute(select(ROLLUPS).where(*span)).all()
                for row in rows:
                    merged.setdefault(_key(row), Group()).merge_stored(row.jobs, row.timings)
                if conn.execute(delete(ROLLUPS).where(*span)).rowcount != len(rows):
                    conn.rollback()  # another keeper merged (some of) them meanwhile
                    return done
                conn.execute(
                    insert(ROLLUPS), [_rollup_row(start, coarse, key, g) for key, g in merged.items()]
                )
            done += 1
    return done


# --- reading ------------------------------------------------------------------------------------------


def finished_in(
    db: Database,
    since: datetime,
    owner_id: int | None = None,
    timings: bool = True,
    histograms: Collection[str] | None = None,
) -> Finished:
    """The jobs finished since `since` (one owner's, or every owner's for None): the rollups (as this
    process last read them: irq/store/rollup_cache.py) whose period starts at or after `since` rounded down
    to their grain (GRAINS: a minute in the last two hours, an hour in the last two days, a day before),
    then the jobs after the mark. Without `timings`, only counts (a timeline needs no more); with
    `histograms`, only those columns' histograms (the others' counts and sums)."""
    groups: dict[GroupKey, Group] = {}
    periods: list[tuple[datetime, int, str, int]] = []
    starts = {grain: _floor(since, grain) for grain, _ in GRAINS}
    with db.engine.connect() as conn:
        mark = rolled_until(conn)
        for row in rollup_rows(db).read(conn) if mark is not None else ():
            if row.period_start < starts[row.period_s] or owner_id not in (None, row.owner_id):
                continue
            stored = row.timings if timings else {}
            groups.setdefault(_key(row), Group()).merge_stored(row.jobs, stored, histograms)
            periods.append((row.period_start, row.period_s, row.status, row.jobs))
        tail_from = max(since, mark) if mark is not None else since
        for row in _finished_rows(conn, tail_from, None, owner_id, limit=TAIL_LIMIT):
            groups.setdefault(_key(row), Group()).add_job(row)
            periods.append((row.finished_at, 0, row.status, 1))
    return Finished(groups, periods)


def totals(db: Database) -> dict[tuple[str, str, str, str], Total]:
    """Per (model, backend, status, error code), every job that ever finished: the totals, then the jobs
    after the mark."""
    out: dict[tuple[str, str, str, str], Total] = {}
    with db.engine.connect() as conn:
        mark = rolled_until(conn)
        for row in conn.execute(select(TOTALS)) if mark is not None else ():
            out[(row.model, row.backend, row.status, row.error_code)] = Total(row.jobs, row.timings)
        tail_from = mark or datetime.min.replace(tzinfo=UTC)
        for row in _finished_rows(conn, tail_from, None, limit=TAIL_LIMIT):
            key = _key(row)
            out.setdefault((key.model, key.backend, key.status, key.error_code), Total()).add_job(row)
    return out
