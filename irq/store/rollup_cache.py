"""The rollup rows a process has read, kept for its next reads (`rollups.finished_in`).

The rollups of the past change rarely: the records keeper adds the minutes it rolls up, and once an hour
merges two-hour-old minutes into their hour (once a day, hours into their day). Fetching and decoding every
row's histograms at every read was half of what a 30-day `/v1/stats` cost in its read process (at 10M jobs,
0.68 s of CPU a read before, 0.33 s with the rows kept: docs/bench-results/NOTEBOOK.md). So each read first
asks the table how many rows it holds and its highest id; the rows added since the last read are fetched by
id, and when the count then differs from the rows kept (rows were merged or deleted, or one was committed
after a higher id), every row is fetched again.

Each `Database` has its own cache, kept for the life of its process: the read processes
(irq/store/read_process.py) hold one for as long as their API runs.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, Row, Table, func, select

from irq.store.db import Database
from irq.store.models import JobRollup

ROLLUPS = cast(Table, JobRollup.__table__)


class RollupRows:
    """Every row of `job_rollups` as last read, by id."""

    def __init__(self) -> None:
        self._rows: dict[int, Row[Any]] = {}
        self._top = 0  # the highest id read
        self._lock = threading.Lock()

    def read(self, conn: Connection) -> Sequence[Row[Any]]:
        with self._lock:
            # From the primary key's index alone (a heap that compactions left large is not read)
            count, top = conn.execute(select(func.count(), func.max(ROLLUPS.c.id))).one()
            top = int(top or 0)
            if top < self._top:  # ids begun again (SQLite, after every row was deleted)
                self._clear()
            self._add(conn, ROLLUPS.c.id > self._top, ROLLUPS.c.id <= top)
            self._top = top
            if len(self._rows) != count:
                self._clear()  # some were merged, deleted or committed late: all again
                self._add(conn, ROLLUPS.c.id <= top)
                self._top = top
            return list(self._rows.values())

    def _clear(self) -> None:
        self._rows, self._top = {}, 0

    def _add(self, conn: Connection, *where: Any) -> None:
        for row in conn.execute(select(ROLLUPS).where(*where)):
            self._rows[row.id] = row


_CACHES: weakref.WeakKeyDictionary[Database, RollupRows] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def rollup_rows(db: Database) -> RollupRows:
    with _CACHES_LOCK:
        cache = _CACHES.get(db)
        if cache is None:
            cache = _CACHES[db] = RollupRows()
        return cache
