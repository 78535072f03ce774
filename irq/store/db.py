"""Engine and session factory for the store, created once per process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, Table, create_engine, event, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

# What a store that is down, refusing, frozen or out of pooled connections raises: worth another try (the
# workers), or a 503 (the API).
STORE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


def make_engine(
    url: str, pool_size: int = 10, wait_s: float = 30.0, statement_timeout_s: float | None = None
) -> Engine:
    """The engine; its pool holds `pool_size` connections (and 20 more at a peak), and a checkout waits at
    most `wait_s` for one (PostgreSQL: opening a new one too); on PostgreSQL a statement runs at most
    `statement_timeout_s` (None: no limit)."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
            pool_timeout=wait_s,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    limit = (
        {"options": f"-c statement_timeout={round(statement_timeout_s * 1000)}"}
        if statement_timeout_s
        else {}
    )
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=20,
        pool_timeout=wait_s,
        connect_args={"connect_timeout": max(1, round(wait_s)), **limit},
    )


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the API read while a worker writes; busy_timeout makes writers wait instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # With WAL, NORMAL syncs at checkpoints, not at every commit: a crash of the process loses nothing;
    # a power cut may lose the last commits. PostgreSQL is the store for deployments that need more.
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """One engine and session factory for a process; `session()` is a unit of work that commits on success."""

    def __init__(
        self, url: str, pool_size: int = 10, wait_s: float = 30.0, statement_timeout_s: float | None = None
    ) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size, wait_s, statement_timeout_s)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def vacuum(self, tables: tuple[Table, ...]) -> None:
        """On PostgreSQL, VACUUM (ANALYZE) the tables: the rows their updates and deletes left dead are
        reclaimed, which autovacuum may be late to do for a small table written every few seconds, or off;
        SQLite reuses its free pages itself."""
        if self.url.startswith("sqlite"):
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM (ANALYZE) {', '.join(t.name for t in tables)}"))

    def dispose(self) -> None:
        self.engine.dispose()
